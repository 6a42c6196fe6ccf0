"""On a root server each user's tasks run as an account of their own by default
(``everest-task-<hash>``, created when first needed), so no user's task reads another's
running task: its ``/proc/<pid>/environ`` holds the task token. ``--task-user`` still puts
everyone on one account (then a task can read another user's environ: the control)."""

from __future__ import annotations

import os
import pwd
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from everest_app.states import JobState
from everest_local.task_users import account_for
from tests.fixtures.task_accounts import ensure_account
from tests.harness.server import ServerProcess, start_server, wait_for_state

APPS = Path(__file__).parent / "apps"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")


@pytest.fixture(scope="module", params=["per-user", "shared"])
def server(real_components: None, request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = []
    if request.param == "shared":
        ensure_account("everest-task")
        extra = ["--task-user", "everest-task"]
    srv = start_server(tmp_path_factory.mktemp(request.param) / "data",
                       apps=[APPS / "peek", APPS / "slow-echo"], extra_args=extra)
    srv.mode = request.param
    yield srv
    srv.close()


def _task_pid(server: ServerProcess, job_id: str) -> int:
    with sqlite3.connect(server.data_dir / "everest.sqlite3") as db:
        return db.execute("SELECT pid FROM tasks WHERE job_id=?", (job_id,)).fetchone()[0]


def test_no_user_reads_another_users_running_task(server: ServerProcess) -> None:
    alice, bob = server.client("alice"), server.client("bob")
    running = alice.submit("slow-echo", {"duration": 120, "text": "alice"})
    try:
        wait_for_state(alice, running.id, "RUNNING")
        environ = f"/proc/{_task_pid(server, running.id)}/environ"
        assert b"EVEREST_TASK_TOKEN=" in Path(environ).read_bytes()  # what is at stake
        reports = {}
        for who, client in (("alice", alice), ("bob", bob)):
            job = client.wait(client.submit("peek", {"paths": [environ]}).id, timeout=60)
            assert job.state == JobState.DONE, job.raw
            reports[who] = (job.result["report"].split()[0], job.result["uid"])
    finally:
        alice.cancel(running.id)
    if server.mode == "per-user":
        assert reports == {"alice": ("READ", pwd.getpwnam(account_for("alice")).pw_uid),
                           "bob": ("DENIED", pwd.getpwnam(account_for("bob")).pw_uid)}
    else:  # one shared account: bob's task reads alice's token
        shared = pwd.getpwnam("everest-task").pw_uid
        assert reports == {"alice": ("READ", shared), "bob": ("READ", shared)}


def test_per_user_account_names_are_short_valid_and_distinct() -> None:
    names = {account_for(user) for user in ("alice", "bob", "Alice", "a" * 64, "x@y.org")}
    assert len(names) == 5
    assert all(len(n) <= 32 and n.startswith("everest-task-") and n == n.lower()
               for n in names)
