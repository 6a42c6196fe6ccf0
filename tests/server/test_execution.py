"""Task execution on the real server process: staging, commands, outputs, limits, slots."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from everest_app.errors import AuthError, BadRequestError
from everest_app.states import JobState
from everest_local import processes
from tests.fixtures.task_accounts import ensure_passable
from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess, start_server, wait_for_state

APPS = Path(__file__).parent / "apps"


@pytest.fixture(scope="module")
def server(real_components: None, tmp_path_factory) -> ServerProcess:
    """A server with the test apps, two batch slots, one service slot and the test plugin."""
    srv = start_server(tmp_path_factory.mktemp("exec") / "data", apps=[APPS], slots=2,
                       service_slots=1, kill_grace=0.5,
                       extra_args=["--plugin", "tests.server.plugin_example"])
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return server.client("alice")


def test_inputs_stay_literal_arguments(client, tmp_path):
    marker = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    f = tmp_path / "in.txt"
    f.write_text("first line")
    uri = client.upload(f)["uri"]
    evil = [f"$(touch {marker})", f"; touch {marker}; rm -rf ~", f"`touch {marker}`",
            "${file} && echo hi", "-rf /", "a\nb"]
    for message in evil:
        job = client.wait(client.submit("append", {"message": message, "file": uri}).id,
                          timeout=30)
        assert job.state == JobState.DONE, job.info
        assert client.read(job.result["file"]).decode() == f"first line\n{message}\n"
    assert not marker.exists()
    assert Path.home().exists()


def test_mappings_arrays_and_substitution(client, tmp_path):
    docs = []
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text(name)
        docs.append(client.upload(tmp_path / name)["uri"])
    job = client.wait(client.submit("mapper", {
        "x": 2.5, "flag": True, "nums": [1, 2.5, 3], "docs": docs, "text": "two words",
    }).id, timeout=30)
    assert job.state == JobState.DONE, job.info
    r = job.result
    assert r["double"] == 5.0 and r["count"] == 3
    # ${opt} absent -> dropped; array -> one argument per item; inside a word -> joined
    assert json.loads(r["args"]) == ["--n=7", "true", "fast", "1", "2.5", "3",
                                     "lit two words end", "docs/b.txt", "docs/a.txt",
                                     "${undeclared}"]
    report = json.loads(client.read(r["report"]))
    assert report == {"docs": ["a.txt", "b.txt"], "nums": ["1", "2.5", "3"]}
    assert [client.read(u) for u in r["parts"]] == [b"0", b"1"]
    assert all(u.startswith(f"/api/files/jobs/{job.id}/") for u in r["parts"])
    assert "missing" not in r


def test_array_items_with_the_same_file_name_do_not_overwrite_each_other(client, tmp_path):
    docs = []
    for n in range(3):
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "same.txt").write_text(str(n))
        docs.append(client.upload(folder / "same.txt")["uri"])
    job = client.wait(client.submit("mapper", {"x": 1, "docs": docs}).id, timeout=30)
    assert job.state == JobState.DONE, job.info
    assert json.loads(client.read(job.result["report"]))["docs"] == [
        "1-same.txt", "2-same.txt", "same.txt"]
    assert json.loads(job.result["args"])[-4:-1] == [
        "docs/same.txt", "docs/1-same.txt", "docs/2-same.txt"]


def test_task_environment_and_token_revoked_at_job_end(server, client):
    job = client.wait(client.submit("envcheck", {}).id, timeout=30)
    assert job.state == JobState.DONE, job.info
    assert job.result["whoami"] == "alice"
    assert job.result["url"] == server.url
    assert job.result["leaked"] == ""
    from everest_app.client import EverestClient

    with pytest.raises(AuthError):
        EverestClient(server.url, job.result["token"], retries=0).jobs()


def test_time_limit_fails_the_job(client):
    job = client.wait(client.submit("limited", {}).id, timeout=30)
    assert job.state == JobState.FAILED
    assert "time limit of 1 s" in job.info
    assert "time limit reached" in client.log(job.id)


def test_retry_failed_tasks(client):
    job = client.wait(client.submit("flaky", {}).id, timeout=30)
    assert job.state == JobState.DONE, job.info
    assert job.result == {"attempt": "1"}
    log = client.log(job.id)
    assert f"{job.id}-0-0 failed" in log and "retrying" in log
    assert f"Task {job.id}-0-1 started" in log


def test_outputs_through_symlinks_out_of_the_work_dir_fail(client):
    job = client.wait(client.submit("leaky", {}).id, timeout=30)
    assert job.state == JobState.FAILED
    assert "is a link; links are not followed out of a task's folder" in job.info


def test_negative_sleep_fails_with_stderr_in_info(client):
    job = client.wait(client.submit("sleep", {"duration": -1}).id, timeout=30)
    assert job.state == JobState.FAILED
    assert "exit code 1" in job.info and "must not be negative" in job.info
    assert job.result == {}


def test_templet_windows_command_is_accepted_and_fails_clearly(local_server, tmp_path):
    alice = local_server.client("alice")
    code = tmp_path / "lorenz.mpl"
    code.write_text("# maple")
    app = next(a for a in alice.apps() if a["alias"] == "MyNewEverestApplication")
    job = alice.submit(app["id"], {"r": 28, "s": 10, "b": 2.667,
                                   "code": alice.upload(code)["uri"]})
    assert job.state in (JobState.READY, JobState.SCHEDULED, JobState.RUNNING)
    job = alice.wait(job.id, timeout=30)
    assert job.state == JobState.FAILED
    assert "cmd.exe" in job.info and "Windows" in job.info


def test_slots_bound_running_tasks_and_services_have_their_own(client):
    long = [client.submit("sleep", {"duration": 30}).id for _ in range(3)]
    wait_for_state(client, long[0], "RUNNING")
    wait_for_state(client, long[1], "RUNNING")
    assert client.job(long[2]).state == JobState.READY  # two slots
    service = client.submit("daemon", {"duration": 30})
    wait_for_state(client, service.id, "RUNNING")  # not behind the batch queue
    queued_service = client.submit("daemon", {"duration": 0})
    assert client.job(queued_service.id).state == JobState.READY  # one service slot
    for job_id in (*long, service.id):
        client.cancel(job_id)
    for job_id in (*long, service.id):
        assert client.wait(job_id, timeout=30).state == JobState.CANCELLED
    assert client.wait(queued_service.id, timeout=30).state == JobState.DONE


def test_input_preparer_and_job_decorator(client):
    job = client.submit("daemon", {"duration": 0})
    assert job.inputs["ticket"] == "ticket-for-alice"  # filled in before validation
    assert job.raw["session"]["url"].endswith(f"/{job.id}/")
    with pytest.raises(BadRequestError, match="no tickets today"):
        client.submit("daemon", {"duration": 0, "ticket": "refuse"})
    assert client.wait(job.id, timeout=30).state == JobState.DONE
    assert "session" not in client.wait(client.submit("hostname", {}).id, timeout=30).raw


def test_the_job_list_holds_every_job_when_many_changed_since_the_last(client):
    """Over 20 jobs changed since the last list: their rows are read in one go, and a
    decorated job (re-rendered each time) is still listed, decoration included."""
    daemon = client.wait(client.submit("daemon", {"duration": 0}).id, timeout=30)
    assert daemon.state == JobState.DONE
    listed = {job.id: job for job in client.jobs()}  # renders and caches them all
    batch = [client.submit("hostname", {}).id for _ in range(25)]
    for job_id in batch:
        assert client.wait(job_id, timeout=60).state == JobState.DONE
    listed = {job.id: job for job in client.jobs()}
    assert set(batch) <= set(listed)
    assert all(listed[job_id].state == JobState.DONE for job_id in batch)
    assert listed[daemon.id].raw["session"]["url"].endswith(f"/{daemon.id}/")


def test_cancel_escalates_to_sigkill_for_a_task_that_ignores_signals(server, client):
    job = client.submit("stubborn", {})
    wait_for_state(client, job.id, "RUNNING")
    ready = Path(server.data_dir) / "tasks" / f"{job.id}-0-0" / "work" / "ready"
    # the file exists a moment before the pid is in it
    pid = int(wait_for(lambda: ready.exists() and ready.read_text().strip(),
                       what="the task's loop to start"))
    client.cancel(job.id)
    assert client.job(job.id).state == JobState.RUNNING  # not before the process has ended
    ended = client.wait(job.id, timeout=30)
    assert ended.state == JobState.CANCELLED
    assert not processes.is_alive(pid, None)  # gone, or a zombie waiting for init


def test_an_input_named_like_the_apps_script_is_refused(client, tmp_path):
    """Issue 20.2: an upload called wordcount_map.py, given as the built-in map app's
    (unmapped) posts file, would be staged over the app's own script and run as the app;
    the job is refused with a 400 naming the input, and an honest name still runs."""
    hostile = tmp_path / "wordcount_map.py"
    hostile.write_text("print('not the application')\n")
    uri = client.upload(hostile)["uri"]
    with pytest.raises(BadRequestError) as refused:
        client.submit("wordcount-map", {"posts": uri})
    assert refused.value.status == 400
    assert "input 'posts'" in str(refused.value) and "wordcount_map.py" in str(refused.value)
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"text": "hello hello world"}\n')
    job = client.wait(client.submit("wordcount-map", {"posts": client.upload(posts)["uri"]}).id,
                      timeout=60)
    assert job.state == JobState.DONE, job.raw
    assert job.result["total"] == 3


@pytest.fixture()
def small_disk_server(real_components: None, tmp_path_factory) -> ServerProcess:
    """A server whose data directory (task folders included) is a 6 MiB tmpfs (root may
    mount; the tests run as root), as tests/server/test_limits.py mounts one."""
    mount = tmp_path_factory.mktemp("small-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    ensure_passable(mount)  # task folders stay on it (not moved to /var/tmp)
    srv = None
    try:
        srv = start_server(mount / "data", apps=[APPS], slots=2,
                           extra_args=["--disk-reserve", str(1 << 20)])
        yield srv
    finally:
        if srv is not None:
            srv.close()
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_task_that_fills_the_data_disk_fails_with_a_message(small_disk_server):
    """Issue 20.3: the task fills the disk the server records jobs on; its job FAILS saying
    so (it used to stay RUNNING: recording the end met the full disk), the space comes back,
    and the next job runs."""
    srv = small_disk_server
    c = srv.client("alice")
    assert (srv.data_dir / "tasks").is_dir()  # the filler writes to the small disk only
    job = c.wait(c.submit("filler", {}).id, timeout=60)
    assert job.state == JobState.FAILED, job.raw
    assert "data disk is full" in job.info, job.info
    after = c.wait(c.submit("sleep", {"duration": 0}).id, timeout=60)
    assert after.state == JobState.DONE, after.raw
    assert shutil.disk_usage(srv.data_dir).free > 2 << 20


# -- fair share (issue 20.6) -----------------------------------------------------------------

def _release(server: ServerProcess, job_id: str) -> None:
    """Let a running ``hold`` job end (it waits for a file named release in its folder)."""
    work = server.data_dir / "tasks" / f"{job_id}-0-0" / "work"
    wait_for((work / "copy.txt").exists, what=f"job {job_id}'s task to start")
    (work / "release").touch()


def _states(client, jobs) -> list[str]:
    return [client.job(j.id).state.value for j in jobs]


def test_one_users_queue_does_not_starve_another(start_local_server):
    """One slot; alice's job runs and two more of hers wait, then bob submits one: when
    alice's first ends, bob's starts before her second (it used to wait behind all hers)."""
    srv = start_local_server(apps=[APPS], slots=1)
    alice, bob = srv.client("alice"), srv.client("bob")
    first = alice.submit("hold", {"text": "a1"})
    wait_for_state(alice, first.id, "RUNNING")
    second, third = (alice.submit("hold", {"text": t}) for t in ("a2", "a3"))
    bobs = bob.submit("hold", {"text": "b1"})
    assert _states(alice, [second, third]) == ["READY", "READY"]
    _release(srv, first.id)
    wait_for_state(bob, bobs.id, "RUNNING")
    assert _states(alice, [second, third]) == ["READY", "READY"]
    _release(srv, bobs.id)
    wait_for_state(alice, second.id, "RUNNING")
    assert _states(alice, [third]) == ["READY"]
    _release(srv, second.id)
    _release(srv, third.id)
    assert alice.wait(third.id, timeout=60).state == JobState.DONE
    assert bob.wait(bobs.id, timeout=60).state == JobState.DONE


def test_a_per_user_cap_on_running_jobs(start_local_server):
    """Two slots and --max-running-per-user 1: alice's second job waits with a slot free,
    bob's job takes it, and hers starts when her first ends."""
    srv = start_local_server(apps=[APPS], slots=2,
                             extra_args=["--max-running-per-user", "1"])
    alice, bob = srv.client("alice"), srv.client("bob")
    first, second = (alice.submit("hold", {"text": t}) for t in ("a1", "a2"))
    wait_for_state(alice, first.id, "RUNNING")
    bobs = bob.submit("hold", {"text": "b1"})
    wait_for_state(bob, bobs.id, "RUNNING")
    assert _states(alice, [second]) == ["READY"]  # a slot was free all along: the cap
    _release(srv, first.id)
    wait_for_state(alice, second.id, "RUNNING")
    _release(srv, second.id)
    _release(srv, bobs.id)
    assert alice.wait(second.id, timeout=60).state == JobState.DONE
    assert bob.wait(bobs.id, timeout=60).state == JobState.DONE


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_task_that_keeps_the_data_disk_full_is_stopped(small_disk_server):
    """Issue 20.3: a task fills the disk and stays running, holding it: the server stops it
    (its folder holds the most of the full disk) and its job fails saying so."""
    srv = small_disk_server
    c = srv.client("alice")
    job = c.wait(c.submit("hog", {}).id, timeout=60)
    assert job.state == JobState.FAILED, job.raw
    assert "data disk is full" in job.info, job.info
    after = c.wait(c.submit("sleep", {"duration": 0}).id, timeout=60)
    assert after.state == JobState.DONE, after.raw
