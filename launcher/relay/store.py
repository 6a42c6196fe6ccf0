"""The relay's persistent state: sessions, their tickets, keys and listeners, in SQLite.

One row per session. A ticket is stored only as its SHA-256 (the relay never needs it back,
but a job's inputs name it, so the hash finds the job's session); redeeming it is one
conditional UPDATE inside a write transaction, so two runners racing with the same ticket
cannot both win. Everything a restarted relay needs — the session's owner, state, enrolled key,
listener port, base URL and notebook token — is here, so sessions survive a restart.

The store is used from the relay's single event-loop thread; SQLite's own locking guards
against a second process (``everest-jupyter sessions`` reads it only through the API).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from everest_app.sqlite_schema import Migration, add_columns, migrate
from launcher.relay.state import LIVE_STATES, SessionState, can_move

S = SessionState
# Session modes: a JupyterLab of the user's own, or a hub's single-user server.
LAB_MODE = "lab"
HUB_MODE = "hub"
MODES = (LAB_MODE, HUB_MODE)

# The schema's history, oldest first: add a change by appending one Migration (see
# everest_app.sqlite_schema); never edit one that was released.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("the schema of release 0.1.0", """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    mode TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    ticket_hash TEXT UNIQUE,
    ticket_expires REAL NOT NULL,
    public_key TEXT,
    notebook_token TEXT,
    listen_port INTEGER NOT NULL,
    base_url TEXT NOT NULL,
    default_url TEXT NOT NULL DEFAULT '/lab',
    job_id TEXT,
    runner TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions (state);
"""),
    Migration("hub mode: the hub's environment for the runner, and whether the session may "
              "forward to the hub's API",
              add_columns("sessions", hub_env="TEXT",
                          hub_forward="INTEGER NOT NULL DEFAULT 0")),
    Migration("why the runner stopped (a StopReason value)",
              add_columns("sessions", stop_reason="TEXT")),
    Migration("the workspace a session opened ({name, snapshot, read_only}) and what its "
              "runner said of its last save ({saved, snapshot, files, bytes, error})",
              add_columns("sessions", workspace="TEXT", workspace_report="TEXT")),
)


def hash_ticket(ticket: str) -> str:
    """The stored form of a ticket."""
    return hashlib.sha256(ticket.encode("utf-8")).hexdigest()


def new_ticket() -> str:
    """A fresh ticket: 160 random bits in hex (safe to paste, never looks like an option)."""
    return secrets.token_hex(20)


def is_ticket(value: object) -> bool:
    """Whether ``value`` is a ticket exactly as :func:`new_ticket` mints them: nothing around
    it (a ticket with whitespace around it is refused, not trimmed, so it cannot slip past a
    check that compares it as given while the runner trims it)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}", value) is not None


def new_session_id() -> str:
    """A session id: 96 random bits in hex (also the SSH user name and URL prefix part)."""
    return secrets.token_hex(12)


@dataclass
class SessionRecord:
    """One session as stored. ``runner`` is what the runner said about itself at redeem."""

    id: str
    owner: str
    state: SessionState
    mode: str
    label: str
    ticket_expires: float
    public_key: str | None
    notebook_token: str | None
    listen_port: int
    base_url: str
    default_url: str
    job_id: str | None
    created: float
    updated: float
    runner: dict[str, Any] = field(default_factory=dict)
    hub_env: dict[str, str] | None = None
    hub_forward: bool = False
    stop_reason: str | None = None  # what the runner said when it ended the session
    workspace: dict[str, Any] | None = None  # {"name", "snapshot", "read_only"} or None
    workspace_report: dict[str, Any] | None = None  # the runner's word on its last save

    @property
    def live(self) -> bool:
        return self.state.live

    @classmethod
    def from_row(cls, row: sqlite3.Row, sealer: Sealer | None = None) -> SessionRecord:
        data = dict(row)
        if sealer is not None:
            data["notebook_token"] = sealer.open(data.get("notebook_token"))
            data["hub_env"] = sealer.open(data.get("hub_env"))
        data["runner"] = json.loads(data.get("runner") or "{}")
        data["hub_env"] = json.loads(data["hub_env"]) if data.get("hub_env") else None
        data["hub_forward"] = bool(data.get("hub_forward"))
        for name in ("workspace", "workspace_report"):
            data[name] = json.loads(data[name]) if data.get(name) else None
        data["state"] = SessionState.parse(data["state"])
        return cls(**data)


