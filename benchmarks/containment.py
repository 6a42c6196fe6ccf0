"""Containment: what a task container costs per task, each kind against none, in one run.

For each round, one task per kind in turn (so the machine's load hits every kind alike):
none (the bare wrapper in its process group, as before containment), cgroup (a cgroup v2
per task made and entered at the start, where this machine allows one), cgroup-starter (a
task starter made ready beforehand, already in its cgroup and the task's account: what the
server uses once an account has had a task, see everest_local/starters.py) and subreaper (a
reaper process per task). A task is the wrapper running ``true``; timed from the start to
the end of the container after the wrapper exited — what the server does for each local
task. As root, the task runs as a
task account (``everest-task-a``), as on a root server. Reported: the median and p90 per
task in ms, and the ratio to none.

Appends a dated section to benchmarks/RESULTS.md with the exact command.

    python benchmarks/containment.py [--tasks 60]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import pwd
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from everest_local import processes  # noqa: E402
from everest_local.containment import (  # noqa: E402
    Containment,
    SubreaperContainment,
    open_containment,
)
from everest_local.task_users import TaskUser  # noqa: E402
from tests.fixtures.task_accounts import ensure_account, ensure_passable  # noqa: E402


class Ends:
    """The ends of tasks run by starters, as the forker reports them (on ``loop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiting: dict[int, asyncio.Future] = {}

    def __call__(self, pid: int, code: int) -> None:
        future = self.waiting.pop(pid, None)
        if future is not None and not future.done():
            future.set_result(code)

    def wait(self, pid: int) -> int:
        future = self.waiting[pid] = self.loop.create_future()
        return self.loop.run_until_complete(future)


def _one(root: Path, name: str, container: Containment | None,
         user: TaskUser | None, ends: Ends) -> float:
    task = root / name
    work = task / "work"
    work.mkdir(parents=True)
    start = time.perf_counter()
    spawned = processes.spawn(["true"], work, task, dict(os.environ), user, container)
    if spawned.popen is None:  # a starter ran it: not our child
        ends.wait(spawned.pid)
    else:
        spawned.popen.wait()
    if container is not None and not container.release_if_empty(name):
        container.end(name)
    return time.perf_counter() - start


def _ready(container: Containment, user: TaskUser | None, count: int) -> None:
    """Wait (running the loop: the reports come on it) until ``count`` starters are ready."""
    account = (-1, -1) if user is None else (user.uid, user.gid)
    starters = getattr(container, "starters", None)
    assert starters is not None
    starters.take(account)  # asks for them
    deadline = time.monotonic() + 30
    while len(starters._pool.get(account, ())) < count and time.monotonic() < deadline:
        starters._loop.run_until_complete(asyncio.sleep(0.01))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60, help="tasks per kind")
    parser.add_argument("--no-record", action="store_true", help="do not append RESULTS.md")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="contain-bench-"))
    user = None
    if os.geteuid() == 0:
        ensure_account("everest-task-a")
        ensure_passable(root)
        os.chmod(root, 0o755)
        entry = pwd.getpwnam("everest-task-a")
        user = TaskUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    loop = asyncio.new_event_loop()
    ends = Ends(loop)
    kinds: dict[str, Containment | None] = {"none": None}
    cgroup = open_containment("auto", root / "tasks")
    starting = open_containment("auto", root / "tasks-s", ready=1)
    if cgroup.kind.value == "cgroup":
        kinds["cgroup"] = cgroup
        kinds["cgroup-starter"] = starting
        starting.listen(loop, ends)
    kinds["subreaper"] = SubreaperContainment()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    load_before = os.getloadavg()
    for i in range(args.tasks):
        for kind, container in kinds.items():
            if kind == "cgroup-starter":  # one ready: as a server's between two jobs
                _ready(starting, user, 1)
            times[kind].append(_one(root, f"{kind}-{i}-0", container, user, ends))
    load_after = os.getloadavg()
    cgroup.close()
    starting.close()
    loop.close()
    base = statistics.median(times["none"])
    rows = []
    for kind, values in times.items():
        values.sort()
        median, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
        rows.append(f"| {kind} | {median * 1000:.1f} | {p90 * 1000:.1f} | "
                    f"**{median / base:.2f}** | +{(median - base) * 1000:.1f} |")
    table = ["| containment | median ms/task | p90 ms/task | ratio to none | added ms |",
             "| --- | --- | --- | --- | --- |", *rows]
    print("\n".join(table))
    if args.no_record:
        return
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    command = "python benchmarks/containment.py " + shlex.join(sys.argv[1:])
    text = [f"\n## Containment: cost per local task — {when}\n",
            f"Command: `{command.strip()}`  ",
            f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}, "
            f"{'root, tasks as everest-task-a' if user else 'not root'}\n", *table, ""]
    with open(REPO / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
