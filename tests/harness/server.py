"""The local server as a real process, for tests and benchmarks alike.

:class:`ServerProcess` is one server over one data directory, on a port it binds itself (0,
read back from its ``server.json``; a restart keeps it), with users made before it starts. It
has ``.url``, ``.data_dir``, ``.token`` (alice's), ``.token_for(name)``,
``.password_for(name)``, ``.client(user="alice") -> EverestClient``, ``.log_text()``,
``.kill9()``, ``.restart()``, ``.stop()`` and ``.close()`` (which also kills task processes
left behind, so nothing outlives a test run). Options: ``apps`` (paths), ``slots``,
``service_slots``, ``kill_grace``, ``max_attempts``, ``users`` (names), ``extra_args`` (CLI
arguments), ``env`` (dict), ``python`` (the interpreter, and so the tasks' ``python3``).

The pytest fixtures over it are in ``tests/fixtures/local_server.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from everest_app.client import EverestClient
from everest_app.job import Job
from tests.fixtures.waiting import wait_for
from tests.harness.processes import REPO, starting

TEMPLET_ZIP = REPO / "tests" / "data" / "templet-parsweep.zip"  # the real Everest export
DEFAULT_USERS = ("alice", "bob")


def password_for(name: str) -> str:
    """The password the fixtures give user ``name``."""
    return f"{name}-password-123"


class ServerProcess:
    """A local server process over one data directory (see the module docstring)."""

    def __init__(self, data_dir: Path, *, apps: list[str | Path] = (), slots: int = 4,
                 service_slots: int = 8, kill_grace: float = 1.0, max_attempts: int = 3,
                 users: tuple[str, ...] = DEFAULT_USERS, extra_args: list[str] = (),
                 env: dict[str, str] | None = None, python: str = sys.executable):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # tasks run as another account: let it pass to <data>/tasks
            from tests.fixtures.task_accounts import ensure_passable

            ensure_passable(self.data_dir)
        self.port = 0
        self.url = ""
        self.users = tuple(users)
        self._options = ["--slots", str(slots), "--service-slots", str(service_slots),
                         "--kill-grace", str(kill_grace), "--max-attempts", str(max_attempts),
                         *(["--apps", *map(str, apps)] if apps else []), *extra_args]
        self._env = env or {}
        self.python = python  # runs the server, and so the tasks' python3
        self.prefix: list[str] = []  # runs the server under it, e.g. prlimit's limits
        self._tokens: dict[str, str] = {}
        self._clients: list[EverestClient] = []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        from everest_local.auth import add_user

        for name in self.users:
            add_user(self.data_dir, name, password_for(name))

    # -- process control ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the process and wait until it answers; raises with its log if it fails."""
        starting("the local server")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p), **self._env}
        cmd = [*self.prefix, self.python, "-m", "everest_local", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), *self._options]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, cwd=REPO)
        log.close()
        try:
            wait_for(self._answers, timeout, "the local server")
        except AssertionError:
            raise RuntimeError(f"local server did not come up in {timeout} s:\n"
                               f"{self.log_text()}") from None
        return self

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"local server exited with {self.proc.returncode}:\n"
                               f"{self.log_text()}")
        info = _read_json(self.data_dir / "server.json")
        if not info or info.get("pid") != self.proc.pid:
            return False
        self.url = info["url"]
        self.port = int(self.url.rsplit(":", 1)[1])
        try:
            return requests.get(self.url + "/_local/stats", timeout=2).ok
        except requests.RequestException:
            return False

    def kill9(self) -> None:
        """SIGKILL the server process only (its tasks live on in their own sessions)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout: float = 30.0) -> ServerProcess:
        """Start again on the same data directory and port (after kill9 or stop)."""
        if self.proc and self.proc.poll() is None:
            self.stop()
        return self.start(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (a clean stop); returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def close(self) -> None:
        """Stop the server, then kill any task process still running in its data dir."""
        for c in self._clients:
            c.close()
        self.stop()
        kill_tasks_under(self.data_dir)

    # -- users -------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self.token_for("alice")

    def password_for(self, name: str) -> str:
        return password_for(name)

    def token_for(self, name: str) -> str:
        """A token of user ``name`` (logged in once, then reused)."""
        if name not in self._tokens:
            self._tokens[name] = EverestClient.login(self.url, name, password_for(name),
                                                     label="tests")
        return self._tokens[name]

    def client(self, user: str = "alice", **kwargs: Any) -> EverestClient:
        """An EverestClient for ``user`` against this server."""
        client = EverestClient(self.url, self.token_for(user), **kwargs)
        self._clients.append(client)
        return client

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""


def start_server(data_dir: str | Path, **opts: Any) -> ServerProcess:
    """Create users, start a server process on ``data_dir`` and wait for it."""
    return ServerProcess(Path(data_dir), **opts).start()


def kill_tasks_under(folder: Path) -> int:
    """SIGKILL the process groups of processes whose working dir is inside ``folder``."""
    root = str(folder.resolve()) + os.sep
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (cwd + os.sep).startswith(root):
            try:
                os.killpg(os.getpgid(int(entry.name)), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def wait_for_state(client: EverestClient, job_id: str, state: str,
                   timeout: float = 30.0) -> Job:
    """Wait until the job is in ``state`` and return it; fail the test if it ends in another
    state or ``timeout`` seconds pass first."""
    def reached() -> Job | None:
        job = client.job(job_id)
        assert job.state.value == state or not job.is_done, job
        return job if job.state.value == state else None

    return wait_for(reached, timeout, f"job {job_id} to be {state}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
