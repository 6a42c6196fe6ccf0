"""The relay's own cost, this tree's against another checkout's, side by side in one run.

Two relays — this tree's and the one in ``--baseline DIR`` (a ``git worktree`` of another
commit) — against one local server, each with one session whose runner (this tree's)
tunnels with its OpenSSH client. Kept-alive ``GET api/status`` requests alternate between
the two sessions, then 64 MB downloads do, so both relays see the same machine load; each
relay's CPU per request and per download, its runner's ``ssh`` CPU, and the wall times are
compared as ratios (this ÷ baseline). On a shared machine the ratios are what to read.

    python benchmarks/relay_ab.py --baseline DIR [--requests 2000] [--downloads 3]
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tests.harness.processes as harness_processes  # noqa: E402
import tests.harness.relay as harness_relay  # noqa: E402
from tests.harness.relay import RelayProcess  # noqa: E402
from tests.harness.runner import start_runner, stop_process_group  # noqa: E402
from tests.harness.server import start_server  # noqa: E402
from tests.session.helpers import Api, kill_under, split_url  # noqa: E402

SIZE = 64 << 20


def _relay_from(tree: Path, state: Path, everest_url: str) -> RelayProcess:
    """A relay process running the code in ``tree`` (its working directory comes first on
    ``python -m``'s path)."""
    saved = harness_relay.REPO, harness_processes.REPO
    harness_relay.REPO = harness_processes.REPO = tree
    try:
        return RelayProcess(state, everest_url).start()
    finally:
        harness_relay.REPO, harness_processes.REPO = saved


def _ssh_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm, rest = (entry / "stat").read_text().split("(", 1)[1].rsplit(")", 1)
            except OSError:
                continue
            if comm == "ssh" and int(rest.split()[1]) == pid:
                found.append(int(entry.name))
    return found


def main() -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--baseline", required=True, help="the other checkout's folder")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--downloads", type=int, default=3)
    args = parser.parse_args()
    baseline = Path(args.baseline).resolve()
    load_before = _common.load()
    sides = {"baseline": baseline, "this": REPO}
    with tempfile.TemporaryDirectory(prefix="bench-relay-ab-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        os.environ.update({k: str(root / "env" / k.lower()) for k in (
            "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")})
        server = start_server(root / "server")
        stack.callback(server.close)
        runs = {}
        for name, tree in sides.items():
            relay = _relay_from(tree, root / f"relay-{name}", server.url)
            stack.callback(relay.stop)
            api = Api(relay.url, server.token_for("alice"))
            session = api.new_session()
            workdir = root / f"task-{name}"
            proc = start_runner(workdir, relay.url, session["ticket"], "--time-limit",
                                "3600", "--idle-timeout", "0", "--tunnel=openssh")
            stack.callback(kill_under, workdir)
            stack.callback(stop_process_group, proc, signal.SIGTERM)
            base, token = split_url(api.wait_state(session["id"], "ready", 180)["url"])
            (workdir / "notebooks" / "big.bin").write_bytes(os.urandom(SIZE))
            http = requests.Session()
            http.headers["Authorization"] = f"token {token}"
            http.get(base + "api/status").raise_for_status()
            runs[name] = {"base": base, "http": http, "relay": relay.proc.pid,
                          "ssh": _ssh_children(proc.pid), "times": [], "mbs": []}
        names = list(runs)

        def cpu() -> dict[str, tuple[float, float]]:
            return {n: (_common.cpu_seconds(r["relay"]),
                        sum(_common.cpu_seconds(p) for p in r["ssh"])) for n, r in runs.items()}

        start = cpu()
        for i in range(args.requests):
            for name in (names if i % 2 == 0 else names[::-1]):
                run = runs[name]
                t = time.perf_counter()
                run["http"].get(run["base"] + "api/status")
                run["times"].append(time.perf_counter() - t)
        mid = cpu()
        for i in range(args.downloads):
            for name in (names if i % 2 == 0 else names[::-1]):
                run = runs[name]
                t = time.perf_counter()
                got = 0
                with run["http"].get(run["base"] + "files/big.bin", stream=True,
                                     timeout=120) as resp:
                    for chunk in resp.iter_content(1 << 20):
                        got += len(chunk)
                assert got == SIZE, got
                run["mbs"].append(SIZE / (time.perf_counter() - t) / 1e6)
        end = cpu()
    rows = {}
    for name in names:
        rows[name] = {
            "relay_ms": (mid[name][0] - start[name][0]) / args.requests * 1e3,
            "ssh_ms": (mid[name][1] - start[name][1]) / args.requests * 1e3,
            "median_ms": statistics.median(runs[name]["times"]) * 1e3,
            "relay_s_per_64mb": (end[name][0] - mid[name][0]) / args.downloads,
            "mb_per_s": statistics.median(runs[name]["mbs"]),
        }
    b, t = rows["baseline"], rows["this"]
    lines = _common.head("Relay A/B: this tree against a baseline checkout", load_before,
                         f"; baseline {baseline}")
    lines += ["| relay | relay CPU ms / request | runner ssh CPU ms / request | median ms / "
              "request | relay CPU s / 64 MB | download MB/s (median) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name in names:
        r = rows[name]
        lines.append(f"| {name} | {r['relay_ms']:.3f} | {r['ssh_ms']:.3f} | "
                     f"{r['median_ms']:.2f} | {r['relay_s_per_64mb']:.3f} | "
                     f"{r['mb_per_s']:.0f} |")
    lines += ["", f"This ÷ baseline: relay CPU per request **{t['relay_ms'] / b['relay_ms']:.2f}**"
              f", median request **{t['median_ms'] / b['median_ms']:.2f}**, relay CPU per "
              f"download **{t['relay_s_per_64mb'] / b['relay_s_per_64mb']:.2f}**, download "
              f"throughput **{t['mb_per_s'] / b['mb_per_s']:.2f}** ({args.requests} requests "
              f"and {args.downloads} downloads per relay, alternating)."]
    _common.record(args, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
