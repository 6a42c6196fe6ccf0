"""Nothing is lost when the server dies: kill -9, restart, clean stop, the CLI around it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from everest_app.client import EverestClient
from everest_app.states import JobState
from everest_local import processes
from everest_local.store import DB_NAME
from tests.fixtures.waiting import wait_for
from tests.harness.server import REPO, wait_for_state

APPS = Path(__file__).parent / "apps"


def _task_dir(server, job_id: str, attempt: int = 0) -> Path:
    return Path(server.data_dir) / "tasks" / f"{job_id}-0-{attempt}"


def test_kill9_then_restart_loses_nothing(start_local_server, tmp_path):
    server = start_local_server(apps=[APPS], slots=3)
    c = server.client("alice")
    kept = tmp_path / "kept.txt"
    kept.write_text("still here")
    upload = c.upload(kept)["uri"]

    live = c.submit("slow-echo", {"duration": 8, "text": "adopted"})       # outlives the outage
    dead = c.submit("sleep", {"duration": 120})                             # killed while down
    quick = c.submit("slow-echo", {"duration": 0.5, "text": "while down"})  # ends while down
    for job in (live, dead, quick):
        wait_for_state(c, job.id, "RUNNING")
    queued = c.submit("hostname", {})                                       # waits for a slot
    assert c.job(queued.id).state == JobState.READY

    server.kill9()
    dead_pid = processes.read_pid(_task_dir(server, dead.id))
    os.killpg(dead_pid, signal.SIGKILL)
    wait_for((_task_dir(server, quick.id) / "exit").exists, 30, "the quick task to exit")
    live_pid = processes.read_pid(_task_dir(server, live.id))
    assert processes.is_alive(live_pid, None)

    server.restart()
    c = EverestClient(server.url, server.token)  # the same token works after the restart
    quick_done = c.wait(quick.id, timeout=30)
    assert quick_done.state == JobState.DONE, quick_done.info
    assert quick_done.result["text"] == "while down"
    dead_failed = c.wait(dead.id, timeout=30)
    assert dead_failed.state == JobState.FAILED
    assert "ended while the local server was not running" in dead_failed.info
    assert c.wait(queued.id, timeout=30).state == JobState.DONE
    assert c.job(live.id).state == JobState.RUNNING  # re-adopted, not restarted
    assert "re-adopted after a server restart" in c.log(live.id)
    live_done = c.wait(live.id, timeout=60)
    assert live_done.state == JobState.DONE, live_done.info
    assert live_done.result["text"] == "adopted"
    assert c.read(live_done.result["file"]) == b"adopted"
    assert c.read(upload) == b"still here"
    assert c.log(live.id).count("started on local") == 1


def test_a_task_that_never_started_runs_after_a_restart(start_local_server):
    """A crash while a task was being prepared (STAGING, no process yet) queues its job
    again, and its attempt runs under the same task id."""
    server = start_local_server(apps=[APPS])
    c = server.client("alice")
    job = c.submit("slow-echo", {"duration": 3, "text": "second try"})
    wait_for_state(c, job.id, "RUNNING")
    server.kill9()
    task_dir = _task_dir(server, job.id)
    os.killpg(processes.read_pid(task_dir), signal.SIGKILL)
    for name in ("pid", "exit"):
        (task_dir / name).unlink(missing_ok=True)
    db = sqlite3.connect(Path(server.data_dir) / DB_NAME)
    with db:  # what the database holds between staging and the start of the process
        db.execute("UPDATE tasks SET state='STAGING', pid=NULL, pstart=NULL WHERE job_id=?",
                   (job.id,))
        db.execute("UPDATE jobs SET state='SCHEDULED' WHERE id=?", (job.id,))
    db.close()
    server.restart()
    c = EverestClient(server.url, server.token)
    done = c.wait(job.id, timeout=30)
    assert done.state == JobState.DONE, (done.info, c.log(job.id))
    assert done.result["text"] == "second try"
    assert "queued again" in c.log(job.id)


def test_cancel_of_a_readopted_task(start_local_server):
    server = start_local_server(apps=[APPS], kill_grace=0.5)
    c = server.client("alice")
    job = c.submit("sleep", {"duration": 120})
    wait_for_state(c, job.id, "RUNNING")
    server.kill9()
    server.restart()
    c = EverestClient(server.url, server.token)
    assert c.job(job.id).state == JobState.RUNNING
    c.cancel(job.id)
    assert c.wait(job.id, timeout=30).state == JobState.CANCELLED
    pid = processes.read_pid(_task_dir(server, job.id))
    assert pid is None or not processes.is_alive(pid, None)


def test_clean_stop_interrupts_tasks_and_removes_server_json(start_local_server):
    server = start_local_server(kill_grace=0.5)
    c = server.client("alice")
    job = c.submit("sleep", {"duration": 120})
    wait_for_state(c, job.id, "RUNNING")
    pid = processes.read_pid(_task_dir(server, job.id))
    assert server.stop() == 0
    assert not (Path(server.data_dir) / "server.json").exists()
    assert not processes.is_alive(pid, None)
    server.restart()
    ended = EverestClient(server.url, server.token).job(job.id)
    assert ended.state == JobState.CANCELLED and "server was stopped" in ended.info


def test_plugin_stop_callbacks_run_on_clean_stop(start_local_server):
    server = start_local_server(apps=[APPS],
                                extra_args=["--plugin", "tests.server.plugin_example"])
    assert not (Path(server.data_dir) / "plugin-stopped").exists()
    assert server.stop() == 0
    assert (Path(server.data_dir) / "plugin-stopped").read_text() == "ok"


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "everest_local", *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def test_one_server_per_data_dir_and_cli_add_user_and_stop(start_local_server):
    server = start_local_server()
    again = _cli("--port", "0", "--data-dir", str(server.data_dir))
    assert again.returncode == 2 and "another local server" in again.stderr
    added = _cli("add-user", "carol", "--data-dir", str(server.data_dir), "--password-stdin",
                 stdin="carol-pw\n")
    assert added.returncode == 0, added.stderr
    token = EverestClient.login(server.url, "carol", "carol-pw")
    assert EverestClient(server.url, token).jobs() == []
    bad = _cli("add-user", "../x", "--data-dir", str(server.data_dir), "--password-stdin",
               stdin="pw\n")
    assert bad.returncode == 1 and "bad user name" in bad.stderr
    stopped = _cli("stop", "--data-dir", str(server.data_dir))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    server.proc.wait(10)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/_local/stats", timeout=2)
    nothing = _cli("stop", "--data-dir", str(server.data_dir))
    assert nothing.returncode == 0 and "no local server" in nothing.stdout


def test_bad_apps_path_fails_start_with_a_clear_error(tmp_path):
    result = _cli("--port", "0", "--data-dir", str(tmp_path / "d"), "--apps",
                  str(tmp_path / "missing"))
    assert result.returncode == 2 and "missing" in result.stderr


def test_everest_jupyter_server_subcommand_is_registered():
    import argparse

    from everest_local.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["server", "--port", "0", "--slots", "3", "--apps", "a", "b"])
    assert args.slots == 3 and [str(p) for p in args.apps] == ["a", "b"]
    args = parser.parse_args(["server", "add-user", "dave", "--password-stdin"])
    assert args.name == "dave" and args.func.__name__ == "add_user"
