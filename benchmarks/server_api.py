"""Local server throughput: GET-job requests/s and no-op jobs/s (submit -> DONE), one run.

Starts the real server process on a free 127.0.0.1 port with a temporary data dir, then:

1. **GET /api/jobs/<id>** from several client *processes* (so the client's GIL is not the
   limit), each with one keep-alive ``http.client`` connection (a light client, so that on
   a 2-CPU machine the clients leave CPU to the server) — and, for the ratio, the same
   with a new connection per request.
2. **No-op jobs**: ``--jobs`` submissions of an application whose command is ``true``,
   submitted from a few threads, watched with one ``GET /api/jobs`` per tick until all are
   DONE; and, for the ratio, the same with ``python3 -c pass`` (what a Python task costs).

It reports rates, the server's CPU time per request/job (from /proc), and appends a dated
section to benchmarks/RESULTS.md with the exact command.

    python benchmarks/server_api.py [--duration 5] [--clients 2] [--jobs 300] [--slots N]
"""

from __future__ import annotations

import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from everest_app.client import EverestClient  # noqa: E402
from tests.harness.server import ServerProcess  # noqa: E402


def _noop_app(folder: Path, alias: str, command: str) -> Path:
    app = folder / alias
    app.mkdir(parents=True)
    (app / "application.json").write_text(json.dumps({
        "alias": alias, "name": alias, "inputs": {}, "outputs": {},
        "config": {"command": command}}))
    return app


def _get_loop(url: str, token: str, job_id: str, duration: float, keep_alive: bool) -> int:
    """(client process) GET one job as often as possible for ``duration`` seconds."""
    headers = {"Authorization": f"Bearer {token}"}
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    path = f"/api/jobs/{job_id}"
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    n = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if not keep_alive:
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status}")
        n += 1
    conn.close()
    return n


def bench_gets(url: str, token: str, job_id: str, pid: int, clients: int, duration: float,
               keep_alive: bool) -> dict[str, float]:
    cpu0 = _common.cpu_seconds(pid)
    start = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(clients) as pool:
        futures = [pool.submit(_get_loop, url, token, job_id, duration, keep_alive)
                   for _ in range(clients)]
        counts = [f.result() for f in futures]
    elapsed = time.monotonic() - start
    total = sum(counts)
    cpu = _common.cpu_seconds(pid) - cpu0
    return {"requests": total, "per_s": total / duration,
            "server_cpu_ms_per_req": 1000 * cpu / total, "busy": cpu / duration,
            "wall_s": elapsed}


def bench_jobs(client: EverestClient, app: str, n: int, pid: int) -> dict[str, float]:
    cpu0 = _common.cpu_seconds(pid)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(lambda _: client.submit(app, {}, name="bench").id, range(n)))
    submitted = time.monotonic() - start
    pending = set(ids)
    polls = 0
    while pending:
        polls += 1
        for job in client.jobs():
            if job.id in pending and job.is_done:
                if job.state.value != "DONE":
                    raise SystemExit(f"job {job.id} ended {job.state}: {job.info}")
                pending.discard(job.id)
        if pending:
            time.sleep(0.05)
    elapsed = time.monotonic() - start
    client.delete_jobs("bench")
    cpu = _common.cpu_seconds(pid) - cpu0
    return {"jobs": n, "per_s": n / elapsed, "submit_per_s": n / submitted,
            "server_cpu_ms_per_job": 1000 * cpu / n, "busy": cpu / elapsed, "polls": polls}


def main() -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per GET phase")
    ap.add_argument("--clients", type=int, default=2, help="client processes for GETs")
    ap.add_argument("--jobs", type=int, default=300, help="no-op jobs per job phase")
    ap.add_argument("--slots", type=int, default=None, help="server slots (default: its own)")
    args = ap.parse_args()
    args.load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        tmp_path = Path(tmp)
        apps = [_noop_app(tmp_path / "apps", "noop-true", "true"),
                _noop_app(tmp_path / "apps", "noop-python", "python3 -c pass")]
        server = ServerProcess(tmp_path / "data", apps=apps, users=("bench",),
                               **({"slots": args.slots} if args.slots else {})).start()
        proc, url = server.proc, server.url
        try:
            token = server.token_for("bench")
            client = EverestClient(url, token, pool_size=8)
            job = client.wait(client.submit("noop-true", {}).id, timeout=30)
            gets = bench_gets(url, token, job.id, proc.pid, args.clients, args.duration, True)
            fresh = bench_gets(url, token, job.id, proc.pid, args.clients, args.duration, False)
            true_jobs = bench_jobs(client, "noop-true", args.jobs, proc.pid)
            py_jobs = bench_jobs(client, "noop-python", max(args.jobs // 3, 10), proc.pid)
        finally:
            server.close()
    report(args, gets, fresh, true_jobs, py_jobs)
    return 0


def report(args, gets, fresh, true_jobs, py_jobs) -> None:
    cmd = _common.command()
    cpus = len(os.sched_getaffinity(0))
    lines = [
        f"## Local server API — {datetime.datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {cpus} CPUs, Python {platform.python_version()}, "
        f"{args.clients} client processes, server slots: {args.slots or 'default'}, "
        f"load average before/after: {args.load_before:.1f}/{os.getloadavg()[0]:.1f} "
        "(the machine is shared: other processes compete for the same CPUs)",
        "",
        "| measure | result | server CPU | server busy | ratio |",
        "| --- | --- | --- | --- | --- |",
        f"| GET /api/jobs/<id>, keep-alive | {gets['per_s']:.0f} req/s | "
        f"{gets['server_cpu_ms_per_req']:.2f} ms/req | {gets['busy']:.0%} | 1.00 |",
        f"| GET /api/jobs/<id>, new connection each | {fresh['per_s']:.0f} req/s | "
        f"{fresh['server_cpu_ms_per_req']:.2f} ms/req | {fresh['busy']:.0%} | "
        f"{fresh['per_s'] / gets['per_s']:.2f} |",
        f"| no-op jobs (`true`), submit -> DONE | {true_jobs['per_s']:.0f} jobs/s "
        f"(submits {true_jobs['submit_per_s']:.0f}/s) | "
        f"{true_jobs['server_cpu_ms_per_job']:.2f} ms/job | {true_jobs['busy']:.0%} | 1.00 |",
        f"| no-op jobs (`python3 -c pass`) | {py_jobs['per_s']:.0f} jobs/s | "
        f"{py_jobs['server_cpu_ms_per_job']:.2f} ms/job | {py_jobs['busy']:.0%} | "
        f"{py_jobs['per_s'] / true_jobs['per_s']:.2f} |",
        "",
        "Server busy = the server process's CPU time / wall time (100% = its one event-loop "
        "core). The server is one Python process with one event loop: GET/s is bounded by "
        "its per-request CPU, no-op jobs/s by per-job server CPU (HTTP submit, SQLite "
        "commits, fork/exec) and by slots x task latency (each task is a `/bin/sh` wrapper "
        "plus the command).",
        "",
    ]
    _common.record(args, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
