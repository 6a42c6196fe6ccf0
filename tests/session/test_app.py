"""The ``jupyter-session`` application as shipped: its description matches what the runner
reads, ``app export`` writes a zip with the runner inside, and the runner in that zip runs
alone — it imports nothing of this project, only the standard library and asyncssh (with
its dependency cryptography)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from everest_app import descriptor
from everest_app.apps import APPS_DIR
from tests.harness.processes import REPO, child_env, cli_command

sys.path.insert(0, str(REPO / "agent_scripts"))
import runner_inputs  # noqa: E402  (the runner's own module, as the task imports it)
import runner_packages  # noqa: E402

APP_DIR = APPS_DIR / "jupyter-session"
OUR_PACKAGES = {"everest_app", "everest_local", "launcher", "orchestrator", "tests"}


def test_every_input_is_mapped_to_the_file_the_runner_reads() -> None:
    app = descriptor.load(APP_DIR)
    # "image" is for the server (a docker resource's container image), not the runner; the
    # package files are staged where runner_packages looks for them
    staged = {"package_files": runner_packages.PACKAGE_DIR,
              "requirements": runner_packages.REQUIREMENTS_FILE}
    # "workspace" is the relay's (the session's grant names it)
    assert set(app.inputs) - {"image", "workspace"} == \
        set(runner_inputs.INPUT_FILES) | set(staged)
    mapped = {m["param"]: m["file"] for m in app.input_mappings}
    assert mapped == {**{name: spec[0] for name, spec in runner_inputs.INPUT_FILES.items()},
                      **staged}
    assert descriptor.file_kind(app.inputs["package_files"]) == "files"
    assert descriptor.file_kind(app.inputs["requirements"]) == "file"
    assert {m["param"]: m["file"] for m in app.output_mappings} == {
        "log": "session.log", "summary": "summary.json"}
    assert app.is_service
    assert app.inputs["ticket"]["filledByServer"] and app.inputs["relay"]["filledByServer"]
    # the defaults the form and the validator apply are ones the runner accepts
    defaults = {k: v["default"] for k, v in app.inputs.items() if "default" in v}
    assert runner_inputs.Settings({**defaults, "relay": "http://r", "ticket": "t",
                                   "bootstrap": defaults["bootstrap"] == "true"}, ".", ".")


def _optional_imports(tree: ast.AST) -> set[int]:
    """Ids of the import nodes inside a ``try`` that catches ImportError: accelerators the
    runner uses where they happen to be importable, with a standard-library fallback."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                               "ModuleNotFoundError")
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)
                         if isinstance(n, (ast.Import, ast.ImportFrom))}
    return optional


def test_the_runner_imports_nothing_of_this_project() -> None:
    scripts = sorted((REPO / "agent_scripts").glob("*.py"))
    siblings = {p.stem for p in scripts}
    stdlib = set(sys.stdlib_module_names)
    for path in scripts:
        tree = ast.parse(path.read_text(), str(path))
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                assert name not in OUR_PACKAGES, f"{path.name} imports {name}"
                if id(node) in optional:
                    continue  # used only where importable; the fallback is the stdlib's
                # cryptography: asyncssh's own dependency, present wherever asyncssh is
                assert name in stdlib | siblings | {"asyncssh", "cryptography", "__future__"}, \
                    f"{path.name} imports {name}, not stdlib/asyncssh"


def test_app_export_writes_a_zip_whose_runner_runs_alone(tmp_path: Path) -> None:
    out = tmp_path / "jupyter-session.zip"
    result = subprocess.run([*cli_command(), "--json", "app", "export", "jupyter-session",
                             "-o", str(out)], env=child_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    expected = {f"ApplicationFiles/{p.name}" for p in (REPO / "agent_scripts").glob("*.py")}
    assert expected <= names and "application.json" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert descriptor.load(out).to_dict() == descriptor.load(APP_DIR).to_dict()

    files = tmp_path / "unzipped" / "ApplicationFiles"
    # -I: no PYTHONPATH, no user site, no script-relative surprises beyond its own folder
    run = subprocess.run([sys.executable, "-I", "session_runner.py", "--relay=ftp://x",
                          "--ticket=t"], cwd=files, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2  # it started, read its inputs and refused the bad relay
    assert json.loads((files / "summary.json").read_text())["reason"] == "bad input"