_CACHED_RECORDS = 4096
_COLUMNS = ", ".join(f.name for f in fields(SessionRecord))
_LIVE = tuple(sorted(s.value for s in LIVE_STATES))
_LIVE_MARKS = ", ".join("?" * len(_LIVE))


class Sealer:
    """Secrets at rest (notebook tokens, a hub's environment): AES-GCM under a key kept in a
    file beside the database, not in it — so a copy of the database, or a backup of it,
    opens no one's notebook. Values stored before sealing existed are read as they are."""

    PREFIX = "sealed1:"

    def __init__(self, key_path: Path):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if key_path.exists():
            key = key_path.read_bytes()
        else:
            key = AESGCM.generate_key(bit_length=256)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
        self._aead = AESGCM(key)

    def seal(self, text: str | None) -> str | None:
        if text is None:
            return None
        nonce = secrets.token_bytes(12)
        data = nonce + self._aead.encrypt(nonce, text.encode(), b"everest-jupyter relay")
        return self.PREFIX + base64.b64encode(data).decode()

    def open(self, text: str | None) -> str | None:
        if not text or not text.startswith(self.PREFIX):
            return text
        data = base64.b64decode(text[len(self.PREFIX):])
        return self._aead.decrypt(data[:12], data[12:], b"everest-jupyter relay").decode()


