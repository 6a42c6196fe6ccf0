"""Versioned storage: a data folder written by release 0.1.0 opens with this code, losing
nothing, and the migration machinery keeps its promises (in order, atomic, no downgrades).

``tests/data/release-0.1.0`` holds SQL dumps of both databases as that release's own server
and relay store wrote them (``make.py`` there made them).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from everest_app import sqlite_schema
from everest_app.client import EverestClient
from everest_app.sqlite_schema import Migration, SchemaTooNew, add_columns, migrate
from everest_local import store as server_store
from everest_local.store import Store
from launcher.relay import store as relay_store
from launcher.relay.client import RelayClient
from launcher.relay.state import SessionState
from launcher.relay.store import RelayStore
from tests.harness.server import ServerProcess

RELEASE = Path(__file__).resolve().parents[1] / "data" / "release-0.1.0"
PASSWORD = "release-0.1.0-password"  # alice's, in the dump


def _release_folder(folder: Path) -> Path:
    """A server data folder with release 0.1.0's databases."""
    (folder / "relay").mkdir(parents=True)
    for dump, path in (("everest.sql", folder / "everest.sqlite3"),
                       ("relay.sql", folder / "relay" / "relay.sqlite")):
        db = sqlite3.connect(path)
        db.executescript((RELEASE / dump).read_text())
        db.close()
    return folder


def _rows(path: Path) -> dict[str, list[dict]]:
    """Every row of every table, as {column: value}, in a stable order."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    out = {t: sorted((dict(r) for r in db.execute(f"SELECT * FROM {t}")), key=repr)
           for t in tables}
    db.close()
    return out


def test_release_0_1_0_databases_migrate_keeping_every_row(tmp_path: Path) -> None:
    folder = _release_folder(tmp_path / "server")
    for path, opener, migrations in (
            (folder / "everest.sqlite3", Store, server_store.MIGRATIONS),
            (folder / "relay" / "relay.sqlite", RelayStore, relay_store.MIGRATIONS)):
        before = _rows(path)
        assert before and all(before.values())
        opener(folder if opener is Store else path).close()
        after = _rows(path)
        assert set(after) == set(before)
        for table, rows in before.items():
            # the old columns keep their values; new ones are added with their defaults
            assert [{k: r[k] for k in rows[0]} for r in after[table]] == rows, table
        db = sqlite3.connect(path)
        assert sqlite_schema.version(db) == len(migrations)
        db.close()
        opener(folder if opener is Store else path).close()  # a second open changes nothing
        assert _rows(path) == after


def test_the_release_0_1_0_folder_serves_its_jobs_sessions_and_password(real_components: None,
                                                                          tmp_path: Path) -> None:
    folder = _release_folder(tmp_path / "server")
    server = ServerProcess(folder, users=(), extra_args=["--plugin", "launcher.relay.plugin"])
    server.start()
    try:
        token = EverestClient.login(server.url, "alice", PASSWORD)  # the old password works
        client = EverestClient(server.url, token)
        jobs = {job.name: job for job in client.jobs()}
        assert {name: str(job.state) for name, job in jobs.items()} == {
            "kept": "DONE", "failing": "FAILED", "cancelled": "CANCELLED"}
        assert jobs["kept"].output("file").endswith("/output.txt")
        assert "duration must not be negative" in jobs["failing"].info
        assert "Job CANCELLED: cancelled by the user" in client.log(jobs["cancelled"].id)
        relay_url = json.loads((folder / "relay.json").read_text())["url"]
        sessions = RelayClient(relay_url, token).sessions(include_ended=True)
        assert {s["label"] for s in sessions} == {"waiting", "redeemed"}
        redeemed = next(s for s in sessions if s["label"] == "redeemed")
        assert redeemed["job_id"] == jobs["kept"].id
        assert redeemed["runner"] == {"hostname": "resource-1"}
        assert SessionState(redeemed["state"]) in SessionState  # a state this code knows
    finally:
        server.close()


def test_a_database_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / server_store.DB_NAME)
    db.execute(f"PRAGMA user_version = {len(server_store.MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(SchemaTooNew, match="newer release"):
        Store(tmp_path)


def test_migrations_apply_in_order_once_and_a_failing_one_changes_nothing(
        tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite", isolation_level=None)
    first = (Migration("a table", "CREATE TABLE t (a TEXT);\nINSERT INTO t VALUES ('x');"),)
    assert migrate(db, first, "test") == 1
    second = first + (Migration("a column", add_columns("t", b="INTEGER NOT NULL DEFAULT 7")),)
    assert migrate(db, second, "test") == 2
    assert db.execute("SELECT a, b FROM t").fetchall() == [("x", 7)]

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES ('half', 1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        migrate(db, second + (Migration("broken", broken),), "test")
    assert sqlite_schema.version(db) == 2
    assert db.execute("SELECT a FROM t").fetchall() == [("x",)]
    assert migrate(db, second, "test") == 2  # nothing left to do
