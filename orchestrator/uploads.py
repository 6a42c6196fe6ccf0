"""Local files given as inputs, uploaded once per content.

Two tasks that pass the same bytes under the same file name share one upload, even when
they ask at the same moment (a lock per content hash). The cache lives as long as the
orchestrator: uploads are temporary files on the server, so a new process uploads again.
"""

from __future__ import annotations

import io
import logging
import threading

from everest_app.client import EverestClient
from orchestrator.inputs import FileInput

log = logging.getLogger(__name__)


class Uploads:
    """Uploads :class:`FileInput` values and remembers their URIs. Thread-safe."""

    def __init__(self, client: EverestClient):
        self.client = client
        self.count = 0
        self._uris: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def uri_for(self, file: FileInput) -> str:
        """The server URI of ``file``'s content, uploading it the first time.

        Raises the client's errors (after its retries) when the upload fails.
        """
        key = (file.sha256, file.filename)
        with self._guard:
            if key in self._uris:
                return self._uris[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._uris:
                    return self._uris[key]
            source = file.path if file.path is not None else io.BytesIO(file.data or b"")
            answer = self.client.upload(source, filename=file.filename)
            log.debug("uploaded %s as %s", file.filename, answer["uri"])
            with self._guard:
                self._uris[key] = answer["uri"]
                self.count += 1
            return answer["uri"]
