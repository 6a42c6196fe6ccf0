"""The orchestrator against today's ways of driving many jobs, in one run.

Starts the local server (a real process, ``--slots`` batch slots) with three tiny
applications whose commands start no Python: ``noop`` (``true``), ``nap``
(``sleep ${duration}``) and ``echo`` (``echo ${n}``, output ``n``). Then, on the same tasks:

- **ours**: :mod:`orchestrator` (``map`` for bags of tasks, DAG edges for the chain, its
  poller for the watch);
- **templet-loop**: a faithful re-creation of the Templet SDK's ``everest_engine``
  (``lib/everest.hpp``): submit with one POST, then ``while (running()) sleep(1 s)`` where
  ``running()`` GETs every submitted job once, delivers the finished ones to their actors
  (which may submit more: those are polled in the same sweep) and stops at the first error;
- **pyapi-loop**: a faithful re-creation of Everest's Python API (``everest.py``): jobs are
  POSTed at once (or deferred until their inputs' jobs are DONE), a timer GETs every
  unfinished job every 5 s (first after 3 s) and submits ready deferred jobs, and
  ``Job.result()`` sleeps 3 s between looks at the job's state;
- **concurrent.futures**, **Dask** (distributed ``LocalCluster``) and **Parsl**
  (``ThreadPoolExecutor``) running the same commands locally with as many workers as the
  server has slots (no server, no HTTP: the floor any remote execution pays on top of).

Measured: tasks per second (bags of ``--jobs`` no-op and ``--naps`` short-sleep tasks),
HTTP requests per task (counted by the server: ``GET /_local/stats``), time per hop along a
chain of dependent ``echo`` jobs, and the requests per second needed to watch 100, 1,000 and
``--watch`` long jobs in flight (submitted directly, cancelled after). Appends a dated
section to benchmarks/RESULTS.md with the command.

    python benchmarks/orchestrator.py [--jobs 1000] [--chain 100] [--watch 5000] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: flags, recording (this script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from everest_app.client import EverestClient  # noqa: E402
from orchestrator import Orchestrator  # noqa: E402
from orchestrator.extensions import Extensions  # noqa: E402
from orchestrator.poller import Poller  # noqa: E402
from tests.harness.server import ServerProcess  # noqa: E402

APPS = {
    "noop": {"inputs": {"i": {"type": "integer"}}, "outputs": {}, "command": "true"},
    "nap": {"inputs": {"duration": {"type": "number", "required": True}, "i": {"type": "integer"}},
            "outputs": {}, "command": "sleep ${duration}"},
    "echo": {"inputs": {"n": {"type": "integer", "required": True}},
             "outputs": {"n": {"type": "integer", "required": True}}, "command": "echo ${n}",
             "outputMappings": [{"param": "n", "file": "stdout", "pattern": ""}]},
}


# -- the server ----------------------------------------------------------------------------

class Server(ServerProcess):
    """The local server (:class:`tests.harness.server.ServerProcess`) with the benchmark's
    applications and one user, ``bench``."""

    def __init__(self, folder: Path, slots: int):
        apps = []
        for alias, spec in APPS.items():
            app = folder / "apps" / alias
            app.mkdir(parents=True)
            (app / "application.json").write_text(json.dumps({
                "alias": alias, "name": alias, "inputs": spec["inputs"],
                "outputs": spec["outputs"],
                "config": {"command": spec["command"],
                           "outputMappings": spec.get("outputMappings", [])}}))
            apps.append(app)
        super().__init__(folder / "data", apps=apps, slots=slots, users=("bench",))
        self.start()

    @property
    def token(self) -> str:
        return self.token_for("bench")

    def client(self, **kw: Any) -> EverestClient:
        return EverestClient(self.url, self.token, **kw)

    def requests(self) -> int:
        """Requests the server has answered so far, not counting the counter's own route."""
        with self.client() as c:
            counts = c.request("GET", "/_local/stats").json()["requests"]
        return sum(n for route, n in counts.items() if route != "GET /_local/stats")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        return _common.cpu_seconds(self.proc.pid)


