"""Task tokens die with their job, whatever the way it ended: also when the server stopped
between a job's end and the revocation of its tokens (they are swept at start). The
ends one by one (DONE, FAILED, cancelled, time limit) are in tests/server/test_task_ends.py."""

from __future__ import annotations

from pathlib import Path

import requests

from everest_app.states import JobState
from everest_local.auth import token_hash
from everest_local.store import Store
from tests.harness.server import ServerProcess

APPS = Path(__file__).parent / "apps"


def _whoami(server: ServerProcess, token: str) -> int:
    return requests.get(f"{server.url}/api/auth/access_token", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code


def test_task_tokens_left_by_a_stop_between_end_and_revocation_die_at_start(
        start_local_server) -> None:
    server = start_local_server(apps=[APPS / "slow-echo"])
    client = server.client("alice")
    job_id = client.submit("slow-echo", {"duration": 0, "text": "hi"}).id
    assert client.wait(job_id, timeout=60).state == JobState.DONE
    server.stop()
    # what a server stopped just before revoking would leave: a task token of an ended
    # job, and one of a job deleted meanwhile
    store = Store(server.data_dir)
    try:
        for token, job in (("ended-job-token", job_id), ("deleted-job-token", "gone")):
            store.add_token(token_hash(token), "alice", "task", 4e9, job)
    finally:
        store.close()
    server.restart()
    assert _whoami(server, "ended-job-token") == 401
    assert _whoami(server, "deleted-job-token") == 401
    assert _whoami(server, server.token_for("alice")) == 200  # sign-in tokens stay
