"""``everest-jupyter launch`` end to end on the embedded default, as a user runs it: with no
Everest configured it starts the local server (and its relay) in the background under a
fresh data directory, submits ``jupyter-session``, and prints a URL that works — a kernel
runs code over its WebSocket through the tunnel, Chromium runs a notebook cell — until
Ctrl-C stops the session and its JupyterLab and kernels are gone."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect

from everest_app.client import EverestClient
from everest_local.app import server_running
from tests.fixtures.browser import run_a_cell
from tests.harness.processes import child_env, cli_command
from tests.harness.relay import RelayProcess
from tests.harness.server import ServerProcess, kill_tasks_under
from tests.session.helpers import (
    pids_with_cwd_under,
    run_in_kernel,
    split_url,
    tiny_wheel,
    wait_for,
)


@dataclass
class Launched:
    proc: subprocess.Popen
    out: dict
    data_dir: Path
    env: dict

    def cli(self, *args: str, timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*cli_command(), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=cwd)

    def client(self) -> EverestClient:
        server = json.loads((self.data_dir / "server" / "server.json").read_text())
        token = (self.data_dir / "embedded-token").read_text().strip()
        return EverestClient(server["url"], token)


@pytest.fixture(scope="module")
def launched(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """``everest-jupyter --json launch`` in a fresh HOME, left running (not detached)."""
    home = tmp_path_factory.mktemp("launch-home")
    env = child_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                    XDG_DATA_HOME=str(home / ".local/share"),
                    XDG_CACHE_HOME=str(home / ".cache"))
    data_dir = home / ".local/share/everest-jupyter"
    proc = subprocess.Popen([*cli_command(), "--json", "launch", "--time-limit", "900"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                        signal.SIG_DFL))
    try:
        lines = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, f"launch ended early:\n{proc.stderr.read()}"
            lines.append(line)
        yield Launched(proc, json.loads("".join(lines)), data_dir, env)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        info = data_dir / "server" / "server.json"
        tasks = json.loads(info.read_text()).get("tasks") if info.exists() else None
        subprocess.run([*cli_command(), "server", "stop"], env=env, capture_output=True,
                       timeout=120)
        kill_tasks_under(data_dir)
        if tasks:
            kill_tasks_under(Path(tasks))


def test_launch_prints_a_url_that_answers_through_the_tunnel(launched: Launched) -> None:
    out = launched.out
    assert set(out) == {"url", "job_id", "session_id"}
    base, token = split_url(out["url"])
    assert base.endswith(f"/session/{out['session_id']}/")
    status = requests.get(base + "api/status", headers={"Authorization": f"token {token}"},
                          timeout=10)
    assert status.status_code == 200
    job = launched.client().job(out["job_id"])
    assert str(job.state) == "RUNNING"
    assert job.raw["session"]["url"] == out["url"]  # the job page shows the same link


def test_a_kernel_runs_code_and_can_reach_everest(launched: Launched) -> None:
    base, token = split_url(launched.out["url"])
    assert run_in_kernel(base, token, "print(6*7)") == "42\n"
    code = ("import os, urllib.request\n"
            "req = urllib.request.Request(os.environ['EVEREST_URL'] + '/api/apps', headers="
            "{'Authorization': 'Bearer ' + os.environ['EVEREST_TASK_TOKEN']})\n"
            "print(urllib.request.urlopen(req).status)")
    assert run_in_kernel(base, token, code) == "200\n"


def test_chromium_opens_the_url_and_runs_a_cell(launched: Launched, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(launched.out["url"])
        run_a_cell(page)
        # JupyterLab 4 asks about "official Jupyter news" in a toast unless told not to
        # (by the time a cell has run, the toast would be showing)
        expect(page.get_by_text("Would you like to get notified about official Jupyter "
                                "news?")).to_have_count(0)
    finally:
        context.close()


def test_sessions_lists_the_live_session(launched: Launched) -> None:
    result = launched.cli("--json", "sessions")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    mine = [s for s in rows if s["id"] == launched.out["session_id"]]
    assert len(mine) == 1
    assert mine[0]["state"] == "ready" and mine[0]["url"] == launched.out["url"]
    assert mine[0]["job_id"] == launched.out["job_id"]


def test_local_packages_travel_with_the_job_from_a_home_the_task_cannot_read(
        launched: Launched, tmp_path: Path) -> None:
    # as root the task runs as another account, which cannot enter a 0700 home: the wheel
    # and the requirements file (naming another local wheel) reach it as the job's inputs.
    # The runner layers a cached environment holding them on the one it runs in (a venv
    # here), so the kernel has both the wheels and everything the session itself needs
    home = tmp_path / "home"
    (home / "dist").mkdir(parents=True)
    home.chmod(0o700)
    wheel = tiny_wheel(home)
    other = tiny_wheel(home / "dist", "otherpkg", 7)
    (home / "requirements.txt").write_text(f"./dist/{other.name}\n")
    result = launched.cli("--json", "launch", "--workspace", "", "--packages", f"./{wheel.name}",
                          "-r",
                          "requirements.txt", "--detach", "--time-limit", "600", timeout=300,
                          cwd=home)
    assert result.returncode == 0, result.stderr
    assert f"sending local packages: {wheel.name}, {other.name}, requirements.txt" in \
        result.stderr
    out = json.loads(result.stdout)
    try:
        base, token = split_url(out["url"])
        code = "import tinypkg, otherpkg; print(tinypkg.ANSWER, otherpkg.ANSWER)"
        assert run_in_kernel(base, token, code) == "42 7\n"
        lab = requests.get(base + "lab", headers={"Authorization": f"token {token}"}, timeout=30)
        assert lab.status_code == 200, lab.text[-500:]  # the page's assets were found too
        inputs = launched.client().job(out["job_id"]).inputs
        assert inputs["packages"] == wheel.name and len(inputs["package_files"]) == 2
    finally:
        stopped = launched.cli("stop", out["session_id"])
    assert stopped.returncode == 0, stopped.stderr


def test_a_missing_local_package_is_refused_before_anything_starts(launched: Launched,
                                                                    tmp_path: Path) -> None:
    result = launched.cli("launch", "--packages", "./gone.whl", cwd=tmp_path)
    assert result.returncode != 0
    assert "--packages ./gone.whl: no such file or folder" in result.stderr
    assert "submitted" not in result.stderr


def test_jupyterlab_warns_before_the_time_limit_and_sessions_shows_the_time_left(
        launched: Launched, browser: Browser) -> None:
    # a time limit under the relay's warning window (300 s): the banner shows at once
    result = launched.cli("--json", "launch", "--workspace", "", "--detach", "--time-limit",
                          "240", timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    context = browser.new_context()
    try:
        rows = json.loads(launched.cli("--json", "sessions").stdout)
        mine = next(s for s in rows if s["id"] == out["session_id"])
        assert mine["ends_by"] == "time limit" and 0 < mine["time_left"] <= 240
        table = launched.cli("sessions").stdout
        assert "TIME LEFT" in table.splitlines()[0]
        assert re.search(out["session_id"] + r".*\b[1-4]m \d\ds \(time limit\)", table), table

        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(out["url"])
        banner = page.locator("#everest-time-left")
        expect(banner).to_contain_text("This session ends in")
        expect(banner).to_contain_text("(time limit). Save your work.")
        run_a_cell(page)  # the banner is over JupyterLab, which works as before
        expect(banner).to_be_visible()
    finally:
        context.close()
        launched.cli("stop", out["session_id"])


def test_the_idle_deadline_moves_with_activity(launched: Launched) -> None:
    result = launched.cli("--json", "launch", "--workspace", "", "--detach", "--idle-timeout",
                          "60",
                          "--time-limit", "900", timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)

    def mine() -> dict:
        rows = json.loads(launched.cli("--json", "sessions").stdout)
        return next(s for s in rows if s["id"] == out["session_id"])

    try:
        first = mine()
        assert first["ends_by"] == "idle timeout" and first["time_left"] <= 60
        base, token = split_url(out["url"])
        # activity (a kernel runs code) moves the deadline; the runner tells the relay
        wait_for(lambda: run_in_kernel(base, token, "print(1)") == "1\n"
                 and mine()["ends_at"] > first["ends_at"] + 5, timeout=60,
                 what="the idle deadline to move after activity", interval=1.0)
    finally:
        launched.cli("stop", out["session_id"])


def _contents(url: str, path: str, text: str | None = None) -> requests.Response:
    """Read (or write, with ``text``) a file through JupyterLab's contents API."""
    base, token = split_url(url)
    auth = {"Authorization": f"token {token}"}
    if text is None:
        return requests.get(base + f"api/contents/{path}", headers=auth, timeout=30)
    return requests.put(base + f"api/contents/{path}", headers=auth, timeout=30,
                        json={"type": "file", "format": "text", "content": text})


