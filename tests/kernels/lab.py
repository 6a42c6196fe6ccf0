"""A real JupyterLab (jupyter_server) with Everest kernelspecs, driven over its REST API and
kernel WebSockets, for the kernel tests and the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import websocket

from tests.fixtures.waiting import wait_for
from tests.harness.processes import REPO, child_env, free_port, starting

ENTRY_POINT = ("[jupyter_client.kernel_provisioners]\n"
               "everest = launcher.kernels.provisioner:EverestProvisioner\n")
EVIDENCE = ("import json, os, socket, sys\n"
            "marker = os.path.expanduser('~/.everest-test-marker')\n"
            "print(json.dumps({'host': socket.gethostname(), 'uid': os.getuid(),"
            " 'pid': os.getpid(), 'slurm': os.environ.get('SLURM_JOB_ID'),"
            " 'job': os.environ.get('EVEREST_JOB_ID'),"
            " 'python': sys.executable, 'cwd': os.getcwd(),"
            " 'cgroup': open('/proc/self/cgroup').read(),"
            " 'marker': open(marker).read().strip() if os.path.exists(marker) else None}))")


def entry_point_dir(folder: Path) -> Path:
    """A folder for ``PYTHONPATH`` that registers the provisioner's entry point the way
    ``pip install -e .`` does (``*.dist-info/entry_points.txt``), so the tests need no
    reinstall of the checkout."""
    dist = folder / "everest_jupyter_kernels_test-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: everest-jupyter-kernels-test"
                                   "\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINT)
    return folder


class Lab:
    """``jupyter lab`` in a process of its own, with ``data_dir`` as its Jupyter data folder
    (where the kernelspecs are) and ``env`` (the user's Everest token) added."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "jupyter-data"
        self.runtime_dir = self.root / "jupyter-runtime"
        self.notebooks = self.root / "notebooks"
        self.notebooks.mkdir(exist_ok=True)
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.root / "lab.log"
        eps = entry_point_dir(self.root / "entry-points")
        self.env = child_env(JUPYTER_DATA_DIR=str(self.data_dir),
                             JUPYTER_RUNTIME_DIR=str(self.runtime_dir),
                             JUPYTER_CONFIG_DIR=str(self.root / "jupyter-config"), **env)
        self.env["PYTHONPATH"] = os.pathsep.join([str(eps), self.env["PYTHONPATH"]])
        self.proc: subprocess.Popen | None = None

    def install(self, *args: str) -> str:
        """``everest-jupyter kernels install --prefix`` ... into this lab's data folder."""
        done = subprocess.run([sys.executable, "-m", "launcher.cli", "--json", "kernels",
                               "install", *args], env=self.env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["name"]

    def start(self, *extra: str) -> Lab:
        """Start JupyterLab (with ``extra`` options, e.g. its culling settings)."""
        starting("JupyterLab")
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}",
               "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.notebooks}", "--ServerApp.port_retries=0",
               "--ServerApp.log_level=INFO", "--allow-root", *extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=REPO, start_new_session=True)
        wait_for(self._up, 90, "JupyterLab to answer")
        return self

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log()
        try:
            return requests.get(self.url + "api/status", headers=self.auth, timeout=5).ok
        except requests.RequestException:
            return False

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.url + path, headers=self.auth,
                                timeout=kw.pop("timeout", 300), **kw)

    def start_kernel(self, name: str) -> Kernel:
        resp = self.api("POST", "api/kernels", json={"name": name})
        assert resp.status_code == 201, (resp.status_code, resp.text, self.log())
        return Kernel(self, resp.json()["id"])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        """The server's whole log (the kernels' progress lines come early)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Kernel:
    """One kernel of a :class:`Lab`, over its WebSocket."""

    def __init__(self, lab: Lab, kernel_id: str):
        self.lab = lab
        self.id = kernel_id
        self.session = uuid.uuid4().hex
        self.ws = self._connect()

    def _connect(self) -> websocket.WebSocket:
        url = self.lab.url.replace("http", "ws", 1) + f"api/kernels/{self.id}/channels"
        return websocket.create_connection(url, header=[f"Authorization: token "
                                                        f"{self.lab.token}"], timeout=300)

    def reconnect(self) -> None:
        self.ws.close()
        self.ws = self._connect()

    def send(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": self.session, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        return msg_id

    def result(self, msg_id: str, timeout: float = 120) -> dict[str, Any]:
        """``{"status", "stdout", "ename"}`` of a request sent with :meth:`send`."""
        out, reply, idle = [], None, False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (reply and idle):
            msg = self._next(deadline)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        assert reply is not None, f"no execute_reply in {timeout} s"
        return {"status": reply["status"], "stdout": "".join(out),
                "ename": reply.get("ename")}

    def _next(self, deadline: float) -> dict[str, Any]:
        """The next message, or AssertionError at ``deadline`` (the server's pings would
        otherwise keep a plain ``recv`` waiting for ever)."""
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no message from the kernel in time"
            self.ws.settimeout(left)
            opcode, frame = self.ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(frame.data)

    def wait_busy(self, msg_id: str, timeout: float = 60) -> None:
        """Wait until the kernel started on request ``msg_id`` (its ``execute_input``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._next(deadline)
            if msg.get("parent_header", {}).get("msg_id") == msg_id and \
                    msg["header"]["msg_type"] == "execute_input":
                return
        raise AssertionError(f"request {msg_id} did not start in {timeout} s")

    def run(self, code: str, timeout: float = 120) -> str:
        result = self.result(self.send(code), timeout)
        assert result["status"] == "ok", result
        return result["stdout"]

    def interrupt(self) -> None:
        resp = self.lab.api("POST", f"api/kernels/{self.id}/interrupt")
        assert resp.status_code == 204, resp.text

    def restart(self) -> None:
        resp = self.lab.api("POST", f"api/kernels/{self.id}/restart")
        assert resp.status_code == 200, (resp.text, self.lab.log())

    def shutdown(self) -> None:
        self.ws.close()
        resp = self.lab.api("DELETE", f"api/kernels/{self.id}")
        assert resp.status_code == 204, (resp.text, self.lab.log())
