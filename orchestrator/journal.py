"""The journal: what this orchestrator submitted, so a restarted kernel re-attaches.

An append-only file of JSON lines:

- ``{"run": "<id>"}`` once, first: the run id that makes this journal's job keys unique;
- ``{"intent": key, "name": job_name}`` just before a submission is sent;
- ``{"job": key, "id": job_id}`` once the server answered with the job's id.

A task is keyed by what it is (application, inputs with futures and files by their own keys,
name, resources, its occurrence number and attempt), so the same program run again computes
the same keys. A key with an id re-attaches to that job; a key with only an intent may or
may not have reached the server (the process died during the request), so the orchestrator
looks for a job with that unique name before submitting again.

Each line is written with one ``write`` and flushed, so a killed process leaves at most one
torn last line, which is skipped. The file is locked while open (POSIX), so two live
orchestrators cannot share a journal.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, documented above
    fcntl = None


class JournalInUse(RuntimeError):
    """Another live process holds this journal open."""


class Journal:
    """An open journal file. Thread-safe. Use :meth:`close` (or ``with``) when done."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, str] = {}
        self._intents: dict[str, str] = {}
        self.run_id: str | None = None
        self._file = open(self.path, "a+", encoding="utf-8")
        self._lock_file()
        self._load()
        if self.run_id is None:
            self.run_id = secrets.token_hex(8)
            self._append({"run": self.run_id})

    def _lock_file(self) -> None:
        if fcntl is None:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._file.close()
            raise JournalInUse(f"journal {self.path} is open in another process; close that "
                               "orchestrator first or use another journal file") from exc

    def _load(self) -> None:
        self._file.seek(0)
        torn = 0
        text = self._file.read()
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                torn += 1
                continue
            if "run" in entry and self.run_id is None:
                self.run_id = str(entry["run"])
            elif "job" in entry:
                self._jobs[entry["job"]] = entry["id"]
            elif "intent" in entry:
                self._intents[entry["intent"]] = entry["name"]
        if text and not text.endswith("\n"):
            self._file.write("\n")  # so the next entry starts on a line of its own
        if torn:
            log.warning("journal %s: skipped %d unreadable line(s)", self.path, torn)
        if self._jobs:
            log.info("journal %s: %d job(s) to re-attach to", self.path, len(self._jobs))

    def _append(self, entry: dict) -> None:
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def __len__(self) -> int:
        return len(self._jobs)

    def job_for(self, key: str) -> str | None:
        """The id of the job submitted for ``key``, if the journal knows it."""
        with self._lock:
            return self._jobs.get(key)

    def intended(self, key: str) -> str | None:
        """The job name of a submission for ``key`` that was sent without a recorded id."""
        with self._lock:
            return None if key in self._jobs else self._intents.get(key)

    def record_intent(self, key: str, name: str) -> None:
        """Note that a submission for ``key`` named ``name`` is about to be sent."""
        with self._lock:
            if self._intents.get(key) != name:
                self._intents[key] = name
                self._append({"intent": key, "name": name})

    def record_job(self, key: str, job_id: str) -> None:
        """Note that the job for ``key`` is ``job_id``."""
        with self._lock:
            if self._jobs.get(key) != job_id:
                self._jobs[key] = job_id
                self._append({"job": key, "id": job_id})

    def close(self) -> None:
        """Flush and release the file (and its lock). Idempotent."""
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
