"""One relay, 1 → 500 live sessions: request latency, memory and file descriptors.

In one run, on this machine: a local server and one relay process; a *fleet* process plays
the runners — for each session it mints a session through the relay's API, redeems its
ticket with a fresh key, logs in over SSH (asyncssh) as a runner does, asks for the granted
forward, and serves a small HTTP/1.1 server of its own on loopback behind it (keep-alive,
``200`` with a 2-byte body). The fleet grows in steps (``--steps``); at each step, with every
session connected and otherwise idle, this process (no SSH in it) sends ``--requests``
kept-alive ``GET /session/<id>/api/status`` through the relay's one port, each to a session
picked at random (each session has one kept client connection, opened and used once
before the timed requests), and reads the relay's
resident memory and open file descriptors from ``/proc``.

Reported: p50/p99 per request at each step and the ratio to the first step (aim: p99 at
500 ≤ 2× at 1), memory per idle session (RSS growth ÷ sessions added; aim ≤ 1 MB) and file
descriptors per session. Appends a dated section to ``benchmarks/RESULTS.md``.

    python benchmarks/relay_scale.py [--steps 1,10,100,250,500,1] [--requests 2000] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


# -- the fleet (a separate process: runners' SSH clients and their HTTP servers) ------------

async def _serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A kept-alive HTTP/1.1 server answering every request head with ``REPLY``."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")  # the benchmark sends no bodies
            writer.write(REPLY)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        pass
    finally:
        writer.close()


async def _fleet(relay_url: str, token: str) -> None:
    """Read ``grow N`` lines on stdin; answer each with a JSON line once N sessions are up."""
    import asyncssh
    import requests

    loop = asyncio.get_running_loop()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    held = []  # connections, listeners, servers: kept alive for the run

    def mint() -> tuple[dict, dict, asyncssh.SSHKey]:
        session = http.post(relay_url + "/api/sessions", json={}, timeout=60).json()
        key = asyncssh.generate_private_key("ssh-ed25519")
        grant = requests.post(relay_url + "/api/tickets/redeem", timeout=60, json={
            "ticket": session["ticket"], "notebook_token": "t" * 32,
            "public_key": key.export_public_key().decode().strip(),
            "runner": {"hostname": "relay_scale"}}).json()
        return session, grant, key

    async def one() -> str:
        session, grant, key = await loop.run_in_executor(None, mint)
        server = await asyncio.start_server(_serve_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await asyncssh.connect(
            "127.0.0.1", grant["ssh"]["port"], username=grant["ssh"]["username"],
            client_keys=[key], config=None, agent_path=None, preferred_auth="publickey",
            known_hosts=([asyncssh.import_public_key(grant["host_key"])], [], []))
        listener = await conn.forward_remote_port(
            grant["forward"]["host"], grant["forward"]["port"], "127.0.0.1", port)
        held.append((server, conn, listener))
        return session["id"]

    ids: list[str] = []
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        target = int(line.split()[1])
        while len(ids) < target:
            batch = min(target - len(ids), 20)
            ids += await asyncio.gather(*(one() for _ in range(batch)))
        while len(ids) > target:  # fewer: the newest runners stop and their sessions end
            server, conn, listener = held.pop()
            sid = ids.pop()
            listener.close()
            conn.close()
            server.close()
            await conn.wait_closed()
            await loop.run_in_executor(None, lambda sid=sid: http.delete(
                f"{relay_url}/api/sessions/{sid}", timeout=60))
        print(json.dumps(ids), flush=True)


# -- the driver --------------------------------------------------------------------------------

def _proc_status(pid: int) -> tuple[int, int]:
    """(resident kB, open fds) of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _requests(port: int, conns: dict[str, http.client.HTTPConnection], ids: list[str],
              rng: random.Random | None, n: int = 0) -> list[float]:
    """Kept-alive GETs: ``n`` each to a random session, or (``rng`` None) one to each of
    ``ids`` in turn; seconds each. ``conns`` keeps a client connection per session."""
    times = []
    headers = {"Authorization": "token " + "t" * 32}
    for i in range(n if rng else len(ids)):
        sid = rng.choice(ids) if rng else ids[i]
        conn = conns.get(sid)
        if conn is None:
            conn = conns[sid] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        t = time.perf_counter()
        conn.request("GET", f"/session/{sid}/api/status", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        times.append(time.perf_counter() - t)
        assert resp.status == 200 and body == b"ok", (resp.status, body[:200])
    return times


def measure(steps: list[int], n: int, root: Path) -> list[dict]:
    from tests.harness.processes import child_env
    from tests.harness.relay import RelayProcess
    from tests.harness.server import start_server
    from tests.session.helpers import Api

    rows = []
    with ExitStack() as stack:
        server = start_server(root / "server")
        stack.callback(server.close)
        relay = RelayProcess(root / "relay", server.url).start()
        stack.callback(relay.stop)
        token = server.token_for("alice")
        Api(relay.url, token)  # the relay answers
        fleet = subprocess.Popen(
            [sys.executable, __file__, "--fleet", relay.url, token], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO)
        stack.callback(fleet.kill)
        pid = relay.proc.pid
        rng = random.Random(1)
        conns: dict[str, http.client.HTTPConnection] = {}
        base_rss, base_fds = _proc_status(pid)
        for step in steps:
            t = time.perf_counter()
            fleet.stdin.write(f"grow {step}\n")
            fleet.stdin.flush()
            line = fleet.stdout.readline()
            if not line:
                raise RuntimeError("the fleet stopped")
            ids = json.loads(line)
            grow_s = time.perf_counter() - t
            for sid in set(conns) - set(ids):
                conns.pop(sid).close()
            time.sleep(2.0)  # the relay's readiness probes of new sessions end
            rss, fds = _proc_status(pid)
            idle_conns = len(conns)  # client connections held while counting idle fds
            # every session once first: its client connection and SSH channel are open
            # before the timed requests (what a page that stays open has)
            _requests(relay.http_port, conns, ids, None)
            cpu = _cpu(pid)
            times = _requests(relay.http_port, conns, ids, rng, n)
            cpu = _cpu(pid) - cpu
            rss_after, fds_after = _proc_status(pid)
            times.sort()
            rows.append({
                "client_conns": len(conns), "idle_client_conns": idle_conns,
                "sessions": len(ids), "p50_ms": statistics.median(times) * 1e3,
                "p99_ms": times[int(0.99 * (len(times) - 1))] * 1e3,
                "rss_mb": rss / 1024, "rss_busy_mb": rss_after / 1024, "fds": fds,
                "fds_busy": fds_after, "relay_cpu_ms": cpu / n * 1e3, "grow_s": grow_s,
                "base_rss_mb": base_rss / 1024, "base_fds": base_fds,
            })
            print(rows[-1], flush=True)
        fleet.stdin.close()
        for conn in conns.values():
            conn.close()
    return rows


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def report(rows: list[dict], n: int, command: str, load_before: str) -> str:
    ones = [r for r in rows if r["sessions"] == rows[0]["sessions"]]
    base_p99 = statistics.mean(r["p99_ms"] for r in ones)
    top = max(rows, key=lambda r: r["sessions"])
    first = rows[0]
    added = top["sessions"] - first["sessions"]
    per_kb = (top["rss_mb"] - first["rss_mb"]) * 1024 / added if added else 0.0
    # the relay's descriptors without the benchmark's own kept client connections
    own = [r["fds"] - r["idle_client_conns"] for r in (first, top)]
    per_fd = (own[1] - own[0]) / added if added else 0.0
    lines = [
        f"\n## One relay, {first['sessions']} → {top['sessions']} live sessions — "
        f"{datetime.now():%Y-%m-%d %H:%M}\n",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
        f"before/after: {load_before} / {_load()} (shared machine). Runners: one fleet process "
        "of asyncssh clients (one SSH connection and one loopback HTTP server each); "
        f"{n} kept-alive requests per step, each to a random session; steps in the order "
        "run (the last goes back down, so load drift shows).\n",
        "| live sessions | p50 ms | p99 ms | p99 ÷ p99 at "
        f"{first['sessions']} | relay RSS MB idle / busy | relay fds idle / busy (of them, "
        "the benchmark's kept client connections) | relay CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['sessions']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['p99_ms'] / base_p99:.2f} | "
                     f"{r['rss_mb']:.1f} / {r['rss_busy_mb']:.1f} | "
                     f"{r['fds']} ({r['idle_client_conns']}) / "
                     f"{r['fds_busy']} ({r['client_conns']}) | "
                     f"{r['relay_cpu_ms']:.3f} |")
    lines += [
        "",
        f"p99 at {top['sessions']} ÷ p99 at {first['sessions']} (mean of its rows): "
        f"**{top['p99_ms'] / base_p99:.2f}** (aim ≤ 2). Memory per idle session (RSS growth "
        f"÷ sessions added, idle): **{per_kb:.0f} kB** (aim ≤ 1 MB). File descriptors per "
        f"session: **{per_fd:.2f}** (its SSH connection's socket; the proxy's channels are "
        "SSH channels inside it, not descriptors), plus one per client connection a user "
        "keeps open to the relay. Relay before the first session: "
        f"{first['base_rss_mb']:.1f} MB, {first['base_fds']} fds.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--fleet":
        asyncio.run(_fleet(sys.argv[2], sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,10,100,250,500,1",
                        help="live sessions at each measurement, comma-separated (the first "
                             "is the baseline; a smaller one than before ends sessions)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per step")
    parser.add_argument("--no-write", action="store_true", help="do not append RESULTS.md")
    args = parser.parse_args()
    steps = [int(x) for x in args.steps.split(",")]
    command = "python benchmarks/relay_scale.py" + "".join(
        f" {a}" for a in sys.argv[1:] if a != "--no-write")
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        rows = measure(steps, args.requests, Path(tmp))
    text = report(rows, args.requests, command, load_before)
    print(text)
    if not args.no_write:
        with open(REPO / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
