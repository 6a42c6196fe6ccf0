"""Resources: what the local server adds over each engine's own tool, in one run.

Starts real engines as the tests do (a private dockerd with the cached Debian base image, an
sshd on a free loopback port logging in an unprivileged user, a one-node Slurm), and a
local server with one resource of each kind plus ``local``. Then, per kind:

1. **Latency**: ``--runs`` no-op jobs one after another (submit, poll the job every 20 ms
   until DONE) against the engine's own tool doing the same nothing: ``docker run --rm
   --network none IMAGE true``, ``ssh host true`` (a new connection each time, like a CLI
   user), ``sbatch --wrap true`` then polling ``scontrol show job`` every 50 ms (``sbatch
   --wait`` sleeps 2 s, then 8 s, between checks, so it measures its own sleeps).
   Reported: medians, the ratio server ÷ tool and the added seconds per job.
2. **Throughput**: ``--jobs`` no-op jobs submitted at once, jobs/s until all are DONE
   (the resource's ``slots``, 4 by default, run at once).

Appends a dated section to benchmarks/RESULTS.md with the exact command.

    python benchmarks/resources.py [--runs 10] [--jobs 24]
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common  # benchmarks/_common.py: flags, recording (this script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.fixtures.docker_engine import DockerEngine  # noqa: E402
from tests.fixtures.slurm import SlurmCluster  # noqa: E402
from tests.fixtures.sshd import SSHServer  # noqa: E402
from tests.fixtures.task_user import ensure_task_user  # noqa: E402
from tests.harness.server import start_server  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def _sbatch_poll(slurm: SlurmCluster, workdir: Path, user: str) -> None:
    job = _run(["sbatch", "--parsable", f"--uid={user}", f"--chdir={workdir}",
                "--output=/dev/null", "--wrap", "true"], slurm.env).strip()
    while "JobState=COMPLETED" not in _run(["scontrol", "show", "job", job, "-o"], slurm.env):
        time.sleep(0.05)


def _job(client, resource: str) -> None:
    job = client.submit("noop", {}, resources=[resource])
    while True:
        state = client.job(job.id).state.value
        if state == "DONE":
            return
        if state in ("FAILED", "CANCELLED"):
            raise SystemExit(f"job on {resource} ended {state}: {client.log(job.id)}")
        time.sleep(0.02)


def _throughput(client, resource: str, count: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda _: client.submit("noop", {}, resources=[resource]),
                             range(count)))
    pending = {j.id for j in jobs}
    while pending:
        for job in client.jobs():
            if job.id in pending and job.is_done:
                if job.state.value != "DONE":
                    raise SystemExit(f"job on {resource} ended {job.state}")
                pending.discard(job.id)
        time.sleep(0.05)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=10, help="sequential jobs per kind")
    parser.add_argument("--jobs", type=int, default=24, help="jobs at once per kind")
    args = parser.parse_args()
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="everest-bench-resources-"))
    os.chmod(root, 0o755)
    user = ensure_task_user()
    userdir = Path(tempfile.mkdtemp(prefix="bench-", dir=user.pw_dir))
    os.chown(userdir, user.pw_uid, user.pw_gid)
    for part in ("docker", "ssh", "slurm"):
        (root / part).mkdir()
    docker = DockerEngine(root / "docker")
    sshd = SSHServer(root / "ssh", user, userdir)
    slurm = SlurmCluster(root / "slurm")
    server = None
    try:
        docker.start()
        image = docker.base_image
        sshd.start()
        slurm.start()
        app = root / "apps" / "noop"
        app.mkdir(parents=True)
        (app / "application.json").write_text(json.dumps({
            "alias": "noop", "name": "noop", "inputs": {}, "outputs": {},
            "config": {"command": "true"}}))
        resources = root / "resources.yaml"
        resources.write_text(yaml.safe_dump({"resources": [
            {"name": "box", "kind": "docker", "image": image, "docker_host": docker.host},
            sshd.resource("lab"),
            {"name": "hpc", "kind": "slurm", "run_as": user.pw_name, "poll_interval": 0.05,
             "workdir": str(userdir / "slurm")},
        ]}))
        server = start_server(root / "server", apps=[app],
                              extra_args=["--resources", str(resources)],
                              env={"SLURM_CONF": str(slurm.conf)}, users=("bench",))
        client = server.client("bench")
        ssh_cmd = ["ssh", "-F", "/dev/null", "-i", str(sshd.client_key), "-p", str(sshd.port),
                   "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                   "-o", f"UserKnownHostsFile={root / 'ssh' / 'known_hosts'}",
                   f"{user.pw_name}@127.0.0.1", "true"]
        (root / "ssh" / "known_hosts").write_text(
            f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
        native = {
            "local": ("`true` (fork+exec)", lambda: _run(["true"])),
            "docker": ("`docker run --rm --network none`",
                       lambda: _run(["docker", "run", "--rm", "--network", "none", image,
                                     "true"], docker.env())),
            "ssh": ("`ssh host true`", lambda: _run(ssh_cmd)),
            "slurm": ("`sbatch` + poll `scontrol` 50 ms",
                      lambda: _sbatch_poll(slurm, userdir, user.pw_name)),
        }
        names = {"local": "local", "docker": "box", "ssh": "lab", "slurm": "hpc"}
        rows = []
        for kind, (tool, run_native) in native.items():
            run_native()  # warm up (image cache, first connection)
            _job(client, names[kind])
            tool_times, server_times = [], []
            for _ in range(args.runs):  # alternate, so load changes hit both alike
                tool_times.append(_timed(run_native))
                server_times.append(_timed(lambda k=kind: _job(client, names[k])))
            rate = _throughput(client, names[kind], args.jobs)
            t, s = statistics.median(tool_times), statistics.median(server_times)
            rows.append((kind, tool, t, s, rate))
            print(f"{kind}: tool {t:.3f} s, server {s:.3f} s, ratio {s / t:.2f}, "
                  f"{rate:.1f} jobs/s", flush=True)
    finally:
        if server is not None:
            server.close()
        slurm.stop()
        sshd.stop()
        docker.stop()
        subprocess.run(["rm", "-rf", str(root), str(userdir)], check=False)
    _append(args, rows, load_before, os.getloadavg())


def _append(args, rows, before, after) -> None:
    command = _common.command()
    fmt = lambda load: "/".join(f"{x:.1f}" for x in load)  # noqa: E731
    lines = [
        "", f"## Resources: the server vs each engine's own tool — "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "",
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"before/after: {fmt(before)} / {fmt(after)} (shared machine). Engines on this machine "
        "(private dockerd, sshd on loopback, one-node Slurm); one no-op job (`true`) at a time, "
        "polled every 20 ms; medians of alternating runs.", "",
        "| kind | the tool alone | tool s | through the server s | server ÷ tool | "
        "added s per job | no-op jobs/s through the server |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, tool, t, s, rate in rows:
        lines.append(f"| {kind} | {tool} | {t:.3f} | {s:.3f} | **{s / t:.2f}** | "
                     f"{s - t:+.3f} | {rate:.1f} |")
    _common.record(args, "\n".join(lines))


if __name__ == "__main__":
    main()
