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


# Fixtures that start real servers (the local server, the relay, JupyterLab through a launch,
# Chromium, dockerd, sshd, Slurm, JupyterHub): a test using any of them, directly or through
# another fixture, is an end-to-end test. `pytest -m "not e2e"` runs the fast rest.
E2E_FIXTURES = frozenset({
    "local_server", "start_local_server", "web_server", "server", "relay", "browser",
    "launched", "cli_user", "ssh_peer", "docker_engine", "docker_server", "sshd_server",
    "ssh_server", "slurm_cluster", "slurm_server", "two_resource_server", "stack",
    "session", "session_env", "fresh_env", "plugin_site", "task_user",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)

