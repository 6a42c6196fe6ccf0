"""The workspace store on a real folder: snapshots share unchanged files, one writer at a
time, history depth, quota and per-file limits all or nothing, names that escape refused,
links kept as links in zips and imports."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from launcher.relay.workspaces import (
    BadName,
    FolderWorkspaceStore,
    QuotaExceeded,
    WorkspaceBusy,
    WorkspaceNotFound,
    check_name,
    check_relative_path,
)


@pytest.fixture
def live() -> set[str]:
    return set()


@pytest.fixture
def store(tmp_path: Path, live: set[str]) -> FolderWorkspaceStore:
    return FolderWorkspaceStore(tmp_path / "ws", history=3, is_live=live.__contains__)


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # as the SFTP server does: a new file, never in place


def _session(store: FolderWorkspaceStore, live: set[str], sid: str, files: dict[str, bytes],
             name: str = "default") -> None:
    live.add(sid)
    opened = store.open_for_session("alice", name, sid)
    for rel, data in files.items():
        _write(opened.root, rel, data)
    store.note_saved("alice", name, sid)
    store.close_for_session("alice", name, sid, saved=True, resource="host1")
    live.discard(sid)


def _zip_names(store: FolderWorkspaceStore, name: str, snap: str | None = None) -> dict:
    buf = io.BytesIO()
    store.write_zip("alice", name, snap, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def test_a_session_end_cuts_a_snapshot_sharing_unchanged_files(store, live) -> None:
    _session(store, live, "s1", {"a.ipynb": b"{}", "data/big.bin": b"x" * 100_000})
    _session(store, live, "s2", {"a.ipynb": b'{"cells": []}'})
    snaps = store.snapshots("alice", "default")
    assert [s.session_id for s in snaps] == ["s2", "s1"]
    assert snaps[0].files == 2 and snaps[0].resource == "host1" and snaps[0].saved
    # the 100 kB file is stored once for two snapshots and the working copy
    assert 100_000 <= store.usage("alice") < 100_000 + 100
    assert _zip_names(store, "default", snaps[1].id)["a.ipynb"] == b"{}"
    assert _zip_names(store, "default")["a.ipynb"] == b'{"cells": []}'
    [info] = store.list("alice")
    assert (info.name, info.files, info.last_session, info.live_session) == \
        ("default", 2, "s2", None)
    assert store.list("bob") == []
    with pytest.raises(WorkspaceNotFound):
        store.snapshots("bob", "default")


def test_history_keeps_the_last_n(store, live) -> None:
    for i in range(5):
        _session(store, live, f"s{i}", {"n.txt": str(i).encode()})
    snaps = store.snapshots("alice", "default")
    assert [s.session_id for s in snaps] == ["s4", "s3", "s2"]


def test_one_writer_and_read_only_copies(store, live) -> None:
    _session(store, live, "s0", {"f.txt": b"v0"})
    live.add("s1")
    writer = store.open_for_session("alice", "default", "s1")
    with pytest.raises(WorkspaceBusy) as refused:
        store.open_for_session("alice", "default", "s2")
    assert refused.value.session_id == "s1" and "s1" in refused.value.message
    with pytest.raises(WorkspaceBusy):
        store.delete("alice", "default")
    live.add("s3")
    reader = store.open_for_session("alice", "default", "s3", read_only=True)
    assert reader.read_only and reader.root != writer.root
    assert (reader.root / "f.txt").read_bytes() == b"v0"
    _write(writer.root, "f.txt", b"v1")
    assert (reader.root / "f.txt").read_bytes() == b"v0"
    store.close_for_session("alice", "default", "s3")
    assert not reader.root.exists()
    # the writer dies without a close (relay restart, kill): once it is not live, what it
    # saved becomes a snapshot and the next session may write
    store.note_saved("alice", "default", "s1")
    live.discard("s1")
    live.add("s4")
    store.open_for_session("alice", "default", "s4")
    snap = store.snapshots("alice", "default")[0]
    assert snap.session_id == "s1" and not snap.saved


def test_restore_a_snapshot_into_a_new_session(store, live) -> None:
    _session(store, live, "s1", {"f.txt": b"old"})
    old = store.snapshots("alice", "default")[0].id
    _session(store, live, "s2", {"f.txt": b"new", "g.txt": b"g"})
    live.add("s3")
    opened = store.open_for_session("alice", "default", "s3", snapshot_id=old)
    assert sorted(p.name for p in opened.root.iterdir()) == ["f.txt"]
    assert (opened.root / "f.txt").read_bytes() == b"old"
    with pytest.raises(WorkspaceNotFound):
        store.open_for_session("alice", "default", "s9", snapshot_id="20200101T000000Z-abcdef")
    with pytest.raises(BadName):
        store.open_for_session("alice", "default", "s9", snapshot_id="../../x")


def test_import_a_folder_and_a_zip_with_links_kept_as_links(store, live, tmp_path) -> None:
    src = tmp_path / "project"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.py").write_text("print(1)")
    os.symlink("sub/a.py", src / "link")
    os.symlink("/etc/passwd", src / "outside")
    snap = store.import_files("alice", "proj", src)
    assert snap.files == 1 and snap.session_id is None
    buf = io.BytesIO()
    store.write_zip("alice", "proj", None, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        assert stat.S_ISLNK(modes["outside"]) and zf.read("outside") == b"/etc/passwd"
        assert zf.read("sub/a.py") == b"print(1)"
    buf.seek(0)
    store.import_files("alice", "copy", buf)
    root = store.open_for_session("alice", "copy", "r1", read_only=True).root
    assert os.readlink(root / "outside") == "/etc/passwd"
    assert (root / "sub" / "a.py").read_text() == "print(1)"


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x", "a\x00b"])
def test_an_upload_that_escapes_is_refused_and_leaves_nothing(store, bad) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        zf.writestr(zipfile.ZipInfo("placeholder"), b"x")
        zf.filelist[-1].filename = bad
    buf.seek(0)
    with pytest.raises(BadName):
        store.import_files("alice", "w", buf)
    assert store.list("alice") == []
    assert not [p for p in store.root.rglob("*") if p.is_file()]


def test_a_zip_through_a_link_is_refused(store) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("d")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/tmp")
        zf.writestr("d/evil.txt", b"x")
    buf.seek(0)
    with pytest.raises(BadName):
        store.import_files("alice", "w", buf)


def test_quota_and_file_limit_all_or_nothing(tmp_path, live) -> None:
    store = FolderWorkspaceStore(tmp_path / "ws", quota=1000, max_file=600,
                                 is_live=live.__contains__)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 500)
    store.import_files("alice", "one", src)
    (src / "b").write_bytes(b"b" * 700)
    with pytest.raises(QuotaExceeded, match="per file"):
        store.import_files("alice", "two", src)
    (src / "b").write_bytes(b"b" * 600)
    with pytest.raises(QuotaExceeded, match="quota"):
        store.import_files("alice", "two", src)
    assert [w.name for w in store.list("alice")] == ["one"]
    assert store.usage("alice") == 500
    assert store.usage("bob") == 0


@pytest.mark.parametrize("bad", ["..", "a/../b", "/abs", "a//b", "a\\b", "x\x00", "", "a" * 201])
def test_workspace_names_that_escape_are_refused(bad) -> None:
    if bad == "":
        assert check_name(bad) == "default"
        return
    with pytest.raises(BadName):
        check_name(bad)


def test_names_with_parts_stay_one_folder(store, live) -> None:
    _session(store, live, "s1", {"x": b"1"}, name="alice/server1")
    _session(store, live, "s2", {"y": b"2"}, name="alice")
    assert sorted(w.name for w in store.list("alice")) == ["alice", "alice/server1"]
    assert set(_zip_names(store, "alice")) == {"y"}


def test_relative_paths() -> None:
    assert check_relative_path("a/./b//c") == ("a", "b", "c")
    for bad in ("/a", "../a", "a/..", "", "a\x00"):
        with pytest.raises(BadName):
            check_relative_path(bad)


def test_delete(store, live) -> None:
    _session(store, live, "s1", {"x": b"1"})
    store.delete("alice", "default")
    assert store.list("alice") == [] and store.usage("alice") == 0
    with pytest.raises(WorkspaceNotFound):
        store.delete("alice", "default")