def measured(server: Server, fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """Run ``fn``; its wall time, the server requests it caused, and its value."""
    before = server.requests()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    return seconds, server.requests() - before, value


# -- re-creations of today's clients -------------------------------------------------------

class TempletEngine:
    """templet::everest_engine (lib/everest.hpp), in Python over one keep-alive session.

    ``submit(app, inputs, on_done)`` POSTs at once; ``run()`` loops ``running()`` with a
    1 s sleep. ``running()`` GETs each submitted job; a DONE job's result goes to its
    ``on_done`` (the actor's task handler, which may submit more: appended to the list and
    polled within the same sweep, as with the C++ std::list); FAILED or CANCELLED stops
    the engine with an error (Templet's behaviour).
    """

    DELAY = 1.0

    def __init__(self, client: EverestClient, stop: threading.Event | None = None):
        self.client = client
        self.submitted: list[tuple[str, Callable[[dict], None] | None]] = []
        # not Templet's: lets the benchmark halt a sweep half-way, so a stopped loop sends
        # no request into the next measurement
        self.stop = stop or threading.Event()

    def submit(self, app: str, inputs: dict, on_done: Callable[[dict], None] | None = None):
        job = self.client.submit(app, inputs, name="templet-task")
        self.submitted.append((job.id, on_done))

    def running(self) -> bool:
        i = 0
        while i < len(self.submitted) and not self.stop.is_set():
            job_id, on_done = self.submitted[i]
            job = self.client.job(job_id)
            if job.state in ("FAILED", "CANCELLED"):
                raise RuntimeError(f"TASK_FAILED_OR_CANCELLED: {job_id}")
            if job.state == "DONE":
                if on_done is not None:
                    on_done(job.result or {})
                del self.submitted[i]
            else:
                i += 1
        return bool(self.submitted)

    def run(self) -> None:
        while self.running():
            time.sleep(self.DELAY)


class PyApiSession:
    """everest.py's Session: POST at once or defer; a 5 s timer checks every job."""

    def __init__(self, client: EverestClient):
        self.client = client
        self.submitted: list[dict] = []
        self.deferred: list[dict] = []
        self.lock = threading.Lock()
        self.closed = False  # set under the lock: no check runs or re-arms after close()
        self.timer = threading.Timer(3, self._check)
        self.timer.daemon = True
        self.timer.start()

    def run(self, app: str, inputs: dict) -> dict:
        job = {"app": app, "inputs": inputs, "id": None, "state": None, "result": None}
        with self.lock:
            if self._ready(job):
                self._submit(job)
                self.submitted.append(job)
            else:
                self.deferred.append(job)
        return job

    @staticmethod
    def _ready(job: dict) -> bool:
        return all(v[0]["state"] == "DONE" and v[0]["result"] is not None
                   for v in job["inputs"].values() if isinstance(v, tuple))

    def _submit(self, job: dict) -> None:
        inputs = {k: (v[0]["result"][v[1]] if isinstance(v, tuple) else v)
                  for k, v in job["inputs"].items()}
        created = self.client.submit(job["app"], inputs, name="python-api-job")
        job["id"], job["state"] = created.id, str(created.state)

    def _check(self) -> None:
        try:
            with self.lock:
                if self.closed:
                    return
                for job in list(self.submitted):
                    if job["state"] in ("DONE", "FAILED", "CANCELLED"):
                        self.submitted.remove(job)
                        continue
                    status = self.client.job(job["id"])
                    job["state"] = str(status.state)
                    if job["state"] in ("DONE", "FAILED"):
                        job["result"] = status.result
                for job in list(self.deferred):
                    if self._ready(job):
                        self.deferred.remove(job)
                        self._submit(job)
                        self.submitted.append(job)
        finally:
            with self.lock:  # everest.py re-arms here even after close(): we must not
                if not self.closed:
                    self.timer = threading.Timer(5, self._check)
                    self.timer.daemon = True
                    self.timer.start()

    @staticmethod
    def result(job: dict) -> dict:
        while job["state"] != "DONE":
            if job["state"] in ("FAILED", "CANCELLED"):
                raise RuntimeError(f"job {job['id']} {job['state']}")
            time.sleep(3)
        return job["result"]

    def close(self) -> None:
        """Stop for real: a check under way finishes first (the lock), none follows."""
        with self.lock:
            self.closed = True
            self.timer.cancel()


# -- bags of tasks -------------------------------------------------------------------------

def bag_ours(server: Server, app: str, inputs: list[dict]) -> Callable[[], Any]:
    def go():
        with Orchestrator(server.client(), progress=False) as orch:
            return orch.map(app, inputs)
    return go


def bag_templet(server: Server, app: str, inputs: list[dict]) -> Callable[[], Any]:
    def go():
        with server.client() as client:
            engine = TempletEngine(client)
            for item in inputs:
                engine.submit(app, item)
            engine.run()
    return go


def bag_pyapi(server: Server, app: str, inputs: list[dict]) -> Callable[[], Any]:
    def go():
        with server.client() as client:
            session = PyApiSession(client)
            try:
                jobs = [session.run(app, item) for item in inputs]
                return [session.result(j) for j in jobs]
            finally:
                session.close()
    return go


def command_for(app: str, item: dict) -> list[str]:
    return {"noop": ["true"], "nap": ["sleep", str(item.get("duration", 0))],
            "echo": ["echo", str(item.get("n", 0))]}[app]


def run_command(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def bag_cf(workers: int, app: str, inputs: list[dict]) -> Callable[[], Any]:
    def go():
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run_command, [command_for(app, i) for i in inputs]))
    return go


