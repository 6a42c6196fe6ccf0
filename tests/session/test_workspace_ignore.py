"""``.everestignore`` as the runner reads it (gitignore syntax) and the scan it drives."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent_scripts"))

from runner_workspace import DEFAULT_IGNORE, IgnoreRules, scan  # noqa: E402


@pytest.mark.parametrize(("rel", "is_dir", "ignored"), [
    (".ipynb_checkpoints", True, True),
    ("sub/.ipynb_checkpoints", True, True),
    ("__pycache__", True, True),
    ("a/b/__pycache__", True, True),
    (".venv", True, True),
    (".venv", False, False),  # a file named .venv is not the folder
    ("analysis.ipynb", False, False),
    ("venv", True, False),
])
def test_the_default_rules(rel: str, is_dir: bool, ignored: bool) -> None:
    assert IgnoreRules(DEFAULT_IGNORE).ignored(rel, is_dir) is ignored


def test_gitignore_syntax() -> None:
    rules = IgnoreRules(["# a comment", "*.tmp", "!keep.tmp", "/build/", "data/**/*.csv",
                         "logs/", "x?.bin", "[ab].txt", ""])
    cases = {("a.tmp", False): True, ("d/e.tmp", False): True, ("keep.tmp", False): False,
             ("build", True): True, ("src/build", True): False,
             ("data/2024/jan/x.csv", False): True, ("data/x.csv", False): True,
             ("other/x.csv", False): False, ("logs", True): True, ("logs", False): False,
             ("x1.bin", False): True, ("x12.bin", False): False, ("a.txt", False): True,
             ("c.txt", False): False, ("# a comment", False): False}
    for (rel, is_dir), expected in cases.items():
        assert rules.ignored(rel, is_dir) is expected, rel


def test_the_scan_leaves_out_ignored_folders_and_follows_no_link(tmp_path: Path) -> None:
    (tmp_path / ".everestignore").write_text("*.log\nbig/\n")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "x").write_text("x")
    (tmp_path / "__pycache__").mkdir()  # the file replaces the defaults
    (tmp_path / "__pycache__" / "m.pyc").write_text("x")
    (tmp_path / "run.log").write_text("x")
    (tmp_path / "nb.ipynb").write_text("{}")
    os.symlink("/etc", tmp_path / "etc")
    found = scan(str(tmp_path), IgnoreRules.for_folder(str(tmp_path)))
    assert set(found) == {".everestignore", "__pycache__", "__pycache__/m.pyc", "nb.ipynb",
                          "etc"}
    assert found["etc"] == ("l", "/etc")
    assert found["nb.ipynb"][:2] == ("f", 2)
