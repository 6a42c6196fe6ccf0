"""The package graph, checked: ``python -m tests.tools.layers`` prints which package imports
which and exits 1 on an upward import or an import cycle (it runs in CI through
``tests/test_layers.py``).

The rules are the ones ``docs/architecture.md`` states:

- layers: ``everest_app`` at the bottom imports none of ours; ``everest_local`` and
  ``orchestrator`` import only ``everest_app``; ``launcher`` imports those two;
  ``agent_scripts`` travels alone and imports none of ours;
- ``launcher.relay`` is a service of its own: it imports nothing of ``launcher`` outside it;
- no cycle between modules, counting imports inside functions too (a lazy import hides a
  cycle from Python, not from a reader); imports under ``if TYPE_CHECKING:`` do not count.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("everest_app", "everest_local", "launcher", "orchestrator", "agent_scripts")
ALLOWED: dict[str, frozenset[str]] = {
    "everest_app": frozenset(),
    "agent_scripts": frozenset(),
    "everest_local": frozenset({"everest_app"}),
    "orchestrator": frozenset({"everest_app"}),
    "launcher": frozenset({"everest_app", "everest_local"}),
}
APPLICATIONS = ROOT / "everest_app" / "apps"
SELF_CONTAINED = ("launcher.relay",)
"""Subpackages that import nothing of their parent package outside themselves."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if APPLICATIONS in path.parents:  # application files run as tasks, not modules
                continue
            found[module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[tuple[str, int, tuple[str, ...]]]:
    """(module, level, names) of every import statement outside ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, tuple(a.name for a in node.names)
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    agent = name.startswith("agent_scripts")
    found = set()
    for module, level, names in _imports(ast.parse(path.read_text("utf-8"), str(path))):
        if level:
            base = package.split(".")
            base = base[:len(base) - level + 1]
            module = ".".join(base + ([module] if module else []))
        elif agent and f"agent_scripts.{module}" in known:
            module = f"agent_scripts.{module}"  # the runner's files import each other bare
        submodules = {f"{module}.{n}" for n in names} & known.keys()
        found |= submodules or ({module} & known.keys())
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layer rule, as a sentence."""
    found = []
    for source, targets in sorted(edges.items()):
        top = source.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                found.append(f"{source} imports {target}: {top} may import only "
                             f"{', '.join(sorted(ALLOWED[top])) or 'nothing of ours'}")
            for inner in SELF_CONTAINED:
                parent = inner.rpartition(".")[0]
                if (source == inner or source.startswith(inner + ".")) and \
                        target.startswith(parent + ".") and not (
                        target == inner or target.startswith(inner + ".")):
                    found.append(f"{source} imports {target}: {inner} imports nothing of "
                                 f"{parent} outside itself")
    return found


def package_of(module: str) -> str:
    """The package a module belongs to, one level below the top for ``launcher`` and
    ``everest_local`` (their subpackages are deployed and read as units)."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts)
    if path.is_dir():
        return module
    return ".".join(parts[:-1]) or module


def main() -> int:
    edges = graph()
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            a, b = package_of(source), package_of(target)
            if a != b:
                packages[a].add(b)
    for package in sorted({package_of(m) for m in edges}):
        print(f"{package:28} -> {', '.join(sorted(packages[package])) or '(nothing of ours)'}")
    problems = violations(edges) + [
        "import cycle: " + " <-> ".join(component) for component in cycles(edges)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
