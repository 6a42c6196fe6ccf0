"""Test isolation shared by the whole suite.

Every test session gets its own HOME and JUPYTER_*/XDG_* folders, so nothing a test writes
reaches the developer's real configuration and nothing leaks between runs. Everest
variables from the developer's shell are cleared so tests never talk to a real server.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.local_server", "tests.fixtures.browser",
                  "tests.fixtures.docker_engine", "tests.fixtures.task_user",
                  "tests.fixtures.sshd", "tests.fixtures.slurm",
                  "tests.fixtures.cli_home", "tests.fixtures.relay"]

_ISOLATED_DIRS = {
    "HOME": "home",
    "XDG_CONFIG_HOME": "home/.config",
    "XDG_DATA_HOME": "home/.local/share",
    "XDG_CACHE_HOME": "home/.cache",
    "XDG_RUNTIME_DIR": "runtime",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "IPYTHONDIR": "ipython",
}
_CLEARED = ("EVEREST_URL", "EVEREST_TOKEN", "EVEREST_TASK_TOKEN", "EVEREST_PROFILE")


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory):
    """Point HOME and the Jupyter/XDG folders at a fresh temporary tree for the session."""
    root = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    for var, rel in _ISOLATED_DIRS.items():
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    for var in _CLEARED:
        os.environ.pop(var, None)
    if os.geteuid() == 0:  # an embedded server's tasks run as another account: let it pass
        from tests.fixtures.task_accounts import ensure_passable

        ensure_passable(Path(os.environ["XDG_DATA_HOME"]) / "x")
    yield root
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session", autouse=True)
def task_accounts() -> None:
    """The OS accounts a root server runs tasks as (see tests/fixtures/task_accounts.py)."""
    from tests.fixtures.task_accounts import ensure_task_accounts

    ensure_task_accounts()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME (and XDG config/data dirs) for one test."""
    home = tmp_path / "home"
    for var, rel in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"),
                     ("XDG_DATA_HOME", ".local/share"), ("XDG_CACHE_HOME", ".cache")):
        path = home / rel
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(path))
    return home


@pytest.fixture(scope="session")
def real_components() -> None:
    """Requested by every fixture (or test) that starts a real server or engine — the local
    server, the relay, a runner, JupyterLab, Chromium, JupyterHub, dockerd, sshd, Slurm —
    directly or through another fixture: that is what makes a test end-to-end (marked
    ``e2e``; ``pytest -m "not e2e"`` runs the fast rest). The harness refuses to start a
    process in a test that does not request it (:func:`tests.harness.processes.starting`)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "real_components" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests.harness import processes

    processes.current_test = item
