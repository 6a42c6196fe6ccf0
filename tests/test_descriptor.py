"""Application descriptions: loading the three shapes, input validation, export round trip."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from everest_app import descriptor
from everest_app.apps import builtin_app_dirs
from everest_app.descriptor import Application, DescriptorError, export_zip, load, validate_inputs
from everest_app.errors import BadRequestError

TEMPLET = Path(__file__).resolve().parent / "data" / "templet-parsweep.zip"  # a real export


def _app(**inputs) -> Application:
    return descriptor.from_dict({"alias": "t", "inputs": inputs,
                                 "config": {"command": "python3 t.py"}})


def test_templet_export_loads_with_everything_it_declares():
    app = load(TEMPLET)
    assert app.alias == "MyNewEverestApplication"
    assert set(app.inputs) == {"code", "r", "s", "b"}
    assert descriptor.is_file_input(app.inputs["code"])
    assert set(app.outputs) == {"L1", "L2", "L3", "cout"}
    assert app.command == "cmd.exe /c cmaple -q -i code.txt"
    assert [m["file"] for m in app.input_mappings] == ["rho.txt", "sigma.txt", "beta.txt",
                                                       "code.txt"]
    assert app.output_mappings[0] == {"param": "cout", "file": "stdout", "pattern": ""}
    assert app.time_limit == 1.0  # read in seconds, as documented
    assert app.retry_failed_tasks is False
    assert app.file_names() == []
    assert not app.is_service


def test_templet_inputs_validate():
    app = load(TEMPLET)
    out = validate_inputs(app, {"r": 28, "s": 10, "b": 2.6667, "code": "/api/files/temp/a/x.mpl"})
    assert out == {"r": 28, "s": 10, "b": 2.6667, "code": "/api/files/temp/a/x.mpl"}
    assert validate_inputs(app, {}) == {}  # nothing is required
    with pytest.raises(BadRequestError, match="'r'.*number.*string"):
        validate_inputs(app, {"r": "28"})


def test_templet_round_trips_through_export(tmp_path):
    original = load(TEMPLET)
    out = export_zip(original, tmp_path / "again.zip")
    again = load(out)
    assert again.to_dict() == original.to_dict()
    with zipfile.ZipFile(TEMPLET) as a, zipfile.ZipFile(out) as b:
        assert json.loads(a.read("application.json")) == json.loads(b.read("application.json"))
        assert "ApplicationFiles/" in b.namelist()


def test_folder_and_json_file_load_with_their_application_files(tmp_path):
    folder = tmp_path / "app"
    shutil.copytree(Path(builtin_app_dirs()[0]), folder)
    by_folder = load(folder)
    by_json = load(folder / "application.json")
    assert by_folder.to_dict() == by_json.to_dict()
    assert by_folder.file_names() == by_json.file_names() != []
    dest = tmp_path / "work"
    by_folder.copy_files_to(dest)
    assert sorted(p.name for p in dest.iterdir()) == by_folder.file_names()


def test_export_of_folder_app_carries_files_and_round_trips(tmp_path):
    folder = next(p for p in builtin_app_dirs() if p.name == "append")
    app = load(folder)
    zipped = load(export_zip(app, tmp_path / "append.zip"))
    assert zipped.to_dict() == app.to_dict()
    assert zipped.file_names() == ["append.py"]
    dest = tmp_path / "w"
    zipped.copy_files_to(dest)
    assert (dest / "append.py").read_bytes() == (folder / "ApplicationFiles/append.py").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_builtin_demo_apps_load():
    apps = {load(p).alias: load(p) for p in builtin_app_dirs()}
    assert {"hostname", "sleep", "append"} <= set(apps)
    assert apps["sleep"].inputs["duration"]["type"] == "number"
    assert apps["hostname"].inputs == {} and "hostname" in apps["hostname"].outputs
    assert descriptor.is_file_input(apps["append"].outputs["file"])


def test_zip_with_escaping_member_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("application.json", json.dumps({"alias": "x", "config": {"command": "a"}}))
        zf.writestr("ApplicationFiles/../../evil.txt", "x")
    with pytest.raises(DescriptorError, match="unsafe"):
        load(bad).copy_files_to(tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("data, match", [
    ({"config": {"command": "x"}}, "alias"),
    ({"alias": "../x", "config": {"command": "x"}}, "alias"),
    ({"alias": "x"}, "command"),
    ({"alias": "x", "inputs": [], "config": {"command": "x"}}, "inputs"),
    ({"alias": "x", "inputs": {"a": {"type": "matrix"}}, "config": {"command": "x"}}, "type"),
    ({"alias": "x", "config": {"command": "x", "outputMappings": [{"param": "a"}]}}, "file"),
    ({"alias": "x", "config": {"command": "x",
                               "outputMappings": [{"param": "a", "file": "../a"}]}}, "leaves"),
    ({"alias": "x", "config": {"command": "x", "outputMappings": [
        {"param": "a", "file": "a", "pattern": "(unclosed"}]}}, "regular expression"),
])
def test_bad_descriptions_name_the_problem(data, match):
    with pytest.raises(DescriptorError, match=match):
        descriptor.from_dict(data)


def test_unreadable_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope")
    (tmp_path / "application.json").write_text("{not json")
    with pytest.raises(DescriptorError, match="not a readable"):
        load(tmp_path)


def test_required_default_and_unknown_inputs():
    app = _app(a={"type": "number", "required": True}, b={"type": "string", "default": "hi"},
               c={"type": "integer"})
    assert validate_inputs(app, {"a": 1.5, "zzz": [1]}) == {"a": 1.5, "b": "hi", "zzz": [1]}
    with pytest.raises(BadRequestError, match="input 'a' is required") as err:
        validate_inputs(app, {"b": "x"})
    assert err.value.status == 400
    with pytest.raises(BadRequestError, match="'a' is required"):
        validate_inputs(app, {"a": None})
    with pytest.raises(BadRequestError, match="JSON object"):
        validate_inputs(app, [1, 2])


@pytest.mark.parametrize("prop, good, bad, match", [
    ({"type": "number"}, [0, -2.5, 10**20], ["1", True, [], float("nan")],
     "number|finite"),
    ({"type": "integer"}, [3, 4.0], [3.5, "3", False], "integer"),
    ({"type": "boolean"}, [True, False], [1, "true"], "true or false"),
    ({"type": "string"}, ["", "$(touch X)"], [1, ["a"], {"a": 1}], "string"),
    ({"type": "string", "enum": ["a", "b"]}, ["a"], ["c"], "one of"),
    ({"type": "enum", "enum": ["x"]}, ["x"], ["y", 1], "one of|string"),
    ({"type": "string", "format": "uri"}, ["/api/files/temp/1/a.txt", "https://h/x"],
     ["a.txt", 5], "file URI"),
    ({"type": "array", "items": {"type": "number"}}, [[], [1, 2]], [1, [1, "2"]],
     r"array|\[1\]"),
    ({"type": "array", "items": {"type": "string", "format": "uri"}, "maxItems": 1},
     [["/api/files/x/a"]], [["/api/files/x/a", "/api/files/x/b"]], "maxItems"),
    ({"type": "number", "minimum": 0, "maximum": 1}, [0, 1], [-1, 2], "minimum|maximum"),
])
def test_types(prop, good, bad, match):
    app = _app(v=prop)
    for value in good:
        assert validate_inputs(app, {"v": value})["v"] == value
    for value in bad:
        with pytest.raises(BadRequestError, match=match) as err:
            validate_inputs(app, {"v": value})
        assert "'v" in err.value.message


def test_integer_valued_float_becomes_int():
    out = validate_inputs(_app(n={"type": "integer"}), {"n": 4.0})
    assert out["n"] == 4 and isinstance(out["n"], int)


def test_time_limit_and_service_keyword():
    app = descriptor.from_dict({
        "alias": "s", "keywords": ["Service"],
        "config": {"command": "x", "resourceRequirements": {"timeLimit": {"defaultValue": 0}}}})
    assert app.time_limit is None and app.is_service
    app.config["resourceRequirements"]["timeLimit"]["defaultValue"] = 90
    assert app.time_limit == 90.0
