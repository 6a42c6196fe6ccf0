"""Write a data folder with release 0.1.0's code and dump its two databases as SQL.

Run from a checkout of that release (commit 294b50b), with this file's folder as the output:

    git worktree add --detach /tmp/old 294b50b && cd /tmp/old
    python "$REPO/tests/data/release-0.1.0/make.py" "$REPO/tests/data/release-0.1.0"

It starts that release's local server, has alice upload a file and run jobs that end DONE,
FAILED and CANCELLED (one left READY would start again on the next run), keeps a token, and
mints two relay sessions (one redeemed). ``everest.sql`` and ``relay.sql`` are the dumps;
tests/server/test_storage.py loads them and opens the folder with the current code.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from everest_app.client import EverestClient
from everest_local.auth import add_user
from launcher.relay.store import RelayStore

PASSWORD = "release-0.1.0-password"


def main(out: Path) -> None:
    data = Path(tempfile.mkdtemp()) / "server"
    add_user(data, "alice", PASSWORD)
    server = subprocess.Popen([sys.executable, "-m", "everest_local", "--port", "0",
                               "--data-dir", str(data), "--slots", "2"])
    try:
        while not (data / "server.json").exists():
            time.sleep(0.1)
        url = json.loads((data / "server.json").read_text())["url"]
        client = EverestClient(url, EverestClient.login(url, "alice", PASSWORD))
        uri = client.upload(out / "make.py")["uri"]
        done = client.submit("append", {"message": "from 0.1.0", "file": uri}, name="kept")
        failed = client.submit("sleep", {"duration": -1}, name="failing")
        sleeping = client.submit("sleep", {"duration": 60}, name="cancelled")
        client.wait(done.id, timeout=60)
        client.wait(failed.id, timeout=60)
        client.cancel(sleeping.id)
        client.wait(sleeping.id, timeout=60)
    finally:
        subprocess.run([sys.executable, "-m", "everest_local", "stop", "--data-dir", str(data)],
                       check=True)
        server.wait(30)
    relay = RelayStore(data / "relay" / "relay.sqlite")
    relay.create(owner="alice", ticket="a" * 40, ttl=3600, listen_port=40001, mode="lab",
                 label="waiting")
    started = relay.create(owner="alice", ticket="b" * 40, ttl=3600, listen_port=40002,
                           mode="lab", label="redeemed")
    relay.redeem("b" * 40, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixture", "nbtoken",
                 {"hostname": "resource-1"})
    relay.update(started.id, job_id=done.id)
    relay.close()
    for name, path in (("everest.sql", data / "everest.sqlite3"),
                       ("relay.sql", data / "relay" / "relay.sqlite")):
        db = sqlite3.connect(path)
        (out / name).write_text("\n".join(db.iterdump()) + "\n")
        db.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
