"""Fault and load figures of the local server and the relay, for docs/reliability.md.

In one run, on this machine, each against real processes:

1. **kill -9 with jobs queued.** A server with 4 slots gets ``--jobs`` (300) jobs of an
   application whose task appends its job id to a shared log and sleeps 0.3 s, then is
   ``kill -9``-ed and
   restarted every ``--kill-every`` seconds until every job has ended. Counted: jobs that did
   not end DONE (lost) and job ids in the log more than once (run twice).
2. **Relay restart with live sessions.** ``--sessions`` (3) real sessions (session runner,
   JupyterLab, SSH tunnel) through a relay process; the relay is stopped and started again.
   Counted: sessions whose URL works again, and seconds until the last one does.
3. **Load.** ``--clients`` (20) threads for ``--seconds`` (30) s, each on a keep-alive
   connection, a mix of ``GET /api/jobs`` (a user with 100 jobs), ``GET /api/jobs/<id>``
   and ``GET /api/apps``. Reported: requests, p50 and p99 latency, errors (any non-2xx or
   exception).

Fuzz figures come from the test suite (``pytest -s tests/server/test_openapi.py`` prints
the count), not from here. Appends a dated section to benchmarks/RESULTS.md.

    python benchmarks/reliability.py [--jobs 300] [--sessions 3] [--clients 20] [--seconds 30]
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.task_accounts import ensure_passable, ensure_task_accounts  # noqa: E402
from tests.harness.relay import RelayProcess  # noqa: E402
from tests.harness.runner import start_runner, stop_process_group  # noqa: E402
from tests.harness.server import ServerProcess, kill_tasks_under  # noqa: E402
from tests.session.helpers import Api, kill_under, split_url, wait_for  # noqa: E402

MARK_APP = {"alias": "mark", "name": "Mark",
            "inputs": {"log": {"type": "string", "required": True}},
            "outputs": {},
            "config": {"command": "sh mark.sh ${log}"}}
MARK_SH = 'echo "$EVEREST_JOB_ID" >> "$1"\nsleep 0.3\n'


def kill_nine(root: Path, jobs: int, kill_every: float) -> dict:
    app = root / "mark"
    (app / "ApplicationFiles").mkdir(parents=True)
    (app / "application.json").write_text(json.dumps(MARK_APP))
    (app / "ApplicationFiles" / "mark.sh").write_text(MARK_SH)
    shared = root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # tasks run as another account when the server is root's
    ensure_passable(shared / "runs.log")
    server = ServerProcess(root / "data", apps=[app], slots=4).start()
    try:
        token = server.token_for("alice")
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        for _ in range(jobs):
            resp = requests.post(server.url + "/api/apps/mark", headers=auth, timeout=60,
                                 json={"inputs": {"log": str(shared / "runs.log")}})
            resp.raise_for_status()
            ids.append(resp.json()["id"])
        kills, started = 0, time.monotonic()
        queued_at_first_kill = None
        while True:
            time.sleep(kill_every)
            states = Counter(j["state"] for j in requests.get(
                server.url + "/api/jobs", headers=auth, timeout=60).json())
            if sum(states[s] for s in ("DONE", "FAILED", "CANCELLED")) == jobs:
                break
            if queued_at_first_kill is None:
                queued_at_first_kill = states["READY"]
            server.kill9()
            kills += 1
            server.restart()
        elapsed = time.monotonic() - started
        everything = requests.get(server.url + "/api/jobs", headers=auth, timeout=60).json()
        final = {j["id"]: j["state"] for j in everything}
        for job in everything:
            if job["state"] != "DONE":
                print(f"not DONE: {job['id']} {job['state']}: {job.get('info')}", flush=True)
    finally:
        server.close()
        kill_tasks_under(root)
    runs = Counter((shared / "runs.log").read_text().split())
    return {"jobs": jobs, "kills": kills, "seconds": round(elapsed, 1),
            "queued_at_first_kill": queued_at_first_kill,
            "lost": sum(1 for i in ids if final.get(i) != "DONE"),
            "duplicated": sum(1 for i in ids if runs[i] > 1),
            "never_ran": sum(1 for i in ids if runs[i] == 0)}


def relay_restart(root: Path, sessions: int) -> dict:
    server = ServerProcess(root / "everest").start()
    (root / "relay").mkdir(parents=True, exist_ok=True)
    relay = RelayProcess(root / "relay" / "state", server.url).start()
    procs, urls = [], []
    try:
        api = Api(relay.url, server.token_for("alice"))
        for n in range(sessions):
            session = api.new_session(label=f"bench {n}")
            procs.append(start_runner(root / f"task{n}", relay.url, session["ticket"],
                                      "--time-limit", "900", "--idle-timeout", "0"))
            urls.append((session["id"], None))
        urls = [(sid, api.wait_state(sid, "ready", timeout=180)["url"]) for sid, _ in urls]

        def answers(url: str) -> bool:
            base, token = split_url(url)
            try:
                return requests.get(base + "api/status", timeout=5, headers={
                    "Authorization": f"token {token}"}).status_code == 200
            except requests.RequestException:
                return False

        assert all(answers(url) for _, url in urls)
        relay.stop()
        started = time.monotonic()
        relay.start()
        back, last = 0, 0.0
        for sid, url in urls:
            try:
                wait_for(lambda u=url: answers(u), timeout=120, interval=0.1,
                         what=f"session {sid}")
                back += 1
                last = time.monotonic() - started
            except AssertionError:
                pass
        same = sum(1 for sid, url in urls if api.session(sid)["url"] == url)
    finally:
        for proc in procs:
            stop_process_group(proc)
        kill_under(root)
        relay.stop()
        server.close()
    return {"sessions": sessions, "working_again": back, "same_url": same,
            "seconds_to_last": round(last, 2)}


def load(root: Path, clients: int, seconds: float) -> dict:
    server = ServerProcess(root / "data", slots=4).start()
    try:
        token = server.token_for("alice")
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        for _ in range(100):
            resp = requests.post(server.url + "/api/apps/sleep", headers=auth, timeout=60,
                                 json={"inputs": {"duration": 0}})
            ids.append(resp.json()["id"])
        paths = ["/api/jobs", "/api/apps"] + [f"/api/jobs/{i}" for i in ids[:8]]
        latencies: list[float] = []
        errors = Counter()
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def client(n: int) -> None:
            session = requests.Session()
            session.headers.update(auth)
            mine, k = [], n
            while time.monotonic() < deadline:
                path = paths[k % len(paths)]
                k += 1
                t0 = time.perf_counter()
                try:
                    resp = session.get(server.url + path, timeout=30)
                    ok = resp.status_code < 300
                    key = str(resp.status_code)
                except requests.RequestException as exc:
                    ok, key = False, type(exc).__name__
                mine.append(time.perf_counter() - t0)
                if not ok:
                    with lock:
                        errors[key] += 1
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.close()
    latencies.sort()
    return {"clients": clients, "seconds": seconds, "requests": len(latencies),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "errors": sum(errors.values()), "error_kinds": dict(errors)}


def main() -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--kill-every", type=float, default=1.5)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    ensure_task_accounts()
    results = {}
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        root = Path(tmp)
        ensure_passable(root / "x")
        for name, run in (("kill -9", lambda: kill_nine(root / "k9", args.jobs,
                                                         args.kill_every)),
                          ("relay restart", lambda: relay_restart(root / "rr", args.sessions)),
                          ("load", lambda: load(root / "load", args.clients, args.seconds))):
            (root / name.split()[0]).mkdir(exist_ok=True)
            results[name] = run()
            print(name, json.dumps(results[name]), flush=True)
    command = _common.command()
    k9, rr, ld = results["kill -9"], results["relay restart"], results["load"]
    text = (
        f"\n## Reliability: kill -9, relay restart, load — "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}\n\nCommand: `{command.strip()}`  \n"
        f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n\n"
        f"| test | figures |\n| --- | --- |\n"
        f"| kill -9 every {args.kill_every:g} s, {k9['jobs']} jobs queued, 4 slots | "
        f"{k9['kills']} kills over {k9['seconds']} s ({k9['queued_at_first_kill']} still "
        f"queued at the first); lost **{k9['lost']}**, run twice "
        f"**{k9['duplicated']}**, never ran {k9['never_ran']} |\n"
        f"| relay restart, {rr['sessions']} live sessions | working again "
        f"**{rr['working_again']}/{rr['sessions']}** (same URL: {rr['same_url']}), the last "
        f"after {rr['seconds_to_last']} s |\n"
        f"| load, {ld['clients']} clients for {ld['seconds']:g} s | {ld['requests']} requests, "
        f"p50 **{ld['p50_ms']} ms**, p99 **{ld['p99_ms']} ms**, errors **{ld['errors']}** |\n")
    _common.record(args, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
