"""Versioned SQLite schemas: an ordered list of migrations and ``PRAGMA user_version``.

A database's ``user_version`` is the number of migrations applied to it. Opening it runs the
ones after that, in order, each in its own write transaction together with the version bump,
so a crash leaves it at one version or the next, never between. A database written by a newer
release (a version beyond the list) is refused with :class:`SchemaTooNew` instead of guessed at.

To change a schema, append one :class:`Migration` to the store's list — never edit or reorder
the ones already released::

    MIGRATIONS = (
        ...,
        Migration("jobs remember their priority",
                  add_columns("jobs", priority="INTEGER NOT NULL DEFAULT 0")),
    )

A migration is SQL text (one or more statements) or a function of the connection. The first
migration of each store is the schema as released before versioning (``CREATE ... IF NOT
EXISTS``), so databases from that release (``user_version`` 0) migrate like empty ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Step = str | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    """One schema change: ``note`` says what it is for, ``step`` does it."""

    note: str
    step: Step


class SchemaTooNew(ValueError):
    """The database was written by a newer release than this one."""


def add_columns(table: str, **columns: str) -> Callable[[sqlite3.Connection], None]:
    """A step adding ``name=declaration`` columns to ``table``, each unless it is there
    already (databases that got it before schemas were versioned have it)."""

    def step(db: sqlite3.Connection) -> None:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, declaration in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    return step


def version(db: sqlite3.Connection) -> int:
    """The number of migrations applied to ``db``."""
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration], what: str) -> int:
    """Apply the migrations ``db`` lacks; returns its version (``len(migrations)``).

    ``db`` must be in autocommit mode (``isolation_level=None``). Raises
    :class:`SchemaTooNew` for a database of a newer release; ``what`` names it in the message.
    """
    latest = len(migrations)
    while True:
        db.execute("BEGIN IMMEDIATE")  # re-read under the write lock: another process may
        try:                           # be migrating the same file
            current = version(db)
            if current >= latest:
                db.execute("COMMIT")
                break
            step = migrations[current].step
            if callable(step):
                step(db)
            else:
                for statement in _statements(step):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {current + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    if current > latest:
        raise SchemaTooNew(f"{what} has schema version {current}, newer than this "
                           f"everest-jupyter knows ({latest}): it was written by a newer "
                           "release; upgrade this one to use it")
    return latest


def _statements(script: str) -> list[str]:
    """Split SQL text into complete statements (``sqlite3.complete_statement`` decides)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {pending.strip()[:80]}")
    return out
