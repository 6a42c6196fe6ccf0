"""A client of the relay's HTTP API (see :mod:`launcher.relay.api`) for the launcher and CLI.

Transport, retries and the mapping of errors onto :mod:`everest_app.errors` are the Everest
client's (:class:`everest_app.json_api.JsonApiClient`), so the CLI reports both alike.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from everest_app.json_api import IDEMPOTENT_METHODS, JsonApiClient
from launcher.relay.state import SessionState

RELAY_JSON = "relay.json"
"""Where a relay inside a local server tells its address, in that server's data folder:
``{"pid", "url", "ssh_port"}`` (written by :mod:`launcher.relay.plugin`, read by the
launcher's embedded default without importing the relay's server side)."""


class RelayClient(JsonApiClient):
    """Talks to one relay with one Everest token, over a keep-alive session."""

    service = "the relay"
    unreachable_hint = "Is it running, and is its URL right (--relay, the profile's relay_url)?"
    idempotent_methods = IDEMPOTENT_METHODS | {"PATCH"}  # PATCH sets fields: safe to resend

    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        super().__init__(url, token, timeout=timeout, retries=3)

    def _call(self, method: str, path: str, *, timeout: float | None = None,
              **kwargs: Any) -> Any:
        return self._json(method, path, timeout=timeout or self.timeout, **kwargs)

    def create_session(self, *, mode: str = "lab", label: str = "",
                       default_url: str = "/lab", workspace: str | None = None,
                       snapshot: str | None = None, read_only: bool = False
                       ) -> dict[str, Any]:
        """A new session with its one-time ``ticket`` and the ``relay_url`` for the job;
        ``workspace`` (a name; None: none) is its JupyterLab root, restored from
        ``snapshot`` when given, a copy nothing saves back when ``read_only``."""
        body: dict[str, Any] = {"mode": mode, "label": label, "default_url": default_url}
        if workspace:
            body["workspace"] = workspace
            if snapshot:
                body["snapshot"] = snapshot
            if read_only:
                body["read_only"] = True
        return self._call("POST", "/api/sessions", json=body)

    def session(self, session_id: str, *, unless_state: SessionState | str | None = None,
                wait: float = 0.0) -> dict[str, Any]:
        """The session; with ``unless_state``, wait up to ``wait`` s for it to leave it."""
        params = {}
        if unless_state is not None:
            params = {"state": str(unless_state), "wait": f"{wait:g}"}
        return self._call("GET", f"/api/sessions/{session_id}", params=params,
                          timeout=self.timeout + wait)

    def sessions(self, *, include_ended: bool = False) -> list[dict[str, Any]]:
        return self._call("GET", "/api/sessions", params={"all": "1"} if include_ended else {})

    def set_job(self, session_id: str, job_id: str) -> dict[str, Any]:
        return self._call("PATCH", f"/api/sessions/{session_id}", json={"job_id": job_id})

    def end(self, session_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/sessions/{session_id}")

    # -- workspaces (see launcher.relay.workspace_api) -------------------------------------

    def workspaces(self) -> dict[str, Any]:
        """``{"workspaces": [...], "usage", "quota"}``."""
        return self._call("GET", "/api/workspaces")

    def workspace(self, name: str) -> dict[str, Any]:
        """One workspace with its ``snapshots`` (history, newest first)."""
        return self._call("GET", f"/api/workspaces/{_segment(name)}")

    def download_workspace(self, name: str, path: str | os.PathLike,
                           snapshot: str | None = None) -> Path:
        """The workspace (or one snapshot) as a zip at ``path``, written atomically."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.part")
        params = {"snapshot": snapshot} if snapshot else {}
        with self.request("GET", f"/api/workspaces/{_segment(name)}/zip", params=params,
                          stream=True) as response:
            try:
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(1 << 16):
                        out.write(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        os.replace(partial, path)
        return path

    def upload_workspace(self, name: str, source: str | os.PathLike) -> dict[str, Any]:
        """Replace the workspace's files with ``source`` — a folder (zipped here; links
        stay links), a zip, or one other file — and return the snapshot that made."""
        source = Path(source)
        url = f"/api/workspaces/{_segment(name)}"
        if source.is_dir():
            with tempfile.TemporaryFile() as packed:
                zip_folder(source, packed)
                packed.seek(0)
                return self._call("PUT", url, data=packed,
                                  headers={"Content-Type": "application/zip"})
        if zipfile.is_zipfile(source):
            with open(source, "rb") as data:
                return self._call("PUT", url, data=data,
                                  headers={"Content-Type": "application/zip"})
        with open(source, "rb") as data:
            return self._call("POST", url + "/files", files={"file": (source.name, data)})

    def delete_workspace(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/workspaces/{_segment(name)}")


def _segment(name: str) -> str:
    return quote(name, safe="")


def zip_folder(folder: Path, out: Any) -> None:
    """``folder``'s files into the zip ``out``, paths relative to it; a symlink is stored
    as a link entry (its target as the data, as ``zip -y`` does), never followed."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, names in os.walk(folder):
            for name in sorted(names) + [d for d in dirs if (Path(root) / d).is_symlink()]:
                path = Path(root) / name
                rel = path.relative_to(folder).as_posix()
                if path.is_symlink():
                    info = zipfile.ZipInfo(rel)
                    info.external_attr = (0o120777 << 16)
                    zf.writestr(info, os.readlink(path))
                elif path.is_file():
                    zf.write(path, rel)
