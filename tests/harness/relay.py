"""The relay as a real process (``python -m launcher.relay``), for tests and benchmarks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures.waiting import wait_for
from tests.harness.processes import REPO, child_env, starting


class RelayProcess:
    """``python -m launcher.relay`` on loopback. It binds its own ports (0) the first time
    and reads them back from its info file; a restart asks for the same ones again, so
    session URLs and the runners' SSH address survive it."""

    def __init__(self, state_dir: Path, everest_url: str, *extra: str):
        self.state_dir = Path(state_dir)
        self.everest_url = everest_url
        self.http_port = 0
        self.ssh_port = 0
        self.extra = list(extra)
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}.log"
        self.prefix: list[str] = []  # runs the relay under it, e.g. prlimit's limits

    def start(self) -> RelayProcess:
        starting("the relay")
        info = self.state_dir.parent / f"{self.state_dir.name}.json"
        info.unlink(missing_ok=True)
        cmd = [*self.prefix, sys.executable, "-m", "launcher.relay", "--everest",
               self.everest_url,
               "--state-dir", str(self.state_dir), "--http", f"127.0.0.1:{self.http_port}",
               "--ssh", f"127.0.0.1:{self.ssh_port}", "--info-file", str(info), *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env(), cwd=REPO)
        wait_for(lambda: info.exists() or self.proc.poll() is not None, 30, "the relay")
        assert self.proc.poll() is None, f"relay exited:\n{self.log()}"
        ports = json.loads(info.read_text())
        self.url = ports["url"]
        self.http_port = int(self.url.rsplit(":", 1)[1])
        self.ssh_port = int(ports["ssh_port"])
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-10000:]
