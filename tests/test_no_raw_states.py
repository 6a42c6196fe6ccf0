"""No job, task or session state is spelled as a string outside the modules of its enum.

The project's subtlest logic is in how states move; it reads as enum members (and the
transition table) everywhere, so a typo is an AttributeError, not a silent mismatch. Strings
that are dictionary keys (``summary["ended"]``, ``{"ready": ...}``) are not states.
Benchmarks and tests are left out: their comparison clients read raw JSON on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

from everest_app.states import JobState, TaskState
from launcher.relay.state import SessionState

ROOT = Path(__file__).resolve().parents[1]
ENUM_MODULES = {"everest_app/states.py", "launcher/relay/state.py"}
JOB_STATES = {s.value for s in JobState} | {s.value for s in TaskState}
SESSION_STATES = {s.value for s in SessionState}
# where each kind of state may appear at all
SCOPES = {
    "everest_app": JOB_STATES, "everest_local": JOB_STATES, "orchestrator": JOB_STATES,
    "launcher": JOB_STATES | SESSION_STATES, "agent_scripts": JOB_STATES,
}


def _keys(tree: ast.AST) -> set[int]:
    """ids of string constants used as dict keys or subscripts (names, not states)."""
    keys: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript):
            keys.add(id(node.slice))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("get", "pop"):
            if node.args:
                keys.add(id(node.args[0]))
    return keys


def _raw_states(path: Path, names: set[str], root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    keys = _keys(tree)
    return [f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in names and id(node) not in keys]


def test_no_raw_state_strings_outside_the_enum_modules() -> None:
    found = []
    for package, names in SCOPES.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() not in ENUM_MODULES:
                found += _raw_states(path, names)
    assert found == []


def test_the_check_finds_a_raw_state(tmp_path: Path) -> None:
    sample = tmp_path / "launcher" / "sample.py"  # never written into the checkout
    sample.parent.mkdir()
    sample.write_text('if state == "ready" or job["state"] == "DONE":\n    pass\n'
                      'summary = {"ended": 1}\n')
    found = _raw_states(sample, JOB_STATES | SESSION_STATES, root=tmp_path)
    assert [f.split(": ")[1] for f in found] == ["'ready'", "'DONE'"]
