"""Run a notebook's code cells in a kernel of a remote Jupyter server (REST + WebSocket).

What a user does in the browser, done by a test: upload files through the contents API,
open a notebook session (its kernel starts in the notebook's folder), send each code cell as
an ``execute_request`` on the kernel's channels WebSocket and collect what it prints.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import requests
import websocket


class RemoteJupyter:
    """A Jupyter server known by a URL carrying its token (``.../lab?token=...``)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.token = parse_qs(parts.query).get("token", [""])[0]
        path = parts.path
        for tail in ("/lab", "/tree"):
            if tail in path:
                path = path[: path.index(tail)]
        self.base = urlunsplit((parts.scheme, parts.netloc, path.rstrip("/") + "/", "", ""))
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {self.token}"

    def api(self, method: str, path: str, **kw) -> requests.Response:
        response = self.http.request(method, self.base + "api/" + path, timeout=60, **kw)
        response.raise_for_status()
        return response

    def upload(self, local: Path, remote: str) -> None:
        """Put a text file or a notebook at ``remote`` (folders are created)."""
        folder = "/".join(remote.split("/")[:-1])
        if folder:
            self.api("PUT", f"contents/{folder}", json={"type": "directory"})
        if local.suffix == ".ipynb":
            body = {"type": "notebook", "format": "json",
                    "content": json.loads(local.read_text())}
        else:
            body = {"type": "file", "format": "text", "content": local.read_text()}
        self.api("PUT", f"contents/{remote}", json=body)

    def run_notebook(self, remote: str, replace_parameters: str | None = None,
                     timeout: float = 600) -> list[str]:
        """Execute every code cell of the notebook at ``remote``; returns each cell's text
        output. Raises ``AssertionError`` with the traceback when a cell fails."""
        notebook = self.api("GET", f"contents/{remote}").json()["content"]
        session = self.api("POST", "sessions", json={
            "path": remote, "type": "notebook", "name": remote,
            "kernel": {"name": "python3"}}).json()
        kernel_id = session["kernel"]["id"]
        ws_url = self.base.replace("http", "ws", 1) + \
            f"api/kernels/{kernel_id}/channels?token={self.token}"
        ws = websocket.create_connection(ws_url, timeout=timeout)
        outputs = []
        try:
            for cell in notebook["cells"]:
                if cell["cell_type"] != "code":
                    continue
                source = cell["source"]
                if replace_parameters is not None and \
                        "parameters" in cell.get("metadata", {}).get("tags", []):
                    source = replace_parameters
                outputs.append(_execute(ws, source))
        finally:
            ws.close()
            self.api("DELETE", f"sessions/{session['id']}")
        return outputs


def _execute(ws: websocket.WebSocket, code: str) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    text, error, idle, replied = [], None, False, False
    while not (idle and replied):
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            error = "\n".join(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
        elif kind == "execute_reply":
            replied = True
    if error is not None:
        raise AssertionError(f"cell failed:\n{code}\n{error}")
    return "".join(text)
