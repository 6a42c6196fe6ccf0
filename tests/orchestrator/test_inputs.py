"""Input walking: files become FileInputs, futures are found, keys are stable, values resolve."""

import io
from pathlib import Path

import pytest

from orchestrator.futures import JobFuture
from orchestrator.inputs import (
    FileInput,
    dependencies,
    fingerprint,
    may_be_local_path,
    paths_for_file_inputs,
    prepare,
    resolve,
)


def done_future(key, result):
    f = JobFuture("app", key, "label")
    f.job_id = "job-" + key
    f.set_result(result)
    return f


def test_prepare_hashes_paths_and_reads_file_objects(tmp_path):
    p = tmp_path / "data.txt"
    p.write_bytes(b"hello")
    prepared = prepare({"a": p, "b": io.BytesIO(b"hello"), "c": [io.StringIO("hi")], "n": 3})
    assert prepared["a"].filename == "data.txt" and prepared["a"].path == p
    assert prepared["a"].sha256 == prepared["b"].sha256  # same bytes, same hash
    assert prepared["b"].data == b"hello" and prepared["b"].filename == "upload"
    assert prepared["c"][0].data == b"hi"
    assert prepared["n"] == 3


def test_prepare_refuses_a_missing_file_at_once(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare({"a": tmp_path / "nope"})


def test_dependencies_are_distinct_and_in_order():
    a, b = JobFuture("x", "ka", "a"), JobFuture("x", "kb", "b")
    deps = dependencies({"x": [a.output("o"), {"y": b}], "z": a})
    assert deps == [a, b]


def test_fingerprint_names_futures_and_files_by_key_and_hash():
    a = JobFuture("x", "ka", "a")
    f = FileInput("n.txt", "abc")
    fp = fingerprint({"b": [a.output("o")[2]], "a": a, "f": f})
    assert fp == {"a": {"$future": "ka"},
                  "b": [{"$future": "ka", "$output": "o", "$index": [2]}],
                  "f": {"$file": "abc", "name": "n.txt"}}
    assert list(fp) == ["a", "b", "f"]  # sorted: dict order does not change the key


def test_resolve_uses_outputs_items_and_upload_uris():
    a = done_future("ka", {"files": ["/u/1", "/u/2"], "n": 5})
    single = done_future("kb", {"only": "v"})
    uploaded = []

    def upload(file):
        uploaded.append(file.filename)
        return "/api/files/temp/" + file.filename

    value = resolve({"x": a.output("files")[1], "y": [a.output("n"), single],
                     "f": FileInput("d.txt", "h", data=b"")}, upload)
    assert value == {"x": "/u/2", "y": [5, "v"], "f": "/api/files/temp/d.txt"}
    assert uploaded == ["d.txt"]


def test_resolve_explains_missing_outputs_and_ambiguous_futures():
    a = done_future("ka", {"p": 1, "q": [7]})
    with pytest.raises(KeyError, match="no output 'r'"):
        resolve({"x": a.output("r")}, str)
    with pytest.raises(ValueError, match="2 outputs"):
        resolve({"x": a}, str)
    with pytest.raises(IndexError, match=r"no item \[3\]"):
        resolve({"x": a.output("q")[3]}, str)
    with pytest.raises(TypeError, match=r"no item \[0\]"):
        resolve({"x": a.output("p")[0]}, str)


def test_paths_as_strings_are_sent_as_they_are(tmp_path):
    # a string may already be a URI; only Path objects are uploaded
    assert prepare({"f": str(tmp_path)}) == {"f": str(tmp_path)}
    assert isinstance(prepare({"f": Path(__file__)})["f"], FileInput)


def test_strings_naming_local_files_become_paths_only_for_file_inputs(tmp_path):
    local = tmp_path / "x.txt"
    local.write_text("x")
    specs = {"file": {"type": "string", "format": "uri"}, "note": {"type": "string"},
             "many": {"type": "array", "items": {"type": "string", "format": "uri"}}}
    given = {"file": str(local), "note": str(local), "many": [str(local), "/api/files/temp/a/b"],
             "other": str(local)}
    assert may_be_local_path(given["file"]) and not may_be_local_path("one")
    assert not may_be_local_path("http://host/x") and not may_be_local_path("/api/files/t/x")
    out = paths_for_file_inputs(given, specs)
    assert out == {"file": local, "note": str(local), "many": [local, "/api/files/temp/a/b"],
                   "other": str(local)}
    with pytest.raises(FileNotFoundError, match=r"input 'file': '/nowhere/x.txt' is neither a "
                                                r"local file nor a file URI; pass pathlib.Path"):
        paths_for_file_inputs({"file": "/nowhere/x.txt"}, specs)
