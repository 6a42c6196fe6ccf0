"""The session runner as a real process with a real JupyterLab, tunnelled through a real
relay: code runs in a kernel over its WebSocket through the tunnel, the notebook wants its
token, a cut SSH connection and a relay restart heal themselves, and every way of stopping
(interrupt, time limit, idle timeout) takes JupyterLab and its kernels down.

One JupyterLab serves the module's first tests (it is slow to start); the runner's SSH goes
through a TCP proxy the tests can cut.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.harness.relay import RelayProcess
from tests.harness.runner import start_runner, stop_process_group
from tests.harness.server import ServerProcess
from tests.session.helpers import (
    Api,
    TcpProxy,
    kill_under,
    listening_addresses,
    pids_with_cwd_under,
    run_in_kernel,
    split_url,
    wait_for,
)

EVEREST_FOR_KERNELS = "http://everest.example.org:8443"


@dataclass
class Live:
    relay: RelayProcess
    proxy: TcpProxy
    api: Api
    session_id: str
    url: str
    base: str
    token: str
    workdir: Path
    proc: subprocess.Popen

    def status(self, timeout: float = 10) -> int:
        return requests.get(self.base + "api/status", timeout=timeout,
                            headers={"Authorization": f"token {self.token}"}).status_code


def _git_repo(folder: Path) -> str:
    folder.mkdir()
    (folder / "hello.py").write_text("print('hello from the repository')\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "."],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"]):
        subprocess.run(cmd, cwd=folder, check=True)
    return folder.as_uri()


@pytest.fixture(scope="module")
def relay(real_components: None,
          local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RelayProcess, TcpProxy]]:
    """A relay that tells runners to dial its SSH port through a proxy we can cut."""
    proc = RelayProcess(tmp_path_factory.mktemp("relay") / "state", local_server.url)
    proxy = TcpProxy()  # its own port first; it forwards to the SSH port the relay binds
    proc.extra += ["--ssh-advertise", f"127.0.0.1:{proxy.port}"]
    try:
        proc.start()
        proxy.target_port = proc.ssh_port
        yield proc, proxy
    finally:
        proxy.close()
        proc.stop()


@pytest.fixture
def alice(relay, local_server: ServerProcess) -> Api:
    return Api(relay[0].url, local_server.token_for("alice"))


@pytest.fixture(scope="module")
def live(relay, local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    relay_proc, proxy = relay
    api = Api(relay_proc.url, local_server.token_for("alice"))
    root = tmp_path_factory.mktemp("live")
    repo = _git_repo(root / "demo-repo")
    session = api.new_session()
    workdir = root / "task"
    proc = start_runner(workdir, relay_proc.url, session["ticket"], "--time-limit", "900",
                        "--idle-timeout", "0", "--repository", repo,
                        "--everest-url", EVEREST_FOR_KERNELS)
    try:
        ready = api.wait_state(session["id"], "ready", timeout=120)
        base, token = split_url(ready["url"])
        yield Live(relay_proc, proxy, api, session["id"], ready["url"], base, token, workdir,
                   proc)
    finally:
        stop_process_group(proc)
        kill_under(workdir)


def test_a_kernel_runs_code_through_the_tunnel(live: Live) -> None:
    # served on the relay's one port, under the session's path
    assert live.url.startswith(f"{live.relay.url}/session/{live.session_id}/lab?token=")
    code = "import os; print(6*7); print(os.environ.get('EVEREST_URL'))"
    assert run_in_kernel(live.base, live.token, code) == f"42\n{EVEREST_FOR_KERNELS}\n"


def test_the_notebook_wants_its_token(live: Live) -> None:
    assert requests.get(live.base + "api/contents", timeout=10).status_code == 403
    wrong = {"Authorization": "token " + "x" * 43}
    assert requests.get(live.base + "api/contents", headers=wrong, timeout=10).status_code \
        == 403
    assert live.status() == 200
    # the notebook itself listens on loopback only, behind the tunnel
    log = (live.workdir / "session.log").read_text()
    port = int(re.search(r"starting JupyterLab on 127\.0\.0\.1:(\d+)/", log).group(1))
    assert listening_addresses(port) == {"127.0.0.1"}


def test_the_repository_is_cloned_into_the_notebook_folder(live: Live) -> None:
    resp = requests.get(live.base + "api/contents/demo-repo", timeout=10,
                        headers={"Authorization": f"token {live.token}"})
    assert resp.status_code == 200
    assert [c["name"] for c in resp.json()["content"]] == ["hello.py"]


def test_the_same_url_works_again_after_the_ssh_connection_is_cut(live: Live) -> None:
    assert live.proxy.cut() >= 1
    # a request during the reconnect waits for the tunnel (the relay holds it)
    wait_for(lambda: live.status() == 200, timeout=5, what="the URL to work again")
    live.api.wait_state(live.session_id, "ready", timeout=10)
    assert run_in_kernel(live.base, live.token, "print(6*7)") == "42\n"


def test_the_session_survives_a_relay_restart(live: Live) -> None:
    live.relay.stop()
    live.relay.start()
    live.api.wait_state(live.session_id, "ready", timeout=60)
    assert live.status() == 200


def test_an_interrupt_stops_jupyterlab_and_its_kernels(live: Live) -> None:
    auth = {"Authorization": f"token {live.token}"}
    kernel = requests.post(live.base + "api/kernels", json={"name": "python3"}, headers=auth,
                           timeout=30).json()
    wait_for(lambda: len(pids_with_cwd_under(live.workdir / "notebooks")) >= 2,
             what="JupyterLab and the kernel")
    assert kernel["id"]
    live.proc.send_signal(signal.SIGINT)  # what Everest does first when a job is cancelled
    assert live.proc.wait(60) == 0
    assert pids_with_cwd_under(live.workdir / "notebooks") == []
    summary = json.loads((live.workdir / "summary.json").read_text())
    assert summary["reason"].startswith("interrupted")
    assert summary["notebook"]["exit_code"] == 0
    assert summary["tunnel"]["disconnects"] >= 1  # the cut and the relay restart
    # OpenSSH's client where the machine has one, else asyncssh
    assert summary["tunnel"]["kind"] == ("openssh" if shutil.which("ssh") else "asyncssh")
    assert summary["session_id"] == live.session_id
    assert "JupyterLab stopped" in (live.workdir / "session.log").read_text()
    assert live.api.session(live.session_id)["state"] == "ended"  # the runner said goodbye


def test_time_limit_and_idle_timeout_end_sessions(relay, alice: Api, tmp_path: Path) -> None:
    relay_proc, _ = relay
    runs = {}
    for name, args in (("time", ["--time-limit", "4", "--idle-timeout", "0"]),
                       ("idle", ["--time-limit", "900", "--idle-timeout", "3"])):
        session = alice.new_session()
        runs[name] = (session["id"], tmp_path / name,
                      start_runner(tmp_path / name, relay_proc.url, session["ticket"], *args))
    try:
        for name, (sid, workdir, proc) in runs.items():
            assert proc.wait(120) == 0, (workdir / "runner.out").read_text()
            summary = json.loads((workdir / "summary.json").read_text())
            expected = "time limit of 4 s" if name == "time" else "idle for"
            assert summary["reason"].startswith(expected), summary
            assert pids_with_cwd_under(workdir) == []
            assert alice.session(sid)["state"] == "ended"
    finally:
        for _, workdir, proc in runs.values():
            stop_process_group(proc)
            kill_under(workdir)


def test_the_asyncssh_tunnel_heals_too(relay, alice: Api, tmp_path: Path) -> None:
    """Where the resource has no usable ``ssh`` client the runner tunnels with asyncssh."""
    relay_proc, proxy = relay
    session = alice.new_session()
    proc = start_runner(tmp_path, relay_proc.url, session["ticket"], "--tunnel=asyncssh",
                        "--idle-timeout", "0")
    try:
        base, token = split_url(alice.wait_state(session["id"], "ready", timeout=120)["url"])
        auth = {"Authorization": f"token {token}"}

        def works() -> bool:
            return requests.get(base + "api/status", headers=auth, timeout=10).ok

        assert works()
        assert proxy.cut() >= 1
        wait_for(works, timeout=5, what="the URL to work again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["tunnel"]["kind"] == "asyncssh"
        assert summary["tunnel"]["disconnects"] >= 1
        assert alice.session(session["id"])["state"] == "ended"
    finally:
        stop_process_group(proc)
        kill_under(tmp_path)


@pytest.mark.parametrize("told", ["right", "wrong"])
def test_jupyterlab_starts_before_the_redeem_under_the_path_it_was_told(
        relay, alice: Api, tmp_path: Path, told: str) -> None:
    """With ``--base-url`` (the launcher passes the session's path with its ticket) the runner
    starts JupyterLab before redeeming the ticket; the relay's grant decides, so a wrong
    path costs a second start, never a session served at the wrong place."""
    relay_proc, _ = relay
    session = alice.new_session()
    base_url = session["base_url"] if told == "right" else "/session/somewhere-else/"
    proc = start_runner(tmp_path, relay_proc.url, session["ticket"], "--base-url", base_url,
                        "--idle-timeout", "0")
    try:
        base, token = split_url(alice.wait_state(session["id"], "ready", timeout=120)["url"])
        assert base.endswith(session["base_url"])
        assert requests.get(base + "api/status", timeout=10,
                            headers={"Authorization": f"token {token}"}).ok
        log = (tmp_path / "session.log").read_text()
        started = [line for line in log.splitlines() if "starting JupyterLab on" in line]
        assert "starting JupyterLab on 127.0.0.1:" in log.split("enrolled at")[0]
        if told == "right":
            assert len(started) == 1 and started[0].endswith(session["base_url"])
        else:
            assert "starting JupyterLab again" in log
            assert len(started) == 2 and started[1].endswith(session["base_url"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        stop_process_group(proc)
        kill_under(tmp_path)


def test_a_notebook_stopped_while_it_boots_is_terminated_without_waiting(
        real_components: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """JupyterLab boots while the workspace is restored: a restore that fails (or a stop
    that comes then) stops a server that does not answer yet — SIGTERM at once, not after
    waiting out the grace for a shutdown nobody could ask for."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent_scripts"))
    import runner_notebook

    root = tmp_path / "notebooks"
    root.mkdir()
    nb = runner_notebook.Notebook("/session/booting/", "t" * 32, str(root),
                                  str(tmp_path / "jupyterlab.log"))
    nb.start()
    with caplog.at_level("INFO", logger="session_runner.notebook"):
        code = nb.stop(grace=30.0)
    assert code is not None and nb.exited() is not None
    assert not any("still running after" in r.getMessage() for r in caplog.records), \
        caplog.text
