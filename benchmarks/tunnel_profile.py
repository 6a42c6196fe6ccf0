"""Where the tunnel's time goes: py-spy on the relay and the runner while requests flow.

One relay, one session (runner's SSH client and route chosen on the command line); then,
each under ``py-spy record`` of the relay, the runner and its ``ssh``/ProxyCommand
children: ``--requests`` kept-alive ``GET api/status`` through the tunnel, then a 64 MB
download. Prints per phase and process the frames that hold most samples (self time and
inclusive), and the phase's wall time, so a benchmark's note can say what the remaining gap
is made of. Needs ``py-spy`` (``pip install py-spy``); run as root or with ptrace allowed.

    python benchmarks/tunnel_profile.py [--tunnel openssh|asyncssh] [--route ssh|websocket]
        [--requests 2000] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.relay import RelayProcess  # noqa: E402
from tests.harness.runner import start_runner, stop_process_group  # noqa: E402
from tests.harness.server import start_server  # noqa: E402
from tests.session.helpers import Api, kill_under, split_url  # noqa: E402

SIZE = 64 << 20
_IDLE = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)",
         "ThreadedChildWatcher._do_waitpid", "Condition.wait", "Event.wait")


def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (Linux /proc)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for kid in parents.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize(raw: Path, top: int = 12) -> str:
    """Top frames of a py-spy ``--format raw`` (collapsed stacks) file."""
    self_counts: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = busy = 0
    if not raw.exists():
        return "  (no samples)"
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        # drop the process/thread pseudo frames py-spy puts first
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or frames[-1].startswith(_IDLE):
            continue  # waiting, not working (py-spy cannot tell idle threads here)
        busy += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    busy = busy or 1
    lines = [f"  {total} samples, {busy} busy; share of busy samples, self:"]
    for f, n in self_counts.most_common(top):
        lines.append(f"    {100 * n / busy:5.1f}%  {f}")
    lines.append("  inclusive (non-trivial):")
    shown = 0
    for f, n in incl.most_common(80):
        if f.startswith(("Thread.", "_worker", "_run_code")) or any(s in f for s in (
                "run_forever", "_run_once", "<module>", "run (asyncio", "_run (asyncio/events",
                "main (", "run_until_complete", "run (launcher/relay/service.py")):
            continue
        lines.append(f"    {100 * n / busy:5.1f}%  {f}")
        shown += 1
        if shown >= top:
            break
    return "\n".join(lines)


class Recorder:
    """``py-spy record`` of some processes for the length of a ``with`` block."""

    def __init__(self, out: Path, phase: str, pids: dict[str, int], spy: bool = True,
                 count: int = 1):
        self.out, self.phase, self.pids, self.spy, self.count = out, phase, pids, spy, count
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.unit = "request" if count > 1 else "phase"

    def __enter__(self) -> Recorder:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        for name, pid in self.pids.items():
            if not self.spy or not comm(pid).startswith("python"):
                continue  # ssh: C, not sampled (its CPU is counted)
            path = self.out / f"{self.phase}-{name}.txt"
            proc = subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500",
                 "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((name, proc, path))
        if self.procs:
            time.sleep(1.0)  # py-spy attaches
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t
        for _, proc, _ in self.procs:
            proc.send_signal(signal.SIGINT)
        for _, proc, _ in self.procs:
            proc.wait(60)
        print(f"\n### {self.phase}: {self.wall:.2f} s wall")
        for name, pid in self.pids.items():
            used = cpu_seconds(pid) - self.cpu[name]
            print(f"- {name} ({comm(pid)}): {used:.2f} s CPU, "
                  f"{1e3 * used / self.count:.3f} ms per {self.unit}")
        for name, _, path in self.procs:
            print(f"\n{self.phase} / {name}:")
            print(summarize(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunnel", default="openssh", choices=("openssh", "asyncssh"))
    parser.add_argument("--route", default="ssh", choices=("ssh", "websocket"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", default="", help="keep the raw profiles in this folder")
    parser.add_argument("--no-spy", action="store_true",
                        help="only count CPU and time (no py-spy, no overhead)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        out = Path(args.out) if args.out else root / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        os.environ.update({k: str(root / "env" / k.lower()) for k in (
            "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")})
        server = start_server(root / "server")
        stack.callback(server.close)
        relay = RelayProcess(root / "relay", server.url).start()
        stack.callback(relay.stop)
        api = Api(relay.url, server.token_for("alice"))
        session = api.new_session()
        workdir = root / "task"
        proc = start_runner(workdir, relay.url, session["ticket"], "--time-limit", "3600",
                            "--idle-timeout", "0", f"--tunnel={args.tunnel}",
                            f"--route={args.route}")
        stack.callback(kill_under, workdir)
        stack.callback(stop_process_group, proc, signal.SIGTERM)
        base, token = split_url(api.wait_state(session["id"], "ready", 180)["url"])
        (workdir / "notebooks" / "big.bin").write_bytes(os.urandom(SIZE))
        pids = {"relay": relay.proc.pid, "runner": proc.pid}
        for kid in children(proc.pid):
            line = cmdline(kid)
            if comm(kid) == "ssh" or "runner_websocket" in line:
                pids[f"{comm(kid)}-{kid}"] = kid
        print("processes:", {k: cmdline(v)[:80] for k, v in pids.items()})
        http = requests.Session()
        http.headers["Authorization"] = f"token {token}"
        http.get(base + "api/status").raise_for_status()
        spy = not args.no_spy
        with Recorder(out, "http", pids, spy, args.requests) as rec:
            for _ in range(args.requests):
                http.get(base + "api/status")
        print(f"\n{1e3 * rec.wall / args.requests:.3f} ms per kept-alive request")
        with Recorder(out, "download", pids, spy) as rec:
            got = 0
            with http.get(base + "files/big.bin", stream=True, timeout=120) as resp:
                for chunk in resp.iter_content(1 << 20):
                    got += len(chunk)
            assert got == SIZE
        print(f"\n{SIZE / rec.wall / 1e6:.0f} MB/s download")
    return 0


if __name__ == "__main__":
    sys.exit(main())