def test_a_workspace_outlives_its_session_and_travels_without_one(launched: Launched,
                                                                   tmp_path: Path) -> None:
    def launch(*args: str) -> subprocess.CompletedProcess:
        return launched.cli("--json", "launch", "--detach", "--time-limit", "600", *args,
                            timeout=300)

    first = launch("--workspace", "cli-ws")
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert _contents(one["url"], "note.txt", "kept across sessions").status_code in (200, 201)
    # one writer: a second launch on the live workspace is refused, naming the session
    refused = launched.cli("launch", "--workspace", "cli-ws", "--time-limit", "60")
    assert refused.returncode != 0 and one["session_id"] in refused.stderr
    assert "--read-only" in refused.stderr
    stopped = launched.cli("stop", one["session_id"])
    assert stopped.returncode == 0, stopped.stderr
    assert "workspace cli-ws saved" in stopped.stdout

    listed = json.loads(launched.cli("--json", "workspaces").stdout)
    ws = {w["name"]: w for w in listed["workspaces"]}["cli-ws"]
    assert ws["files"] >= 1 and ws["last_session"] == one["session_id"]
    assert ws["live_session"] is None
    table = launched.cli("workspaces").stdout
    assert "cli-ws" in table and "LAST SAVED" in table
    zipped = tmp_path / "ws.zip"
    got = launched.cli("workspace", "download", "cli-ws", "-o", str(zipped))
    assert got.returncode == 0, got.stderr
    with zipfile.ZipFile(zipped) as zf:
        assert zf.read("note.txt") == b"kept across sessions"
    saved_snapshot = json.loads(launched.cli("--json", "workspaces", "cli-ws").stdout)[
        "snapshots"][0]["id"]

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('uploaded')\n")
    up = launched.cli("workspace", "upload", str(project), "--name", "cli-ws")
    assert up.returncode == 0, up.stderr
    history = json.loads(launched.cli("--json", "workspaces", "cli-ws").stdout)["snapshots"]
    assert len(history) >= 2 and history[1]["id"] == saved_snapshot

    second = launch("--workspace", "cli-ws")
    assert second.returncode == 0, second.stderr
    two = json.loads(second.stdout)
    try:
        assert _contents(two["url"], "src/main.py").json()["content"] == "print('uploaded')\n"
        assert _contents(two["url"], "note.txt").status_code == 404  # the upload replaced it
        copy = launch("--workspace", "cli-ws", "--read-only")  # a copy while it is written
        assert copy.returncode == 0, copy.stderr
        launched.cli("stop", json.loads(copy.stdout)["session_id"])
    finally:
        launched.cli("stop", two["session_id"])
    # any snapshot of the history comes back into a new session
    third = launch("--workspace", "cli-ws", "--snapshot", saved_snapshot)
    assert third.returncode == 0, third.stderr
    three = json.loads(third.stdout)
    try:
        assert _contents(three["url"], "note.txt").json()["content"] == "kept across sessions"
    finally:
        launched.cli("stop", three["session_id"])
    deleted = launched.cli("workspace", "delete", "cli-ws")
    assert deleted.returncode == 0, deleted.stderr
    assert launched.cli("workspaces", "cli-ws").returncode != 0


