"""JupyterHub benchmark: EverestSpawner against JupyterHub's own local spawner, and the
hub's load on Everest as servers are added.

In one run, on this machine (a real ``jupyterhub`` with configurable-http-proxy each):

1. **Spawn until usable.** ``POST /hub/api/users/<u>/server`` until the server answers
   ``api/status`` through the hub's proxy, with EverestSpawner (a ``jupyter-session`` job on
   the local server, ``jupyterhub-singleuser`` tunnelled back through the relay) and with
   ``SimpleLocalProcessSpawner`` (``jupyterhub-singleuser`` started by the hub itself, the
   LocalProcessSpawner without system users). Spawns alternate between the two hubs, so
   both see the same machine load; each server is stopped before the next spawn. Aim:
   within 1.25x.
2. **Requests to Everest per minute** while 1, 5, 10 and 20 servers run, with the
   spawner's default intervals (``poll_interval`` 30 s, ``status_interval`` 10 s), counted
   by the local server per route (the relay's token checks left out). Aim: flat — one job
   listing per interval for the whole hub, whatever the number of servers.

Appends a dated section to ``benchmarks/RESULTS.md``.

    python benchmarks/hub.py [--runs 5] [--window 60] [--no-write]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hub.helpers import HubApi, HubStack  # noqa: E402
from tests.session.helpers import wait_for  # noqa: E402

LOCAL_SPAWNER = """
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]
c.SimpleLocalProcessSpawner.home_dir_template = {home!r} + "/{{username}}"
"""
DEFAULT_INTERVALS = """
c.EverestSpawner.status_interval = 10.0
c.EverestSpawner.poll_interval = 30
"""


def spawn_until_usable(api: HubApi, user: str, interval: float = 0.05) -> float:
    """Seconds from the spawn request to ``api/status`` answering through the proxy (asked
    every ``interval`` s: each ask is a request the hub answers too)."""
    api.user(user)
    auth = {"Authorization": f"token {api.hub.driver_token}"}
    url = api.proxied(f"/user/{user}/api/status")
    started = time.perf_counter()
    resp = api.spawn(user)
    assert resp.status_code in (201, 202), resp.text

    def usable() -> bool:
        try:
            return requests.get(url, headers=auth, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_for(usable, 300, f"{user}'s server", interval=interval)
    return time.perf_counter() - started


def everest_requests(stack: HubStack) -> int:
    """Requests the local server has answered, the relay's token checks left out."""
    stats = requests.get(stack.server.url + "/_local/stats", timeout=10).json()["requests"]
    return sum(n for route, n in stats.items() if "auth" not in route)


def bench_spawn(folder: Path, runs: int) -> dict[str, list[float]]:
    everest = HubStack(folder / "everest", extra_config=DEFAULT_INTERVALS)
    local = HubStack(folder / "local", extra_config=LOCAL_SPAWNER.format(
        home=str(folder / "homes"), python=sys.executable))
    (folder / "homes").mkdir(parents=True)
    times: dict[str, list[float]] = {"everest": [], "local": []}
    try:
        everest.start()
        local.start()
        for i in range(runs + 1):  # the first round warms both up and is not counted
            for name, stack in (("everest", everest), ("local", local)):
                user = f"u{i}"
                seconds = spawn_until_usable(stack.api, user)
                stack.api.stop(user)
                if i:
                    times[name].append(seconds)
                print(f"  {name:8s} run {i}: {seconds:.2f} s", flush=True)
    finally:
        everest.close()
        local.close()
    return times


def bench_load(folder: Path, window: float) -> list[tuple[int, float]]:
    stack = HubStack(folder / "load", service_slots=32, extra_config=DEFAULT_INTERVALS)
    rates = []
    try:
        stack.start()
        running = 0
        for target in (1, 5, 10, 20):
            users = [f"s{n}" for n in range(running, target)]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda u: spawn_until_usable(stack.api, u, 0.5), users))
            running = target
            time.sleep(5)  # the spawns' own requests settle
            before = everest_requests(stack)
            time.sleep(window)
            per_minute = (everest_requests(stack) - before) * 60.0 / window
            rates.append((target, per_minute))
            print(f"  {target:2d} servers: {per_minute:.1f} requests/min", flush=True)
    finally:
        stack.close()
    return rates


def main() -> int:
    parser = _common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds the requests are counted for at each server count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        print("spawn until usable (EverestSpawner vs SimpleLocalProcessSpawner):")
        times = bench_spawn(Path(tmp), args.runs)
        print("requests to Everest per minute:")
        rates = bench_load(Path(tmp), args.window)
    ev, lo = statistics.median(times["everest"]), statistics.median(times["local"])
    lines = [
        f"## Hub: EverestSpawner vs local spawner, Everest load ({datetime.now():%Y-%m-%d %H:%M})",
        "",
        f"`{_common.command()}`",
        "",
        "| spawn until usable (median of runs) | seconds |",
        "| --- | --- |",
        f"| EverestSpawner (job, runner, relay tunnel) | {ev:.2f} |",
        f"| SimpleLocalProcessSpawner | {lo:.2f} |",
        f"| ratio | **{ev / lo:.2f}x** |",
        "",
        "| servers running | requests to Everest per minute |",
        "| --- | --- |",
        *[f"| {n} | {r:.1f} |" for n, r in rates],
        "",
    ]
    _common.record(args, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
