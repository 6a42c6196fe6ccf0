"""The pure parts of task execution: command building, names, URIs, output parsing."""

from __future__ import annotations

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
    resolve_executable,
    safe_name,
    stage_inputs,
)


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


def test_collect_outputs_parsing(tmp_path):
    app = _app(outputMappings=[{"param": "num", "file": "o.txt", "pattern": r"v=(\S+)"},
                               {"param": "text", "file": "stdout"}])
    never = lambda path, name: pytest.fail("no file outputs here")  # noqa: E731
    with pytest.raises(StagingError, match="did not write"):
        collect_outputs(app, tmp_path, never)
    (tmp_path / "o.txt").write_text("v=abc")
    with pytest.raises(StagingError, match="not a number"):
        collect_outputs(app, tmp_path, never)
    assert collect_outputs(app, tmp_path, never, strict=False) == {}
    (tmp_path / "o.txt").write_text("noise\nv=-1.5e3\n")
    (tmp_path / "stdout").write_text("hello\n")
    assert collect_outputs(app, tmp_path, never) == {"num": -1500.0, "text": "hello\n"}
    (tmp_path / "o.txt").write_text("v=nan")
    with pytest.raises(StagingError, match="not a number"):
        collect_outputs(app, tmp_path, never)


def test_collect_outputs_refuses_links_out(tmp_path):
    app = _app(outputMappings=[{"param": "num", "file": "o.txt"}])
    outside = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    outside.write_text("42")
    work = tmp_path / "w"
    work.mkdir()
    (work / "o.txt").symlink_to(outside)
    with pytest.raises(StagingError, match="outside"):
        collect_outputs(app, work, lambda p, n: "")
    assert Path(outside).read_text() == "42"