def test_ctrl_c_stops_the_session_and_its_kernels(launched: Launched) -> None:
    base, token = split_url(launched.out["url"])
    requests.post(base + "api/kernels", json={"name": "python3"}, timeout=30,
                  headers={"Authorization": f"token {token}"}).raise_for_status()
    server = json.loads((launched.data_dir / "server" / "server.json").read_text())
    work = Path(server["tasks"])  # under the data dir, or elsewhere if tasks cannot reach it
    wait_for(lambda: len(pids_with_cwd_under(work)) >= 3, what="runner, lab and kernel")

    launched.proc.send_signal(signal.SIGINT)
    assert launched.proc.wait(90) == 0
    progress = launched.proc.stderr.read()
    steps = ["starting the local Everest server", "submitted", "running", "tunnel up",
             "notebook up", "stopping the session", "session stopped (job CANCELLED)"]
    positions = [progress.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), progress

    assert str(launched.client().job(launched.out["job_id"]).state) == "CANCELLED"
    wait_for(lambda: pids_with_cwd_under(work) == [], timeout=30,
             what="JupyterLab and its kernels to be gone")
    after = launched.cli("--json", "sessions", "--all")
    ended = [s for s in json.loads(after.stdout) if s["id"] == launched.out["session_id"]]
    assert ended[0]["state"] == "ended"


