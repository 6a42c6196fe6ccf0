"""The local server's SQLite database: users, tokens, jobs, tasks, job events and files.

One :class:`Store` per process, used from one thread (the server's event loop). The
database runs in WAL mode with ``synchronous=NORMAL``: a commit survives the server being
killed (``kill -9``); only a power loss may drop the last few commits. Every multi-row
change happens in one transaction (``with store.tx():``), so a crash never leaves half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from everest_app.sqlite_schema import Migration, add_columns, migrate
from everest_app.states import ACTIVE_STATES, JobState, TaskState, can_move

DB_NAME = "everest.sqlite3"

# The schema's history, oldest first: add a change by appending one Migration (see
# everest_app.sqlite_schema); never edit one that was released.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("the schema of release 0.1.0", """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, password TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, user TEXT NOT NULL, label TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, job_id TEXT);
CREATE INDEX IF NOT EXISTS tokens_job ON tokens(job_id);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    name TEXT NOT NULL, app_id TEXT NOT NULL, app_alias TEXT, app_name TEXT,
    state TEXT NOT NULL, inputs TEXT NOT NULL, resources TEXT, result TEXT, info TEXT,
    attempt INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, state TEXT NOT NULL, dir TEXT NOT NULL,
    pid INTEGER, pstart INTEGER, started REAL, deadline REAL,
    stop_reason TEXT, stop_at REAL, exit_code INTEGER);
CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL, ts REAL NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, ts);
CREATE TABLE IF NOT EXISTS files (
    uri TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, job_id TEXT,
    name TEXT NOT NULL, path TEXT NOT NULL, length INTEGER NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS files_owner ON files(owner, kind);
CREATE INDEX IF NOT EXISTS files_job ON files(job_id);
"""),
    Migration("tasks run on resources: which one, and the handle naming the task there",
              add_columns("tasks", resource="TEXT", handle="TEXT")),
    Migration("jobs by owner and last change, for listings of the jobs ended since a cursor",
              "CREATE INDEX IF NOT EXISTS jobs_owner_updated ON jobs(owner, updated);"),
)


_JOB_COLUMNS = ("id", "owner", "name", "app_id", "app_alias", "app_name", "state", "inputs",
                "resources", "result", "info", "attempt", "created", "updated")


def new_id() -> str:
    """A fresh 24-hex-digit id, the shape of Everest's ids (96 random bits)."""
    return secrets.token_hex(12)


@dataclass
class JobRow:
    """One job as stored; ``inputs``/``result``/``resources`` are decoded JSON."""

    id: str
    owner: str
    name: str
    app_id: str
    app_alias: str | None
    app_name: str | None
    state: JobState
    inputs: dict[str, Any]
    resources: list[Any] | None
    result: dict[str, Any] | None
    info: str | None
    attempt: int
    created: float
    updated: float


@dataclass
class TaskRow:
    """One task (one attempt at running a job) as stored."""

    id: str
    job_id: str
    state: TaskState
    dir: str
    pid: int | None
    pstart: int | None
    started: float | None
    deadline: float | None
    stop_reason: str | None
    stop_at: float | None
    exit_code: int | None
    resource: str | None = None  # the resource's id (None: this machine)
    handle: str | None = None  # JSON: what names the task there (see everest_local.backends)


_TASK_COLUMNS = tuple(f.name for f in fields(TaskRow))


class Store:
    """Data access for the server; every method is a few SQL statements, no policy."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # private, whatever the umask: SQLite gives its -wal and -shm files the same mode
        self.path.touch(mode=0o600, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        migrate(self.db, MIGRATIONS, f"the local server's database {self.path}")
        self._depth = 0
        # stamps stay increasing across restarts (a cursor of ended jobs is one of them)
        self._last_update = self.db.execute("SELECT MAX(updated) FROM jobs").fetchone()[0] \
            or 0.0
        self.on_job_end: Callable[[], None] | None = None
        """Called when an update gives a job a final state (before its transaction ends)."""

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested uses join the outer one); rolled back on an exception."""
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- users and tokens -------------------------------------------------------------------

    def add_user(self, name: str, password_hash: str) -> None:
        """Create user ``name``, or set a new password: that revokes their sign-in tokens
        (their jobs, and the task tokens of running jobs, stay)."""
        with self.tx() as db:
            db.execute("INSERT INTO users(name, password, created) VALUES (?, ?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET password=excluded.password",
                       (name, password_hash, time.time()))
            db.execute("DELETE FROM tokens WHERE user=? AND job_id IS NULL", (name,))

    def user_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM users").fetchone()[0]

    def password_hash(self, name: str) -> str | None:
        row = self.db.execute("SELECT password FROM users WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def add_token(self, token_hash: str, user: str, label: str, expires: float,
                  job_id: str | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO tokens(hash, user, label, created, expires, job_id) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (token_hash, user, label, time.time(), expires, job_id))

    def token(self, token_hash: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT user, label, created, expires, job_id FROM tokens "
                              "WHERE hash=?", (token_hash,)).fetchone()
        if not row:
            return None
        return dict(zip(("user", "label", "created", "expires", "job_id"), row, strict=True))

    def delete_token(self, token_hash: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM tokens WHERE hash=?", (token_hash,))

    def delete_job_tokens(self, job_id: str) -> list[str]:
        """Revoke the task tokens of a job; returns their hashes (to drop from caches)."""
        with self.tx() as db:
            rows = db.execute("SELECT hash FROM tokens WHERE job_id=?", (job_id,)).fetchall()
            db.execute("DELETE FROM tokens WHERE job_id=?", (job_id,))
        return [r[0] for r in rows]

    def purge_expired_tokens(self, now: float) -> None:
        """Delete expired tokens, and task tokens whose job has ended or is gone (a server
        stopped between a job's end and its tokens' revocation leaves none behind)."""
        active = sorted(state.value for state in ACTIVE_STATES)
        with self.tx() as db:
            db.execute("DELETE FROM tokens WHERE expires < ?", (now,))
            db.execute("DELETE FROM tokens WHERE job_id IS NOT NULL AND job_id NOT IN "
                       f"(SELECT id FROM jobs WHERE state IN ({', '.join('?' * len(active))}))",
                       active)

    # -- jobs --------------------------------------------------------------------------------

    def insert_job(self, job: JobRow) -> None:
        with self.tx() as db:
            db.execute(f"INSERT INTO jobs({', '.join(_JOB_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(_JOB_COLUMNS))})", _job_values(job))

    def job(self, job_id: str) -> JobRow | None:
        row = self.db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id=?",
                              (job_id,)).fetchone()
        return _job_row(row) if row else None

    def jobs_of(self, owner: str) -> list[JobRow]:
        """The owner's jobs, newest first."""
        rows = self.db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE owner=? "
                               "ORDER BY seq DESC", (owner,)).fetchall()
        return [_job_row(r) for r in rows]

    def jobs_by_id(self, job_ids: list[str]) -> dict[str, JobRow]:
        """The jobs of ``job_ids`` that exist, by id (a few queries for many ids)."""
        found: dict[str, JobRow] = {}
        for start in range(0, len(job_ids), 500):  # within SQLite's bound-variable limit
            chunk = job_ids[start:start + 500]
            rows = self.db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id IN "
                                   f"({', '.join('?' * len(chunk))})", chunk).fetchall()
            for row in rows:
                job = _job_row(row)
                found[job.id] = job
        return found

    def job_stamp(self, job_id: str) -> tuple[str, float, str | None] | None:
        """(owner, updated, app_alias) of a job, or None: enough to use a cached rendering."""
        return self.db.execute("SELECT owner, updated, app_alias FROM jobs WHERE id=?",
                               (job_id,)).fetchone()

    def job_stamps_of(self, owner: str) -> list[tuple[str, float, str | None]]:
        """(id, updated, app_alias) of the owner's jobs, newest first."""
        return self.db.execute("SELECT id, updated, app_alias FROM jobs WHERE owner=? "
                               "ORDER BY seq DESC", (owner,)).fetchall()

    def job_ids_named(self, owner: str, name: str) -> list[str]:
        rows = self.db.execute("SELECT id FROM jobs WHERE owner=? AND name=?", (owner, name))
        return [r[0] for r in rows]

    def jobs_in_flight(self, owner: str) -> int:
        """How many of ``owner``'s jobs have not ended."""
        active = sorted(s.value for s in ACTIVE_STATES)
        # through the state index (+owner keeps SQLite off the owner index): the count reads
        # the jobs in flight, not every job the owner ever ran, on each submit
        return self.db.execute(
            f"SELECT COUNT(*) FROM jobs WHERE +owner=? AND state IN "
            f"({', '.join('?' * len(active))})", (owner, *active)).fetchone()[0]

    def stored_bytes(self, owner: str) -> int:
        """The bytes of ``owner``'s stored files (uploads and job outputs)."""
        return self.db.execute("SELECT COALESCE(SUM(length), 0) FROM files WHERE owner=?",
                               (owner,)).fetchone()[0]

    def jobs_in_states(self, states: tuple[JobState, ...]) -> list[JobRow]:
        """Jobs in any of ``states``, oldest first (queue order)."""
        marks = ", ".join("?" * len(states))
        rows = self.db.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE state IN "
                               f"({marks}) ORDER BY seq", [s.value for s in states]).fetchall()
        return [_job_row(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> bool:
        """Set some columns of a job (``result``/``resources`` are JSON-encoded here).

        A new ``state`` must be a move :data:`everest_app.states.JOB_TRANSITIONS` allows from
        the stored one: otherwise nothing of the update is written, the refusal is logged,
        and False returned (a finished job never changes again, whoever asks). True when
        the update was written (or the job does not exist).
        """
        for key in ("result", "resources", "inputs"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        ends = False
        if "state" in fields:
            state = JobState(fields["state"])
            fields["state"], ends = state.value, state.is_terminal
        # strictly increasing, so (id, updated) identifies a version of the job
        now = time.time()
        self._last_update = now = max(now, self._last_update + 1e-6)
        fields["updated"] = now
        _check_columns(fields, _JOB_COLUMNS)
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as db:
            if "state" in fields:
                row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
                if row is not None and not can_move(job_id, row[0], fields["state"]):
                    return False
            db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))
        if ends and self.on_job_end is not None:
            self.on_job_end()
        return True

    def stamp(self) -> float:
        """A stamp no later than any change to come (see :meth:`update_job`)."""
        return self._last_update

    def ended_stamps_since(self, owner: str, after: float,
                           limit: int) -> list[tuple[str, float, str | None]]:
        """(id, updated, app_alias) of the owner's jobs in a final state changed after the
        stamp ``after``, oldest change first, at most ``limit``. A job in a final state
        never changes state again, so its ``updated`` is when it ended (or when its end
        was last amended)."""
        final = sorted(s.value for s in JobState if s.is_terminal)
        return self.db.execute(
            "SELECT id, updated, app_alias FROM jobs WHERE owner=? AND updated>? AND state IN "
            f"({', '.join('?' * len(final))}) ORDER BY updated LIMIT ?",
            (owner, after, *final, limit)).fetchall()

    def delete_job(self, job_id: str) -> None:
        with self.tx() as db:
            for table, col in (("events", "job_id"), ("tasks", "job_id"), ("jobs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {col}=?", (job_id,))

    def app_job_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT app_id, COUNT(*) FROM jobs GROUP BY app_id")
        return dict(rows.fetchall())

    # -- events (the job log) ----------------------------------------------------------------

    def add_event(self, job_id: str, text: str, ts: float | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO events(job_id, ts, text) VALUES (?, ?, ?)",
                       (job_id, time.time() if ts is None else ts, text))

    def events(self, job_id: str) -> list[tuple[float, str]]:
        rows = self.db.execute("SELECT ts, text FROM events WHERE job_id=? ORDER BY ts, rowid",
                               (job_id,))
        return rows.fetchall()

    # -- tasks -------------------------------------------------------------------------------

    def insert_task(self, task: TaskRow) -> None:
        with self.tx() as db:
            values = [getattr(task, column) for column in _TASK_COLUMNS]
            values[_TASK_COLUMNS.index("state")] = TaskState(task.state).value
            db.execute(f"INSERT INTO tasks({', '.join(_TASK_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(_TASK_COLUMNS))})", values)

    def delete_task(self, task_id: str) -> None:
        """Forget a task that never started (its attempt is made again under its id)."""
        with self.tx() as db:
            db.execute("DELETE FROM tasks WHERE id=?", (task_id,))

    def update_task(self, task_id: str, **fields: Any) -> None:
        if "state" in fields:
            fields["state"] = TaskState(fields["state"]).value
        _check_columns(fields, _TASK_COLUMNS)
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as db:
            db.execute(f"UPDATE tasks SET {sets} WHERE id=?", (*fields.values(), task_id))

    def tasks_in_states(self, states: tuple[TaskState, ...]) -> list[TaskRow]:
        marks = ", ".join("?" * len(states))
        rows = self.db.execute(f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks "
                               f"WHERE state IN ({marks})", [s.value for s in states])
        return [_task_row(r) for r in rows.fetchall()]

    # -- files -------------------------------------------------------------------------------

    def add_file(self, uri: str, owner: str, kind: str, job_id: str | None, name: str,
                 path: str, length: int) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO files(uri, owner, kind, job_id, name, path, "
                       "length, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (uri, owner, kind, job_id, name, path, length, time.time()))

    def file(self, uri: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT uri, owner, kind, job_id, name, path, length FROM files "
                              "WHERE uri=?", (uri,)).fetchone()
        if not row:
            return None
        return dict(zip(("uri", "owner", "kind", "job_id", "name", "path", "length"), row,
                        strict=True))

    def delete_file(self, uri: str) -> list[str]:
        """Forget the file ``uri``; returns its path (to remove from disk), if it had one."""
        return self._delete_files("uri=?", (uri,))

    def delete_temp_files(self, owner: str) -> list[str]:
        """Forget the owner's uploaded (temporary) files; returns their paths."""
        return self._delete_files("owner=? AND kind='temp'", (owner,))

    def delete_job_files(self, job_id: str) -> list[str]:
        """Forget the output files of a job; returns their paths."""
        return self._delete_files("job_id=? AND kind='job'", (job_id,))

    def _delete_files(self, where: str, args: tuple[Any, ...]) -> list[str]:
        with self.tx() as db:
            paths = [r[0] for r in db.execute(f"SELECT path FROM files WHERE {where}", args)]
            db.execute(f"DELETE FROM files WHERE {where}", args)
        return paths


def _job_values(job: JobRow) -> tuple[Any, ...]:
    return (job.id, job.owner, job.name, job.app_id, job.app_alias, job.app_name,
            JobState(job.state).value,
            json.dumps(job.inputs), json.dumps(job.resources) if job.resources is not None
            else None, json.dumps(job.result) if job.result is not None else None, job.info,
            job.attempt, job.created, job.updated)


def _job_row(row: tuple[Any, ...]) -> JobRow:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    values["inputs"] = json.loads(values["inputs"])
    values["state"] = JobState.parse(values["state"])
    for key in ("resources", "result"):
        values[key] = json.loads(values[key]) if values[key] is not None else None
    return JobRow(**values)


def _task_row(row: tuple[Any, ...]) -> TaskRow:
    task = TaskRow(*row)
    task.state = TaskState(task.state)
    return task


def _check_columns(fields: dict[str, Any], columns: tuple[str, ...]) -> None:
    """Column names reach SQL as text: only the table's own may."""
    unknown = set(fields) - set(columns)
    if unknown:
        raise ValueError(f"no such column(s): {', '.join(sorted(unknown))}")