class DaskRunner:
    def __init__(self, workers: int):
        from distributed import Client, LocalCluster

        t = time.perf_counter()
        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                    dashboard_address=None, silence_logs=40)
        self.client = Client(self.cluster)
        self.startup = time.perf_counter() - t

    def bag(self, app: str, inputs: list[dict]) -> Callable[[], Any]:
        return lambda: self.client.gather(self.client.map(
            run_command, [command_for(app, i) for i in inputs], pure=False))

    def chain(self, hops: int) -> Callable[[], Any]:
        def go():
            prev = self.client.submit(run_command, ["echo", "0"], pure=False)
            for _ in range(hops - 1):
                prev = self.client.submit(_echo_next, prev, pure=False)
            assert int(prev.result()) == 0
            return hops
        return go

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def _echo_next(previous: str) -> str:
    return run_command(["echo", str(int(previous))])


class ParslRunner:
    def __init__(self, workers: int, run_dir: Path):
        import parsl
        from parsl.config import Config
        from parsl.executors import ThreadPoolExecutor

        t = time.perf_counter()
        self.parsl = parsl
        self.dfk = parsl.load(Config(executors=[ThreadPoolExecutor(max_threads=workers)],
                                     run_dir=str(run_dir)))
        self.app = parsl.python_app(_parsl_run)
        self.next = parsl.python_app(_parsl_next)
        self.startup = time.perf_counter() - t

    def bag(self, app: str, inputs: list[dict]) -> Callable[[], Any]:
        return lambda: [f.result() for f in [self.app(command_for(app, i)) for i in inputs]]

    def chain(self, hops: int) -> Callable[[], Any]:
        def go():
            prev = self.app(["echo", "0"])
            for _ in range(hops - 1):
                prev = self.next(prev)  # a future as argument: Parsl waits for it
            assert int(prev.result()) == 0
            return hops
        return go

    def close(self) -> None:
        self.dfk.cleanup()
        self.parsl.clear()


def _parsl_run(argv):
    import subprocess
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _parsl_next(previous):
    import subprocess
    return subprocess.run(["echo", str(int(previous))], capture_output=True, text=True,
                          check=True).stdout


# -- chains ----------------------------------------------------------------------------------

def chain_ours(server: Server, hops: int) -> Callable[[], Any]:
    def go():
        with Orchestrator(server.client(), progress=False) as orch:
            prev = orch.submit("echo", {"n": 0})
            for _ in range(hops - 1):
                prev = orch.submit("echo", {"n": prev.output("n")})
            assert prev.result() == {"n": 0}
            return orch.stats["done"]
    return go


def chain_templet(server: Server, hops: int) -> Callable[[], Any]:
    def go():
        with server.client() as client:
            engine = TempletEngine(client)
            done = [0]

            def on_done(result: dict) -> None:  # the actor's handler submits the next task
                done[0] += 1
                if done[0] < hops:
                    engine.submit("echo", {"n": result["n"]}, on_done)

            engine.submit("echo", {"n": 0}, on_done)
            engine.run()
            return done[0]
    return go


