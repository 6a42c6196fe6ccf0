"""The code shipped to resources: Python 3.8 syntax, none of our packages, its own ruff
settings (agent_scripts/ruff.toml, target py38)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent_scripts"
FILES = sorted(AGENT.glob("*.py"))
OUR_PACKAGES = {"everest_app", "everest_local", "launcher", "orchestrator", "agent_scripts"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_parses_as_python_3_8_and_imports_none_of_our_packages(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & OUR_PACKAGES


def test_the_check_refuses_newer_syntax() -> None:
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))


def test_agent_scripts_are_ruff_clean_for_python_3_8() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                          "--target-version", "py38", str(AGENT)], capture_output=True,
                         text=True, cwd=AGENT)
    assert out.returncode == 0, out.stdout + out.stderr
