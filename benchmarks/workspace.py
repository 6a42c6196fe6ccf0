"""Workspaces: how fast work is kept, what it costs when idle, how long a restore takes, and
how much work a kill -9 loses.

In one run, on this machine: a local server, one relay (save interval as given), real
session runners with JupyterLab:

- **save latency**: a session writes a small file every ~1.5 s; the time from the write to
  the file being complete in the relay's working copy (p50/p99);
- **idle CPU**: the runner process's CPU seconds per minute with nothing changing, with a
  workspace and without one (side by side, same run);
- **restore**: launch -> ready with a 100 MB / 1,000-file workspace ÷ launch -> ready with
  an empty one (sessions alternate); the runner's restore MB/s beside ``scp -r`` of the
  same tree from an OpenSSH server on this machine (the relay's SSH server serves no scp;
  both on loopback), and beside asyncssh's own parallel ``get`` over the relay's SFTP;
- **data at risk after kill -9**: a session appends a line with the time every 0.5 s;
  kill -9 at a random moment; seconds between the kill and the newest line the relay holds.

Appends a dated section to ``benchmarks/RESULTS.md``.

    python benchmarks/workspace.py [--save-interval 5] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launcher.relay.workspaces import FolderWorkspaceStore  # noqa: E402
from tests.harness.relay import RelayProcess  # noqa: E402
from tests.harness.runner import new_key, public_text, redeem, start_runner, stop_process_group  # noqa: E402
from tests.harness.server import start_server  # noqa: E402
from tests.session.helpers import Api, kill_under, wait_for  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Bench:
    def __init__(self, root: Path, relay: RelayProcess, api: Api):
        self.root = root
        self.relay = relay
        self.api = api
        self.n = 0

    def working_copy(self, name: str) -> Path:
        return self.relay.state_dir / "workspaces" / "alice" / quote(name, safe="") / "current"

    def start(self, workspace: str | None, *args: str) -> tuple[dict, Path, subprocess.Popen,
                                                                  float]:
        self.n += 1
        body = {"workspace": workspace} if workspace else {}
        t0 = time.monotonic()
        session = self.api.new_session(**body)
        workdir = self.root / f"run{self.n}"
        proc = start_runner(workdir, self.relay.url, session["ticket"], "--idle-timeout", "0",
                            *args)
        self.api.wait_state(session["id"], "ready", timeout=300)
        return session, workdir, proc, time.monotonic() - t0

    def stop(self, session: dict, workdir: Path, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                pass
        stop_process_group(proc)
        kill_under(workdir)
        self.api("DELETE", f"/api/sessions/{session['id']}")


def save_latency(b: Bench, writes: int) -> dict:
    session, workdir, proc, _ = b.start("latency")
    nb = workdir / "notebooks"
    latencies = []
    try:
        for i in range(writes):
            data = os.urandom(4096)
            name = f"f{i}.bin"
            (nb / f".tmp-{name}").write_bytes(data)
            os.replace(nb / f".tmp-{name}", nb / name)
            t0 = time.monotonic()
            target = b.working_copy("latency") / name
            wait_for(lambda t=target, d=data: t.exists() and t.read_bytes() == d, 120,
                     "the save", interval=0.01)
            latencies.append(time.monotonic() - t0)
            time.sleep(random.uniform(0.5, 1.5))
    finally:
        b.stop(session, workdir, proc)
    return {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
            "n": len(latencies)}


def idle_cpu(b: Bench, seconds: float) -> dict:
    runs = {}
    for label, ws in (("with a workspace (1,000 files)", "idle"), ("without", None)):
        if ws:
            _tree(b.root / "idle-src", 1000, 1 << 20)
            FolderWorkspaceStore(b.relay.state_dir / "workspaces").import_files(
                "alice", ws, b.root / "idle-src")
        session, workdir, proc, _ = b.start(ws)
        try:
            time.sleep(3.0)  # past the restore and the first scans
            c0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = _cpu_seconds(proc.pid), time.monotonic()
            runs[label] = (c1 - c0) / (t1 - t0) * 60
        finally:
            b.stop(session, workdir, proc)
    return runs


def _tree(folder: Path, files: int, total: int) -> None:
    if folder.exists():
        return
    each = total // files
    for i in range(files):
        sub = folder / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.bin").write_bytes(os.urandom(each))


def restore(b: Bench, rounds: int, sshd_port: int | None, sshd_key: Path | None) -> dict:
    src = b.root / "restore-src"
    _tree(src, 1000, 100 << 20)
    store = FolderWorkspaceStore(b.relay.state_dir / "workspaces")
    store.import_files("alice", "big", src)
    empty, full, rates = [], [], []
    for _ in range(rounds):
        for label in ("empty", "big"):
            session, workdir, proc, took = b.start(label)
            try:
                (empty if label == "empty" else full).append(took)
                if label == "big":
                    log = (workdir / "session.log").read_text()
                    line = [x for x in log.splitlines() if "restored" in x][-1]
                    secs = float(line.rsplit(" in ", 1)[1].split(" s")[0])
                    rates.append((100 << 20) / secs / 1e6)
            finally:
                b.stop(session, workdir, proc)
    result = {"empty": statistics.median(empty), "big": statistics.median(full),
              "rate": statistics.median(rates)}
    result["parallel"] = _asyncssh_get(b, "big")
    if sshd_port:
        dest = b.root / "scp-dest"
        rates = []
        for _ in range(rounds):
            shutil.rmtree(dest, ignore_errors=True)
            t0 = time.monotonic()
            subprocess.run(["scp", "-q", "-r", "-P", str(sshd_port), "-i", str(sshd_key),
                            "-o", "StrictHostKeyChecking=no", "-o",
                            "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                            f"root@127.0.0.1:{src}", str(dest)], check=True, timeout=600)
            rates.append((100 << 20) / (time.monotonic() - t0) / 1e6)
        result["scp"] = statistics.median(rates)
    return result


def _asyncssh_get(b: Bench, name: str) -> float:
    """asyncssh's parallel recursive get of the same workspace over the relay's SFTP."""
    import asyncssh

    session = b.api.new_session(workspace=name, read_only=True)
    key = new_key()
    grant = redeem(b.relay.url, session["ticket"], public_text(key)).json()
    dest = b.root / "parallel-dest"
    shutil.rmtree(dest, ignore_errors=True)

    async def get() -> float:
        async with asyncssh.connect(
                "127.0.0.1", b.relay.ssh_port, username=session["id"], client_keys=[key],
                known_hosts=([asyncssh.import_public_key(grant["host_key"])], [], []),
                config=None, agent_path=None) as conn:
            async with conn.start_sftp_client() as sftp:
                t0 = time.monotonic()
                await sftp.get(".", str(dest), recurse=True)
                return (100 << 20) / (time.monotonic() - t0) / 1e6

    try:
        return asyncio.run(get())
    finally:
        b.api("DELETE", f"/api/sessions/{session['id']}")


def at_risk(b: Bench, rounds: int) -> list[float]:
    lost = []
    for r in range(rounds):
        name = f"risk{r}"
        session, workdir, proc, _ = b.start(name)
        log = workdir / "notebooks" / "progress.txt"
        try:
            deadline = time.monotonic() + random.uniform(8.0, 20.0)
            with open(log, "a") as f:
                while time.monotonic() < deadline:
                    f.write(f"{time.time():.3f}\n")
                    f.flush()
                    time.sleep(0.5)
            killed_at = time.time()
            stop_process_group(proc, signal.SIGKILL)
        finally:
            b.stop(session, workdir, proc)
        kept = b.working_copy(name) / "progress.txt"
        lines = kept.read_text().split() if kept.exists() else []
        newest = float(lines[-1]) if lines else float(session["created"])
        lost.append(killed_at - newest)
    return lost


def _sshd(root: Path) -> tuple[int, Path, subprocess.Popen] | None:
    """An OpenSSH server on a free loopback port, root's login with a fresh key (the scp
    baseline)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        return None
    from tests.harness.processes import free_port

    folder = root / "sshd"
    folder.mkdir()
    host_key, user_key = folder / "host", folder / "user"
    for k in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)],
                       check=True)
    auth = folder / "authorized_keys"
    shutil.copy(f"{user_key}.pub", auth)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                      f"AuthorizedKeysFile {auth}\nPermitRootLogin yes\nStrictModes no\n"
                      "PasswordAuthentication no\nUsePAM no\nPidFile none\n"
                      "Subsystem sftp internal-sftp\n")  # today's scp speaks SFTP
    proc = subprocess.Popen([sshd, "-D", "-f", str(config), "-e"],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return port, user_key, proc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--save-interval", type=float, default=5.0)
    p.add_argument("--writes", type=int, default=30)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", choices=("latency", "idle", "restore", "risk"), action="append",
                   help="run only these measures (default: all)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    load0 = os.getloadavg()[0]
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wsbench-")))
        os.chmod(root, 0o755)
        server = start_server(root / "server")
        stack.callback(server.close)
        relay = RelayProcess(root / "relay", server.url, "--workspace-save-interval",
                             str(args.save_interval)).start()
        stack.callback(relay.stop)
        b = Bench(root, relay, Api(relay.url, server.token_for("alice")))
        sshd = _sshd(root)
        if sshd:
            stack.callback(sshd[2].terminate)
        only = set(args.only or ("latency", "idle", "restore", "risk"))
        lat = cpu = rest = risk = None
        if "latency" in only:
            print("save latency ...", flush=True)
            lat = save_latency(b, args.writes)
            print(lat, flush=True)
        if "idle" in only:
            print("idle CPU ...", flush=True)
            cpu = idle_cpu(b, args.idle_seconds)
            print(cpu, flush=True)
        if "restore" in only:
            print("restore ...", flush=True)
            rest = restore(b, args.rounds, sshd[0] if sshd else None,
                           sshd[1] if sshd else None)
            print(rest, flush=True)
        if "risk" in only:
            print("data at risk ...", flush=True)
            risk = at_risk(b, args.rounds)
            print(risk, flush=True)
    load1 = os.getloadavg()[0]
    cmd = "python benchmarks/workspace.py " + " ".join(sys.argv[1:])
    lines = [
        "", f"## Workspaces — {datetime.now():%Y-%m-%d %H:%M}", "",
        f"Command: `{cmd.strip()}`  ",
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, save interval "
        f"{args.save_interval:g} s, load average before/after: {load0:.1f}/{load1:.1f} "
        "(the machine is shared)", "",
        "| measure | result |", "| --- | --- |",
    ]
    if lat:
        lines.append(f"| save: write -> complete at the relay, p50 / p99 ({lat['n']} writes) "
                     f"| {lat['p50']:.2f} s / {lat['p99']:.2f} s |")
    for label, value in (cpu or {}).items():
        lines.append(f"| runner CPU per minute idle, {label} | {value:.2f} s |")
    if rest:
        lines += [
            f"| launch -> ready, empty workspace (median of {args.rounds}) | "
            f"{rest['empty']:.1f} s |",
            f"| launch -> ready, 100 MB / 1,000 files (median) | {rest['big']:.1f} s |",
            f"| ratio 100 MB ÷ empty (aim <= 1.5) | {rest['big'] / rest['empty']:.2f} |",
            f"| restore throughput, the runner | {rest['rate']:.1f} MB/s |",
            f"| asyncssh's parallel `get -r`, same relay SFTP | {rest['parallel']:.1f} MB/s |",
        ]
        if "scp" in rest:
            lines.append(f"| `scp -r` of the same tree, OpenSSH on loopback | "
                         f"{rest['scp']:.1f} MB/s (runner ÷ scp "
                         f"{rest['rate'] / rest['scp']:.2f}) |")
    if risk:
        lines.append(f"| data at risk after kill -9 (s lost; {len(risk)} kills) | "
                     f"{', '.join(f'{x:.1f}' for x in risk)} (max {max(risk):.1f}; "
                     "aim <= 30) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with open(REPO / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