def chain_pyapi(server: Server, hops: int) -> Callable[[], Any]:
    def go():
        with server.client() as client:
            session = PyApiSession(client)
            try:
                jobs = [session.run("echo", {"n": 0})]
                for _ in range(hops - 1):
                    jobs.append(session.run("echo", {"n": (jobs[-1], "n")}))  # deferred
                assert session.result(jobs[-1]) == {"n": 0}
                return sum(j["state"] == "DONE" for j in jobs)
            finally:
                session.close()
    return go


def chain_floor(server: Server, hops: int) -> Callable[[], Any]:
    """The best any poller could do: submit, then GET without pausing until DONE."""
    def go():
        with server.client() as client:
            n = 0
            for _ in range(hops):
                job = client.submit("echo", {"n": n})
                while not job.is_done:
                    job = client.job(job.id)
                n = job.result["n"]
            return hops
    return go


def chain_cf(hops: int) -> Callable[[], Any]:
    def go():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            out = pool.submit(run_command, ["echo", "0"]).result()
            for _ in range(hops - 1):
                out = pool.submit(_echo_next, out).result()
            assert int(out) == 0
            return hops
    return go


# -- watching jobs in flight -----------------------------------------------------------------

def submit_long_jobs(server: Server, n: int) -> list[str]:
    with server.client(pool_size=8) as client, \
            concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = pool.map(lambda i: client.submit("nap", {"duration": 3600, "i": i},
                                                name="watched").id, range(n))
        return list(jobs)


def cancel_jobs(server: Server, ids: list[str]) -> None:
    with server.client(pool_size=8) as client, \
            concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(client.cancel, ids))


def watch_rate(server: Server, who: str, ids: list[str], warmup: float,
               window: float) -> tuple[float, float]:
    """Requests per second the server sees while ``who`` watches ``ids`` (none finishing),
    and the share of one CPU the server spends answering them."""
    stop = threading.Event()
    client = server.client()

    def templet():
        engine = TempletEngine(client, stop)
        engine.submitted = [(i, None) for i in ids]
        while not stop.is_set() and engine.running():
            stop.wait(TempletEngine.DELAY)

    def pyapi():
        session = PyApiSession(client)
        session.submitted = [{"id": i, "state": "READY", "result": None} for i in ids]
        stop.wait()
        session.close()

    if who == "ours":
        poller = Poller(client, extensions=Extensions.of(client))  # as Orchestrator does
        for job_id in ids:
            poller.watch(job_id, lambda job: None, lambda job_id, exc: None, group="nap")
        runner = None
    else:
        runner = threading.Thread(target=templet if who == "templet-loop" else pyapi,
                                  daemon=True)
        runner.start()
    time.sleep(warmup)
    before, cpu = server.requests(), server.cpu_seconds()
    time.sleep(window)
    cpu = (server.cpu_seconds() - cpu) / window
    rate = (server.requests() - before - 1) / window  # minus the counter read itself
    stop.set()
    if runner is None:
        alive = not poller.close(timeout=60)
    else:
        runner.join(60)
        alive = runner.is_alive()
    client.close()
    if alive:
        raise RuntimeError(f"{who}'s loop did not stop; the next counts would include it")
    return rate, cpu


def quiet(server: Server, seconds: float = 2.0) -> None:
    """Fail unless nothing talks to the server for ``seconds``: every loop measured before
    has really stopped, so none leaks requests into the next count."""
    before = server.requests()
    time.sleep(seconds)
    leaked = server.requests() - before - 1  # minus the counter read itself
    if leaked > 0:
        raise RuntimeError(f"{leaked} requests in {seconds:g} s after a loop stopped")


# -- the run ---------------------------------------------------------------------------------

