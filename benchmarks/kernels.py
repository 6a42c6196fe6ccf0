"""Everest kernels against a local ipykernel: start time and execute round trip.

In one run, on this machine: a local server hosting the relay, and two kernelspecs — the
venv's own ``python3`` (a local ipykernel) and an Everest kernel on the ``local`` resource
(a ``jupyter-session`` job in kernel mode, its ports bridged through the relay). Both are
driven by jupyter_client's ``AsyncKernelManager`` in this process, as jupyter_server drives
them.

- start: ``start_kernel`` until the first ``execute_reply`` of ``1+1`` (``--starts`` of each,
  alternating), Everest ÷ local (aim <= 2x);
- round trip: ``execute_request`` of ``1+1`` until its ``execute_reply`` (``--requests`` of
  each, interleaved), p50 Everest − local (aim <= +1 ms).

Appends a dated section to ``benchmarks/RESULTS.md``.

    python benchmarks/kernels.py [--starts 5] [--requests 400] [--no-record]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)

REPO = _common.REPO


def _setup(root: Path, tunnel: str) -> tuple[object, str]:
    """A server with the relay, Jupyter folders of our own, the Everest kernelspec."""
    from tests.harness.server import start_server
    from tests.kernels.lab import entry_point_dir

    data = root / "data"
    server = start_server(data, extra_args=["--plugin", "launcher.relay.plugin"],
                          env={"EVEREST_JUPYTER_TUNNEL": tunnel})
    deadline = time.monotonic() + 60
    while not (data / "relay.json").exists():
        assert time.monotonic() < deadline, "the relay did not start"
        time.sleep(0.05)
    relay_url = json.loads((data / "relay.json").read_text())["url"]
    os.environ.update(JUPYTER_DATA_DIR=str(root / "jupyter-data"),
                      JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"),
                      EVEREST_TOKEN=server.token_for("alice"))
    sys.path.insert(0, str(entry_point_dir(root / "entry-points")))
    from launcher.kernels import spec

    spec.install({"resource": "local", "everest_url": server.url, "relay_url": relay_url},
                 name="everest-local")
    return server, relay_url


async def _start(name: str):
    from jupyter_client.manager import AsyncKernelManager

    t = time.perf_counter()
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)
    await _execute(kc)
    return time.perf_counter() - t, km, kc


async def _execute(kc) -> float:
    t = time.perf_counter()
    msg_id = kc.execute("1+1", store_history=False)
    while True:
        reply = await kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            assert reply["content"]["status"] == "ok", reply
            return time.perf_counter() - t


async def _stop(km, kc) -> None:
    kc.stop_channels()
    await km.shutdown_kernel()


async def measure(starts: int, requests: int) -> dict[str, list[float]]:
    names = {"local": "python3", "everest": "everest-local"}
    out: dict[str, list[float]] = {f"start {k}": [] for k in names}
    for i in range(starts):
        for kind in (list(names) if i % 2 == 0 else list(names)[::-1]):
            seconds, km, kc = await _start(names[kind])
            out[f"start {kind}"].append(seconds)
            await _stop(km, kc)
    clients = {}
    for kind, name in names.items():
        _, km, kc = await _start(name)
        clients[kind] = (km, kc)
    for kind in names:
        out[f"rtt {kind}"] = []
    for i in range(requests + 20):
        order = list(names) if i % 2 == 0 else list(names)[::-1]
        for kind in order:
            seconds = await _execute(clients[kind][1])
            if i >= 20:  # warm-up
                out[f"rtt {kind}"].append(seconds)
        if i % 50 == 0:  # iopub piles up unread otherwise
            for _km, kc in clients.values():
                while await kc.iopub_channel.msg_ready():
                    await kc.get_iopub_msg(timeout=1)
    for km, kc in clients.values():
        await _stop(km, kc)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    args_parser = _common.parser(__doc__)
    args_parser.add_argument("--starts", type=int, default=5)
    args_parser.add_argument("--requests", type=int, default=400)
    args_parser.add_argument("--tunnel", choices=("auto", "openssh", "asyncssh"),
                             default="auto", help="the runner's SSH client")
    args = args_parser.parse_args()
    load_before = _common.load()
    with tempfile.TemporaryDirectory(prefix="kernels-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # tasks run as another account: let it pass
        server, _ = _setup(root, args.tunnel)
        try:
            out = asyncio.run(measure(args.starts, args.requests))
        finally:
            server.close()
    ms = {k: [v * 1000 for v in vals] for k, vals in out.items()}
    start_local = statistics.median(ms["start local"])
    start_everest = statistics.median(ms["start everest"])
    rtt = {k: (_pct(ms[f"rtt {k}"], 0.5), _pct(ms[f"rtt {k}"], 0.9)) for k in
           ("local", "everest")}
    lines = _common.head(f"Everest kernels: start and execute round trip (tunnel "
                         f"{args.tunnel})", load_before)
    lines += [
        "| measure | local ipykernel | Everest kernel (local resource, via the relay) | "
        "result |", "| --- | --- | --- | --- |",
        f"| start -> first execute_reply, median of {args.starts} | {start_local:.0f} ms | "
        f"{start_everest:.0f} ms | **{start_everest / start_local:.2f}x** (aim <= 2x) |",
        f"| `1+1` execute round trip, p50 of {args.requests} | {rtt['local'][0]:.2f} ms | "
        f"{rtt['everest'][0]:.2f} ms | **+{rtt['everest'][0] - rtt['local'][0]:.2f} ms** "
        "(aim <= +1 ms) |",
        f"| `1+1` execute round trip, p90 | {rtt['local'][1]:.2f} ms | "
        f"{rtt['everest'][1]:.2f} ms | +{rtt['everest'][1] - rtt['local'][1]:.2f} ms |",
        "",
        "The Everest kernel's path: jupyter_client -> the provisioner's local port (asyncio "
        "bridge in the lab's process) -> the relay's HTTP port (an upgraded connection) -> "
        "SSH channel of the runner's tunnel -> the runner's control endpoint (asyncio splice) "
        "-> the kernel's port. Its start includes submitting the job, the runner's Python "
        "start, the ticket, the tunnel and the relay's probe.",
    ]
    _common.record(args, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