class RelayStore:
    """Sessions in an SQLite file at ``path`` (created with its folder, mode 0600). With
    ``key_path``, secrets are sealed under the key in that file (made on first use)."""

    def __init__(self, path: str | os.PathLike, key_path: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(mode=0o600, exist_ok=True)
        os.chmod(self.path, 0o600)  # it holds notebook tokens
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        migrate(self._db, MIGRATIONS, f"the relay's state {self.path}")
        # get() answers from memory until this store writes: the proxy reads every
        # session's record per request, and only this process writes the database
        self._records: dict[str, SessionRecord | None] = {}
        self._sealer = Sealer(Path(key_path)) if key_path is not None else None

    def _seal(self, text: str | None) -> str | None:
        return self._sealer.seal(text) if self._sealer else text

    def _open(self, text: str | None) -> str | None:
        return self._sealer.open(text) if self._sealer else text

    def close(self) -> None:
        self._db.close()

    def create(self, *, owner: str, ticket: str, ttl: float, listen_port: int, mode: str,
               label: str = "", default_url: str = "/lab",
               session_id: str | None = None, base_url: str | None = None,
               hub_env: dict[str, str] | None = None,
               hub_forward: bool = False,
               workspace: dict[str, Any] | None = None) -> SessionRecord:
        """Store a new session in state ``waiting`` whose ticket expires in ``ttl`` seconds.

        ``base_url`` defaults to ``/session/<id>/``; a hub-mode session has the hub's prefix
        for its server instead, and ``hub_env``: what the runner gets once it redeems.
        ``workspace``: the workspace it opens (``{"name", "snapshot", "read_only"}``).
        """
        now = time.time()
        sid = session_id or new_session_id()
        self._records.clear()
        self._db.execute(
            "INSERT INTO sessions (id, owner, state, mode, label, ticket_hash, ticket_expires,"
            " listen_port, base_url, default_url, created, updated, hub_env, hub_forward,"
            " workspace) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (sid, owner, S.WAITING.value, mode, label, hash_ticket(ticket), now + ttl,
             listen_port, base_url or f"/session/{sid}/", default_url, now, now,
             self._seal(json.dumps(hub_env) if hub_env is not None else None),
             int(hub_forward), json.dumps(workspace) if workspace is not None else None))
        return self.get(sid)

    def redeem(self, ticket: str, public_key: str, notebook_token: str,
               runner: dict[str, Any]) -> SessionRecord | None:
        """Enroll ``public_key`` with the session of ``ticket``; ``None`` if refused.

        Succeeds once per ticket, while it has not expired. Asking again with the *same* key
        and token (a runner retrying after a lost answer) returns the session again; any
        other key, an unknown or expired ticket, gets ``None``.
        """
        now = time.time()
        digest = hash_ticket(ticket)
        self._records.clear()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE ticket_hash = ?",
                                   (digest,)).fetchone()
            if row is None:
                return None
            if row["state"] == S.WAITING and row["ticket_expires"] > now:
                self._db.execute(
                    "UPDATE sessions SET state=?, public_key=?, notebook_token=?, runner=?,"
                    " updated=? WHERE id=?",
                    (S.STARTING.value, public_key, self._seal(notebook_token),
                     json.dumps(runner), now, row["id"]))
                return self.get(row["id"])
            if (row["state"] == S.STARTING and row["public_key"] == public_key
                    and self._open(row["notebook_token"]) == notebook_token
                    and row["ticket_expires"] > now):
                return SessionRecord.from_row(row, self._sealer)
            return None

    def by_ticket(self, ticket: str) -> SessionRecord | None:
        """The session a ticket was minted for, whatever its state (used or not)."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE ticket_hash = ?",
                               (hash_ticket(ticket),)).fetchone()
        return SessionRecord.from_row(row, self._sealer) if row else None

    def get(self, session_id: str) -> SessionRecord | None:
        """The session ``session_id`` (``None`` if unknown). The record may be shared with
        other callers until the next write: do not change it."""
        try:
            return self._records[session_id]
        except KeyError:
            pass
        row = self._db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",
                               (session_id,)).fetchone()
        record = SessionRecord.from_row(row, self._sealer) if row else None
        if len(self._records) >= _CACHED_RECORDS:
            self._records.clear()
        self._records[session_id] = record
        return record

    def hub_session_at(self, path: str) -> SessionRecord | None:
        """The live hub-mode session whose base URL (the hub's prefix) starts ``path``."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE mode=? AND state IN ({_LIVE_MARKS}) AND"
            " substr(?, 1, length(base_url)) = base_url ORDER BY length(base_url) DESC"
            " LIMIT 1", (HUB_MODE, *_LIVE, path)).fetchone()
        return SessionRecord.from_row(row, self._sealer) if row else None

    def list(self, owner: str | None = None, live_only: bool = True) -> list[SessionRecord]:
        """Sessions, newest first; of one ``owner`` when given; live ones unless told."""
        sql, args = f"SELECT {_COLUMNS} FROM sessions", []
        where = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if live_only:
            where.append(f"state IN ({_LIVE_MARKS})")
            args.extend(_LIVE)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC"
        return [SessionRecord.from_row(r, self._sealer) for r in self._db.execute(sql, args)]

    def set_state(self, session_id: str, state: SessionState) -> bool:
        """Move the session to ``state`` if the transition table allows it from its current
        state; a refused move changes nothing, is logged, and returns False."""
        state = SessionState(state)
        self._records.clear()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT state FROM sessions WHERE id = ?",
                                   (session_id,)).fetchone()
            if row is None or not can_move(session_id, row["state"], state):
                return False
            # an ended session's hub secrets are of no more use: they do not outlive it
            self._db.execute("UPDATE sessions SET state=?, updated=?,"
                             " hub_env = CASE WHEN ? THEN NULL ELSE hub_env END WHERE id=?",
                             (state.value, time.time(), not state.live, session_id))
        return True

    def update(self, session_id: str, **fields: Any) -> None:
        """Set ``job_id``, ``label``, ``listen_port``, ``stop_reason``,
        ``workspace_report`` (a dict) or ``runner`` (what the runner said about itself, a
        dict)."""
        allowed = {"job_id", "label", "listen_port", "stop_reason", "workspace_report",
                   "runner"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"only {sorted(allowed)} can be updated")
        for name in ("workspace_report", "runner"):
            if name in fields:
                fields[name] = json.dumps(fields[name])
        cols = ", ".join(f"{k}=?" for k in fields)
        self._records.clear()
        self._db.execute(f"UPDATE sessions SET {cols}, updated=? WHERE id=?",
                         (*fields.values(), time.time(), session_id))

    def expire_tickets(self, now: float | None = None) -> list[str]:
        """Mark sessions whose ticket expired unredeemed ``expired``; return their ids."""
        now = time.time() if now is None else now
        ids = [r["id"] for r in self._db.execute(
            "SELECT id FROM sessions WHERE state=? AND ticket_expires <= ?",
            (S.WAITING.value, now))]
        return [sid for sid in ids if self.set_state(sid, S.EXPIRED)]

    def stale(self, before: float) -> list[str]:
        """Sessions stuck starting or disconnected since ``before`` (their runner is gone)."""
        return [r["id"] for r in self._db.execute(
            "SELECT id FROM sessions WHERE state IN (?, ?) AND updated < ?",
            (S.STARTING.value, S.DISCONNECTED.value, before))]

    def reset_connections(self) -> Iterable[str]:
        """After a restart no tunnel is up: connected/ready sessions become disconnected."""
        ids = [r["id"] for r in self._db.execute(
            "SELECT id FROM sessions WHERE state IN (?, ?)",
            (S.CONNECTED.value, S.READY.value))]
        return [sid for sid in ids if self.set_state(sid, S.DISCONNECTED)]