def main() -> int:
    ap = _common.parser(__doc__)
    ap.add_argument("--jobs", type=int, default=1000, help="no-op tasks in the bag")
    ap.add_argument("--naps", type=int, default=200, help="short-sleep tasks in the bag")
    ap.add_argument("--nap", type=float, default=0.2, help="seconds per short sleep")
    ap.add_argument("--chain", type=int, default=100, help="hops of the dependent chain")
    ap.add_argument("--slow-chain", type=int, default=8,
                    help="hops for the 1 s / 5 s polling loops (they take that long per hop)")
    ap.add_argument("--watch", type=int, default=5000, help="largest number of jobs watched")
    ap.add_argument("--window", type=float, default=10.0, help="seconds of each watch count")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.naps, args.chain, args.slow_chain = 100, 20, 10, 2
        args.watch, args.window = 300, 4.0

    rows: dict[str, dict[str, Any]] = {}
    watch: dict[int, dict[str, tuple[float, float]]] = {}
    floor = (0.0, 0.0)
    list_bytes: dict[int, int] = {}
    startup: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), args.slots)
        try:
            bags = {"noop": [{"i": i} for i in range(args.jobs)],
                    "nap": [{"duration": args.nap, "i": i} for i in range(args.naps)]}
            for who, make in (("ours", bag_ours), ("templet-loop", bag_templet),
                              ("pyapi-loop", bag_pyapi)):
                for app, inputs in bags.items():
                    quiet(server)
                    seconds, reqs, _ = measured(server, make(server, app, inputs))
                    rows.setdefault(who, {})[app] = (len(inputs) / seconds, reqs / len(inputs))
                    print(f"{who:14} {app:5} {len(inputs) / seconds:8.1f} tasks/s "
                          f"{reqs / len(inputs):6.2f} requests/task", flush=True)
                hops = args.chain if who == "ours" else args.slow_chain
                chain = {"ours": chain_ours, "templet-loop": chain_templet,
                         "pyapi-loop": chain_pyapi}[who](server, hops)
                quiet(server)
                seconds, reqs, ran = measured(server, chain)
                assert ran == hops, (who, ran)
                rows[who]["chain"] = (seconds / hops * 1000, reqs / hops, hops)
                print(f"{who:14} chain {seconds / hops * 1000:8.1f} ms/hop over {hops} hops, "
                      f"{reqs / hops:.2f} requests/hop", flush=True)
                if who == "ours":  # right after ours, under the same load
                    seconds, reqs, _ = measured(server, chain_floor(server, args.chain))
                    floor = (seconds / args.chain * 1000, reqs / args.chain)
                    print(f"{'busy-poll':14} chain {floor[0]:8.1f} ms/hop, {floor[1]:.2f} "
                          "requests/hop", flush=True)

            dask, parsl = DaskRunner(args.slots), ParslRunner(args.slots, Path(tmp) / "parsl")
            startup = {"dask": dask.startup, "parsl": parsl.startup}
            local = {"concurrent.futures": (lambda a, i: bag_cf(args.slots, a, i),
                                            lambda h: chain_cf(h)),
                     "dask": (dask.bag, dask.chain), "parsl": (parsl.bag, parsl.chain)}
            try:
                for who, (bag, chain) in local.items():
                    for app, inputs in bags.items():
                        t = time.perf_counter()
                        bag(app, inputs)()
                        rows.setdefault(who, {})[app] = (
                            len(inputs) / (time.perf_counter() - t), 0.0)
                    t = time.perf_counter()
                    assert chain(args.chain)() == args.chain
                    rows[who]["chain"] = ((time.perf_counter() - t) / args.chain * 1000, 0.0,
                                          args.chain)
                    print(f"{who:14} noop {rows[who]['noop'][0]:8.1f} tasks/s, chain "
                          f"{rows[who]['chain'][0]:.1f} ms/hop", flush=True)
            finally:
                dask.close()
                parsl.close()

            sizes = sorted({min(100, args.watch), min(1000, args.watch), args.watch})
            ids: list[str] = []
            for size in sizes:
                ids += submit_long_jobs(server, size - len(ids))
                with server.client() as c:
                    list_bytes[size] = len(c.request("GET", "/api/jobs").content)
                for who in ("ours", "templet-loop", "pyapi-loop"):
                    # ours: let the list interval finish its ramp (it starts at 10 ms)
                    warmup = {"ours": 8.0, "templet-loop": 3.0, "pyapi-loop": 6.0}[who]
                    window = max(args.window, 10.0) if who == "pyapi-loop" else args.window
                    quiet(server)
                    watch.setdefault(size, {})[who] = watch_rate(server, who, ids, warmup,
                                                                 window)
                    rate, cpu = watch[size][who]
                    print(f"watch {size:5} {who:14} {rate:8.1f} requests/s, server CPU "
                          f"{cpu:.0%}", flush=True)
            cancel_jobs(server, ids)
        finally:
            server.close()
    report(args, rows, watch, list_bytes, startup, floor)
    return 0


