"""Tunnel over a WebSocket vs over plain SSH: what the HTTP(S)-only route costs.

In one run, on this machine: one relay, and for each SSH client of the runner (OpenSSH's
``ssh``, asyncssh) two sessions, one whose tunnel dials the relay's SSH port
(``--route ssh``) and one whose SSH travels in a WebSocket on the relay's HTTP port
(``--route websocket``). Through each tunnel: HTTP keep-alive request latency
(``GET api/status``), WebSocket round trips (a key echoed by a terminal's pty) and download
throughput (a 64 MB file, ``--downloads`` rounds; median MB/s) with the CPU the relay, the
runner's ``ssh`` and its ProxyCommand spend per GB moved (the steadier measure on a shared
machine). Requests and downloads to the paths alternate so all see the same machine load.
Reported as ratios WebSocket ÷ SSH per client.

Appends a dated section to ``benchmarks/RESULTS.md``.

    python benchmarks/tunnel_route.py [--requests 400] [--downloads 5] [--no-record]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.launch import _echo_socket  # noqa: E402
from benchmarks.tunnel_profile import children, cmdline, comm  # noqa: E402
from tests.harness.relay import RelayProcess  # noqa: E402
from tests.harness.runner import start_runner, stop_process_group  # noqa: E402
from tests.harness.server import start_server  # noqa: E402
from tests.session.helpers import Api, kill_under, split_url  # noqa: E402

CLIENTS = ("openssh", "asyncssh")
ROUTES = ("ssh", "websocket")
SIZE = 64 << 20


def _interleaved(calls: list, n: int, warmup: int = 10) -> list[list[float]]:
    """``n`` rounds of one call per path, the order rotating each round; seconds per call."""
    rounds = []
    for i in range(n + warmup):
        times = [0.0] * len(calls)
        order = list(range(len(calls)))
        order = order[i % len(order):] + order[:i % len(order)]
        for j in order:
            t = time.perf_counter()
            calls[j]()
            times[j] = time.perf_counter() - t
        if i >= warmup:
            rounds.append(times)
    return rounds


def _download(base: str, token: str) -> float:
    """One download of ``big.bin``: seconds."""
    t = time.perf_counter()
    got = 0
    with requests.get(base + "files/big.bin", stream=True, timeout=300,
                      headers={"Authorization": f"token {token}"}) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(1 << 20):
            got += len(chunk)
    assert got == SIZE, (got, SIZE)
    return time.perf_counter() - t


def _processes(relay_pid: int, runner_pid: int) -> dict[str, list[int]]:
    """The processes a path's bytes cross: the relay, the runner (asyncssh's Python), its
    ``ssh`` and its ProxyCommand (OpenSSH over the WebSocket route)."""
    out: dict[str, list[int]] = {"relay": [relay_pid], "runner": [runner_pid], "ssh": [],
                                 "proxy": []}
    for kid in children(runner_pid):
        if comm(kid) == "ssh":
            out["ssh"].append(kid)
        elif "runner_websocket" in cmdline(kid):
            out["proxy"].append(kid)
    return out


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    used = {}
    for name, group in pids.items():
        used[name] = 0.0
        for pid in group:
            try:
                used[name] += _common.cpu_seconds(pid)
            except OSError:
                pass
    return used


def measure(n: int, downloads: int, root: Path) -> dict[str, dict[str, float]]:
    with ExitStack() as stack:
        server = start_server(root / "server")
        stack.callback(server.close)
        relay = RelayProcess(root / "relay", server.url).start()
        stack.callback(relay.stop)
        api = Api(relay.url, server.token_for("alice"))
        paths = {}
        runners = {}
        for client in CLIENTS:
            for route in ROUTES:
                session = api.new_session()
                workdir = root / f"{client}-{route}"
                proc = start_runner(workdir, relay.url, session["ticket"], "--time-limit",
                                    "3600", "--idle-timeout", "0", f"--tunnel={client}",
                                    f"--route={route}")
                stack.callback(kill_under, workdir)
                stack.callback(stop_process_group, proc, signal.SIGTERM)
                paths[(client, route)] = (session["id"], workdir)
                runners[(client, route)] = proc.pid
        names = list(paths)
        bases = []
        for name in names:
            sid, workdir = paths[name]
            base, token = split_url(api.wait_state(sid, "ready", 300)["url"])
            (workdir / "notebooks" / "big.bin").write_bytes(os.urandom(SIZE))
            bases.append((base, token))
        http = []
        for base, token in bases:
            kept = requests.Session()
            kept.headers["Authorization"] = f"token {token}"
            kept.get(base + "api/status").raise_for_status()
            http.append(lambda kept=kept, url=base + "api/status": kept.get(url))
        http_rounds = _interleaved(http, n)
        sockets = [_echo_socket(base, token) for base, token in bases]

        def echo(ws) -> None:
            ws.send(json.dumps(["stdin", "x"]))
            while json.loads(ws.recv()) != ["stdout", "x"]:
                pass

        try:
            ws_rounds = _interleaved([lambda ws=ws: echo(ws) for ws in sockets], max(100, n // 2))
        finally:
            for ws in sockets:
                ws.close()
        pids = [_processes(relay.proc.pid, runners[name]) for name in names]
        seconds: list[list[float]] = [[] for _ in names]
        cpu: list[dict[str, float]] = [dict.fromkeys(pids[0], 0.0) for _ in names]
        _download(*bases[0])  # warm-up (the file into the page cache)
        for r in range(downloads):
            for j in range(r, r + len(names)):  # the order rotates each round
                i = j % len(names)
                before = _cpu(pids[i])
                seconds[i].append(_download(*bases[i]))
                after = _cpu(pids[i])
                for key in after:
                    cpu[i][key] += after[key] - before[key]
        gb = downloads * SIZE / 1e9
        results = {}
        for i, name in enumerate(names):
            summary_kind = "tunnel up (ssh)" in (paths[name][1] / "session.log").read_text()
            assert summary_kind == (name[0] == "openssh"), f"{name}: wrong SSH client"
            results["/".join(name)] = {
                "http_median_ms": statistics.median(r[i] for r in http_rounds) * 1e3,
                "ws_median_ms": statistics.median(r[i] for r in ws_rounds) * 1e3,
                "mb_per_s": SIZE / statistics.median(seconds[i]) / 1e6,
                **{f"{key}_s_per_gb": used / gb for key, used in cpu[i].items()},
            }
        return results


def _total(r: dict[str, float]) -> float:
    return sum(v for k, v in r.items() if k.endswith("_s_per_gb"))


def report(results: dict[str, dict[str, float]], command: str, load_before: str) -> str:
    lines = [
        f"\n## Tunnel over a WebSocket vs over SSH — {datetime.now():%Y-%m-%d %H:%M}\n",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
        f"before/after: {load_before} / {_common.load()} (shared machine). Relay on plain HTTP "
        "(no TLS) on loopback.\n",
        "| runner's SSH client / route | HTTP keep-alive median ms | WebSocket echo median "
        "ms | download MB/s (median) | CPU s per GB: relay / runner / ssh / ProxyCommand |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        cpu = " / ".join(f"{r[f'{key}_s_per_gb']:.2f}" for key in
                         ("relay", "runner", "ssh", "proxy"))
        lines.append(f"| {name} | {r['http_median_ms']:.2f} | {r['ws_median_ms']:.2f} | "
                     f"{r['mb_per_s']:.0f} | {cpu} |")
    lines += ["", "| SSH client | latency WebSocket ÷ SSH (HTTP) | (WebSocket echo) | "
              "throughput WebSocket ÷ SSH | tunnel CPU per GB WebSocket ÷ SSH |",
              "| --- | --- | --- | --- | --- |"]
    for client in CLIENTS:
        s, w = results[f"{client}/ssh"], results[f"{client}/websocket"]
        lines.append(f"| {client} | **{w['http_median_ms'] / s['http_median_ms']:.2f}** | "
                     f"{w['ws_median_ms'] / s['ws_median_ms']:.2f} | "
                     f"**{w['mb_per_s'] / s['mb_per_s']:.2f}** | "
                     f"{_total(w) / _total(s):.2f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--requests", type=int, default=400, help="HTTP requests per path")
    parser.add_argument("--downloads", type=int, default=5, help="64 MB downloads per path")
    args = parser.parse_args()
    command = _common.command()
    load_before = _common.load()
    with tempfile.TemporaryDirectory(prefix="bench-route-") as tmp:
        root = Path(tmp)
        os.environ.update({k: str(root / "env" / k.lower()) for k in (
            "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")})
        results = measure(args.requests, args.downloads, root)
    text = report(results, command, load_before)
    _common.record(args, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
