"""The package graph follows docs/architecture.md: no upward import, no cycle
(``python -m tests.tools.layers`` is the same check, printed)."""

from __future__ import annotations

import subprocess
import sys

from tests.tools import layers


def test_the_tree_has_no_upward_import_and_no_cycle() -> None:
    edges = layers.graph()
    assert "launcher.relay.service" in edges and "everest_local.executor" in edges
    assert layers.violations(edges) == []
    assert layers.cycles(edges) == []


def test_a_cycle_is_found_whatever_its_length() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert layers.cycles(edges) == [["a", "b", "c"]]


def test_an_upward_import_and_a_relay_import_of_the_cli_are_named() -> None:
    edges = {"everest_app.client": {"launcher.launch"},
             "launcher.relay.api": {"launcher.cli.root", "launcher.relay.store"},
             "launcher.cli.root": {"launcher.relay.api"}}
    problems = layers.violations(edges)
    assert len(problems) == 2
    assert problems[0].startswith("everest_app.client imports launcher.launch")
    assert "launcher.relay imports nothing of launcher outside itself" in problems[1]


def test_the_command_prints_the_graph_and_fails_on_a_problem(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "tests.tools.layers"], capture_output=True,
                          text=True, cwd=layers.ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "launcher.relay               -> everest_app" in done.stdout
    assert "0 problem(s)" in done.stdout


def test_imports_inside_functions_count_and_type_checking_ones_do_not(tmp_path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from launcher import cli\n"
                      "def f():\n    from launcher.relay import store\n")
    known = {"launcher.cli": module, "launcher.relay.store": module, "launcher.relay": module}
    assert layers.imports_of("launcher.x", module, known) == {"launcher.relay.store"}