def test_a_failing_session_shows_the_job_log(launched: Launched) -> None:
    result = launched.cli("launch", "--workspace", "", "--packages=-e", "--time-limit", "60")
    assert result.returncode == 1
    assert "error: the job ended FAILED before the notebook was reachable" in result.stderr
    assert "'-e' is an option, not a package" in result.stderr  # from the runner's log
    assert "starting the local Everest server" not in result.stderr  # reused the server


def test_server_stop_stops_the_server_and_its_relay(launched: Launched) -> None:
    server = json.loads((launched.data_dir / "server" / "server.json").read_text())
    relay = json.loads((launched.data_dir / "server" / "relay.json").read_text())
    assert relay["pid"] == server["pid"]  # the relay lives in the server's process
    result = launched.cli("server", "stop")
    assert result.returncode == 0, result.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(relay["url"] + "/api/relay", timeout=5)
    assert not server_running(launched.data_dir / "server")


def test_with_an_everest_and_a_relay_given_launch_uses_them(
        relay: RelayProcess, local_server: ServerProcess, tmp_path: Path) -> None:
    env = child_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"),
                    XDG_DATA_HOME=str(tmp_path / ".local/share"),
                    EVEREST_TOKEN=local_server.token_for("bob"))
    base = [*cli_command(), "--everest", local_server.url, "--json"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True,
                              timeout=180)

    no_relay = cli("launch")
    assert no_relay.returncode == 1 and "no relay for" in no_relay.stderr
    launched = cli("launch", "--relay", relay.url, "--detach", "--idle-timeout", "300")
    assert launched.returncode == 0, launched.stderr
    out = json.loads(launched.stdout)
    assert out["url"].startswith("http://127.0.0.1:")
    assert f"{relay.url}" in local_server.client("bob").job(out["job_id"]).inputs["relay"]
    listed = json.loads(cli("sessions", "--relay", relay.url).stdout)
    assert [s["id"] for s in listed] == [out["session_id"]]  # bob's only
    stopped = cli("stop", out["job_id"], "--relay", relay.url)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["job_state"] == "CANCELLED"
    assert not (tmp_path / ".local/share/everest-jupyter/server").exists()  # no embedded one