def report(args: argparse.Namespace, rows: dict, watch: dict, list_bytes: dict,
           startup: dict, floor: tuple[float, float]) -> None:
    ours = rows["ours"]
    lines = [
        f"## Orchestrator vs today's clients and local executors — "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Command: `{_common.command()}`  ",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; local server "
        f"with {args.slots} slots; local executors with {args.slots} workers. Tasks start no "
        "Python (`true`, `sleep`, `echo`), so the numbers are orchestration costs.",
        "",
        f"| system | no-op tasks/s ({args.jobs}) | requests/task | "
        f"{args.nap:g} s sleeps tasks/s ({args.naps}) | requests/task | chain ms/hop | "
        "requests/hop |",
        "|---|---|---|---|---|---|---|",
    ]
    for who, r in rows.items():
        http = who in ("ours", "templet-loop", "pyapi-loop")
        req = (lambda v: f"{v:.2f}") if http else (lambda v: "—")
        lines.append(
            f"| {who} | {r['noop'][0]:.1f} | {req(r['noop'][1])} | {r['nap'][0]:.1f} | "
            f"{req(r['nap'][1])} | {r['chain'][0]:.1f} ({r['chain'][2]} hops) | "
            f"{req(r['chain'][1])} |")
    biggest = max(watch) if watch else None
    lines += ["", f"Chain floor (submit, then GET without pause until DONE, one job at a "
              f"time, same server, right after ours): {floor[0]:.1f} ms/hop with "
              f"{floor[1]:.2f} requests/hop; ours adds {ours['chain'][0] - floor[0]:.1f} "
              "ms/hop.", ""]
    lines += ["Ratios (above 1: ours is better):", "",
              "| vs | no-op tasks/s, ours ÷ it | sleep tasks/s, ours ÷ it | "
              "requests/task, it ÷ ours | hop time, it ÷ ours | "
              f"watch requests/s at {biggest} jobs, it ÷ ours |",
              "|---|---|---|---|---|---|"]
    for who, r in rows.items():
        if who == "ours":
            continue
        http = who in ("templet-loop", "pyapi-loop")
        req = f"{r['noop'][1] / ours['noop'][1]:.2f}" if http else "—"
        watched = (f"{watch[biggest][who][0] / watch[biggest]['ours'][0]:.0f}"
                   if http and biggest else "—")
        lines.append(f"| {who} | {ours['noop'][0] / r['noop'][0]:.2f} | "
                     f"{ours['nap'][0] / r['nap'][0]:.2f} | {req} | "
                     f"{r['chain'][0] / ours['chain'][0]:.2f} | {watched} |")
    lines += ["", "Watching jobs in flight (long sleeps, none finishing; counted over "
              f"{args.window:g} s after a warm-up): requests per second, and the share of one "
              "CPU the server spends answering them. A list answer holds all of the user's "
              "jobs, finished ones too (the benchmark's earlier phases included):", "",
              "| jobs in flight | ours | templet-loop | pyapi-loop | bytes per "
              "`GET /api/jobs` |", "|---|---|---|---|---|"]
    for size, w in watch.items():
        cells = [f"{w[who][0]:.2f} req/s, {w[who][1]:.1%} CPU"
                 for who in ("ours", "templet-loop", "pyapi-loop")]
        lines.append(f"| {size} | " + " | ".join(cells) + f" | {list_bytes[size]:,} |")
    if startup:
        lines += ["", f"Local executors' start-up (not in the rates): Dask LocalCluster "
                  f"{startup['dask']:.1f} s, Parsl {startup['parsl']:.1f} s."]
    _common.record(args, "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
