"""The pure parts of task execution: command building, names, URIs, output parsing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from everest_app.descriptor import from_dict
from everest_local.files import canonical_uri
from everest_local.processes import describe_status
from everest_local.staging import (
    StagingError,
    build_argv,
    collect_outputs,
    format_value,
    name_clash,
    resolve_executable,
    safe_name,
    stage_inputs,
)
from everest_local.workdir import UnsafeFile, UnsafeFolder, WorkDir, move_out


@pytest.mark.parametrize("template, values, argv", [
    ("prog ${a}", {"a": "x y"}, ["prog", "x y"]),
    ("prog ${a}", {"a": "$(touch X)"}, ["prog", "$(touch X)"]),
    ("prog '${a}'", {"a": "; rm -rf ~"}, ["prog", "; rm -rf ~"]),
    ("prog --v=${a}", {"a": "1"}, ["prog", "--v=1"]),
    ("prog ${a}", {"a": "${b}", "b": "no"}, ["prog", "${b}"]),
    ("prog ${a} end", {"a": ""}, ["prog", "end"]),
    ("prog ${list}", {"list": ["1", "2"]}, ["prog", "1", "2"]),
    ("prog x${list}", {"list": ["1", "2"]}, ["prog", "x1 2"]),
    ("prog ${nope}", {}, ["prog", "${nope}"]),
    ('prog "two words" ${a}', {"a": "z"}, ["prog", "two words", "z"]),
])
def test_build_argv_splits_first_then_substitutes(template, values, argv):
    assert build_argv(template, values) == argv


@pytest.mark.parametrize("template", ["prog 'unbalanced", "   ", "${a}"])
def test_build_argv_errors(template):
    with pytest.raises(StagingError):
        build_argv(template, {"a": ""})


def test_resolve_executable(tmp_path):
    assert resolve_executable(["python3", "x.py"], tmp_path, None)[0] == sys.executable
    assert resolve_executable(["python3.11", "-c", "1"], tmp_path, None)[0] == sys.executable
    assert resolve_executable(["true"], tmp_path, "/usr/bin:/bin")[0].endswith("/true")
    with pytest.raises(StagingError, match="Windows"):
        resolve_executable(["cmd.exe", "/c", "x"], tmp_path, "/usr/bin:/bin")
    with pytest.raises(StagingError, match="not found"):
        resolve_executable(["./missing.sh"], tmp_path, None)
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert resolve_executable(["./run.sh"], tmp_path, None) == [str(tmp_path / "./run.sh")]


@pytest.mark.parametrize("name, safe", [
    ("a.txt", "a.txt"), ("../../a.txt", "a.txt"), ("..\\..\\a.txt", "a.txt"),
    ("..", None), ("", None), ("dir/", None), ("x\x00y", None), ("a" * 300, None),
])
def test_safe_name(name, safe):
    assert safe_name(name) == safe


@pytest.mark.parametrize("uri, canon", [
    ("/api/files/temp/ab/a%20b.txt", "/api/files/temp/ab/a%20b.txt"),
    ("/api/files/temp/ab/a b.txt", "/api/files/temp/ab/a%20b.txt"),
    ("http://127.0.0.1:9/api/files/jobs/j/x", "/api/files/jobs/j/x"),
    ("http://evil:9/api/files/jobs/j/x", None),
    ("/etc/passwd", None),
    ("/api/files/temp/..%2f..%2fx", "/api/files/temp/..%2F..%2Fx"),
])
def test_canonical_uri(uri, canon):
    assert canonical_uri(uri, "http://127.0.0.1:9") == canon


def test_values_and_statuses():
    assert [format_value(v) for v in (True, 3, 2.5, "s")] == ["true", "3", "2.5", "s"]
    assert describe_status(0) == "exit code 0"
    assert describe_status(-9) == "killed by SIGKILL"
    assert "SIGINT" in describe_status(130)


def _app(**config):
    return from_dict({"alias": "t", "inputs": {"f": {"type": "string", "format": "uri"},
                                                "n": {"type": "number"}},
                      "outputs": {"num": {"type": "number", "required": True},
                                  "text": {"type": "string"}},
                      "config": {"command": "x", **config}})


def test_stage_inputs_missing_file_and_escape(tmp_path):
    app = _app(inputMappings=[{"param": "n", "file": "n.txt"}])
    with pytest.raises(StagingError, match="no longer exists"):
        stage_inputs(app, {"f": "/api/files/temp/1/a"}, tmp_path, {})
    values = stage_inputs(app, {"n": 4}, tmp_path, {})
    assert values == {"f": "", "n": "4"} and (tmp_path / "n.txt").read_text() == "4"


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "task" / "work"
    work.mkdir(parents=True)
    return work


def test_collect_outputs_parsing(tmp_path):
    app = _app(outputMappings=[{"param": "num", "file": "o.txt", "pattern": r"v=(\S+)"},
                               {"param": "text", "file": "stdout"}])
    never = lambda opened, name: pytest.fail("no file outputs here")  # noqa: E731
    work = _work(tmp_path)
    with WorkDir(work.parent) as held, pytest.raises(StagingError, match="did not write"):
        collect_outputs(app, held, never)
    (work / "o.txt").write_text("v=abc")
    with WorkDir(work.parent) as held:
        with pytest.raises(StagingError, match="not a number"):
            collect_outputs(app, held, never)
        assert collect_outputs(app, held, never, strict=False) == {}
    (work / "o.txt").write_text("noise\nv=-1.5e3\n")
    (work / "stdout").write_text("hello\n")
    with WorkDir(work.parent) as held:
        assert collect_outputs(app, held, never) == {"num": -1500.0, "text": "hello\n"}
    (work / "o.txt").write_text("v=nan")
    with WorkDir(work.parent) as held, pytest.raises(StagingError, match="not a number"):
        collect_outputs(app, held, never)


def test_collect_outputs_refuses_links_out(tmp_path):
    app = _app(outputMappings=[{"param": "num", "file": "o.txt"}])
    outside = tmp_path / "secret.txt"
    outside.write_text("42")
    work = _work(tmp_path)
    (work / "o.txt").symlink_to(outside)
    with WorkDir(work.parent) as held, pytest.raises(StagingError, match="is a link"):
        collect_outputs(app, held, lambda p, n: "")
    assert Path(outside).read_text() == "42"


def test_a_work_folder_replaced_by_a_link_is_never_entered(tmp_path):
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "o.txt").write_text("42")
    task = tmp_path / "task"
    task.mkdir()
    (task / "work").symlink_to(secret)
    with pytest.raises(UnsafeFolder, match=f"replaced by a link \\(to {secret}\\)"):
        WorkDir(task)
    (task / "work").unlink()
    (task / "work").write_text("a file, not a folder")
    with pytest.raises(UnsafeFolder, match="not a folder"):
        WorkDir(task)


def test_outputs_through_linked_folders_fifos_and_globs(tmp_path):
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "counts-1.txt").write_text("stolen")
    work = _work(tmp_path)
    (work / "sub").symlink_to(secret)
    (work / "counts-2.txt").write_text("mine")
    (work / "counts-3.txt").symlink_to(secret / "counts-1.txt")
    (work / ".counts-4.txt").write_text("hidden")
    os.mkfifo(work / "pipe.txt")
    with WorkDir(work.parent) as held:
        with pytest.raises(UnsafeFile, match="through a link"):
            held.open("sub/counts-1.txt")
        assert held.glob("sub/*.txt") == []  # a linked folder is not entered
        assert held.glob("counts-*.txt") == ["counts-2.txt", "counts-3.txt"]
        assert held.open("pipe.txt") is None  # a FIFO is no file (and does not block)
        with pytest.raises(UnsafeFile, match="outside"):
            held.open("../task/work/counts-2.txt")
        opened = held.open("counts-2.txt")
        try:
            dest = tmp_path / "published"
            move_out(opened, dest)
        finally:
            opened.close()
    assert dest.read_text() == "mine" and not (work / "counts-2.txt").exists()
    assert (secret / "counts-1.txt").read_text() == "stolen"


def test_a_hard_linked_output_is_copied_not_moved(tmp_path):
    work = _work(tmp_path)
    other = tmp_path / "other-name.txt"
    other.write_text("shared inode")
    os.link(other, work / "out.txt")
    with WorkDir(work.parent) as held:
        opened = held.open("out.txt")
        try:
            move_out(opened, tmp_path / "published")
        finally:
            opened.close()
    assert (tmp_path / "published").read_text() == "shared inode"
    assert other.stat().st_nlink == 2  # the other name still has its file: nothing moved
    assert (tmp_path / "published").stat().st_ino != other.stat().st_ino


def test_no_input_replaces_an_application_file(tmp_path):
    files = tmp_path / "files"
    (files / "lib").mkdir(parents=True)
    (files / "run.py").write_text("the app")
    (files / "lib" / "util.py").write_text("the app's module")
    app = from_dict({"alias": "a", "inputs": {"f": {"type": "string", "format": "uri"},
                                              "many": {"type": "array", "items": {
                                                  "type": "string", "format": "uri"}},
                                              "m": {"type": "string", "format": "uri"}},
                     "config": {"command": "python3 run.py ${f}",
                                "inputMappings": [{"param": "m", "file": "run.py"}]}},
                    files_source=files)
    for inputs, clash in (({"f": "/api/files/temp/1/run.py"}, "'run.py'"),
                          ({"f": "/api/files/temp/1/lib"}, "'lib'"),
                          ({"many": ["/api/files/temp/1/x", "/api/files/temp/2/run.py"]},
                           "'run.py'")):
        assert clash in name_clash(app, inputs) and "input '" in name_clash(app, inputs)
        sources = {uri: tmp_path / "upload" for uri in
                   [*([inputs["f"]] if "f" in inputs else []), *inputs.get("many", [])]}
        (tmp_path / "upload").write_text("user's")
        work = tmp_path / f"work-{len(list(tmp_path.iterdir()))}"
        with pytest.raises(StagingError, match="would replace the application's own"):
            stage_inputs(app, inputs, work, sources)
        assert (work / "run.py").read_text() == "the app"
    assert name_clash(app, {"f": "/api/files/temp/1/data.txt"}) is None
    assert name_clash(app, {"m": "/api/files/temp/1/anything"}) is None  # the app's mapping


def test_record_files_are_read_without_links_or_blocking(tmp_path):
    """A task's exit/pid files as the server reads them (LocalHost.read, the local and
    Docker backends): a FIFO in their place reads as absent at once, a link is not followed."""
    from everest_local.backends.base import read_status
    from everest_local.backends.hosts import LocalHost
    from everest_local.workdir import read_small
    from tests.fixtures.loops import run_coroutine

    secret = tmp_path / "root-only"
    secret.write_text("7\n")
    task = tmp_path / "task"
    task.mkdir()
    os.mkfifo(task / "exit")
    assert read_status(task) is None  # returns: a reader would otherwise wait for a writer
    assert run_coroutine(LocalHost().read(str(task / "exit"))) is None  # not asyncio.run:
    # after a browser test Playwright holds the main thread's loop (tests/fixtures/loops.py)
    (task / "exit").unlink()
    (task / "exit").symlink_to(secret)
    assert read_status(task) is None and read_small(task, "exit") is None
    (task / "exit").unlink()
    (task / "exit").write_text("3\n")
    assert read_status(task) == 3


def test_put_tree_copies_by_descriptor_and_never_through_a_link(tmp_path):
    """Staging a task folder into another account's Slurm workdir (LocalHost.put_dir): modes
    kept, everything given to that account, and a destination that is already a link (to a
    folder of root's) is refused with nothing written there."""
    from everest_local.workdir import put_tree

    src = tmp_path / "staged"
    (src / "work" / "sub").mkdir(parents=True)
    (src / "job.sh").write_text("#!/bin/sh\n")
    (src / "job.sh").chmod(0o700)
    (src / "work" / "sub" / "in.txt").write_text("input")
    dest = tmp_path / "theirs" / "task-1"
    dest.parent.mkdir()
    owner = os.getuid() if os.geteuid() != 0 else 65534
    put_tree(src, dest, owner, owner)
    assert (dest / "work" / "sub" / "in.txt").read_text() == "input"
    assert (dest / "job.sh").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_uid for p in [dest, *dest.rglob("*")]} == {owner}
    root_only = tmp_path / "root-only"
    root_only.mkdir(mode=0o700)
    (dest.parent / "task-2").symlink_to(root_only)
    with pytest.raises(FileExistsError):
        put_tree(src, dest.parent / "task-2", owner, owner)
    assert list(root_only.iterdir()) == [] and root_only.stat().st_uid == os.getuid()
