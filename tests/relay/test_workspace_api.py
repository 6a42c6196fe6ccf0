"""The relay's workspace API over HTTP, against a real relay process (tokens checked with the
local server): upload, list, history, download of any snapshot, delete; another user's
workspace, traversal in upload names, the quota and the one-writer rule — each refused with
its JSON error — and the OpenAPI description the relay serves."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest

from tests.harness.relay import RelayProcess
from tests.harness.server import ServerProcess
from tests.session.helpers import Api

QUOTA = 2_000_000
MAX_FILE = 1_500_000


@pytest.fixture(scope="module")
def relay(local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("wsapi") / "state", local_server.url,
                        "--workspace-quota", str(QUOTA), "--workspace-max-file", str(MAX_FILE))
    try:
        yield proc.start()
    finally:
        proc.stop()


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def unzipped(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def put_zip(api: Api, name: str, files: dict[str, bytes]):
    return api("PUT", f"/api/workspaces/{name}", data=zipped(files),
               headers={"Content-Type": "application/zip"})


def test_upload_list_history_download_and_delete(alice: Api) -> None:
    first = {"analysis.ipynb": b'{"cells": []}', "data/a.csv": b"x,y\n1,2\n"}
    made = put_zip(alice, "proj", first)
    assert made.status_code == 201, made.text
    snap1 = made.json()
    assert snap1["files"] == 2 and snap1["session_id"] is None

    listed = alice("GET", "/api/workspaces").json()
    mine = {w["name"]: w for w in listed["workspaces"]}
    assert mine["proj"]["files"] == 2 and mine["proj"]["live_session"] is None
    assert listed["quota"] == QUOTA and listed["usage"] >= len(first["data/a.csv"])

    second = {"analysis.ipynb": b'{"cells": [1]}', "new.txt": b"hello"}
    made = alice("POST", "/api/workspaces/proj/files",
                 files=[("f", (path, data)) for path, data in second.items()])
    assert made.status_code == 201, made.text
    history = alice("GET", "/api/workspaces/proj").json()
    assert [s["id"] for s in history["snapshots"]] == [made.json()["id"], snap1["id"]]

    latest = alice("GET", "/api/workspaces/proj/zip")
    assert latest.status_code == 200
    assert latest.headers["Content-Type"] == "application/zip"
    assert "proj.zip" in latest.headers["Content-Disposition"]
    assert unzipped(latest.content) == second
    older = alice("GET", "/api/workspaces/proj/zip", params={"snapshot": snap1["id"]})
    assert unzipped(older.content) == first  # any snapshot of the history, byte for byte

    assert alice("DELETE", "/api/workspaces/proj").status_code == 200
    gone = alice("GET", "/api/workspaces/proj")
    assert gone.status_code == 404 and gone.json()["message"]
    assert "proj" not in [w["name"] for w in alice("GET", "/api/workspaces").json()[
        "workspaces"]]


def test_names_with_a_slash_travel_as_one_segment(alice: Api) -> None:
    assert put_zip(alice, "alice%2Fgpu", {"x.txt": b"1"}).status_code == 201
    assert alice("GET", "/api/workspaces/alice%2Fgpu").json()["name"] == "alice/gpu"
    assert unzipped(alice("GET", "/api/workspaces/alice%2Fgpu/zip").content) == {"x.txt": b"1"}


def test_another_users_workspace_is_not_there_for_them(alice: Api, bob: Api) -> None:
    assert put_zip(alice, "secret", {"key.txt": b"alice's"}).status_code == 201
    for method, path in (("GET", "/api/workspaces/secret"),
                         ("GET", "/api/workspaces/secret/zip"),
                         ("DELETE", "/api/workspaces/secret")):
        answer = bob(method, path)
        assert answer.status_code == 404 and answer.json()["message"], (method, path)
    assert "secret" not in [w["name"] for w in bob("GET", "/api/workspaces").json()[
        "workspaces"]]
    # bob's upload under the same name is his own workspace; alice's stays as it was
    assert put_zip(bob, "secret", {"key.txt": b"bob's"}).status_code == 201
    assert unzipped(alice("GET", "/api/workspaces/secret/zip").content) == {
        "key.txt": b"alice's"}
    assert Api(alice.url, None)("GET", "/api/workspaces").status_code == 401


@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/evil", "a/../../evil", "nul\x00.txt"])
def test_upload_names_never_escape(alice: Api, bad: str) -> None:
    answer = alice("POST", "/api/workspaces/trav/files",
                   files=[("f", (bad, b"x")), ("g", ("ok.txt", b"y"))])
    assert answer.status_code == 400 and answer.json()["message"]
    if "\x00" not in bad:
        as_zip = put_zip(alice, "trav", {bad: b"x"})
        assert as_zip.status_code == 400 and as_zip.json()["message"]
    assert alice("GET", "/api/workspaces/trav").status_code == 404  # nothing half-made


@pytest.mark.parametrize("path", ["..", "a%2F..%2Fb", "%2Fabs"])
def test_workspace_names_never_escape(alice: Api, path: str) -> None:
    answer = put_zip(alice, path, {"x": b"1"})
    assert answer.status_code in (400, 404) and answer.json()["message"]


def test_the_quota_and_the_file_limit_answer_413_and_keep_nothing(alice: Api) -> None:
    assert put_zip(alice, "big", {"small.txt": b"s"}).status_code == 201
    too_big = put_zip(alice, "big", {"huge.bin": b"\0" * (MAX_FILE + 1)})
    assert too_big.status_code == 413 and too_big.json()["message"]
    for name in ("big", "other"):
        over = put_zip(alice, name, {f"p{i}.bin": bytes([i]) * 1_000_000 for i in range(3)})
        assert over.status_code == 413 and "quota" in over.json()["message"]
    assert unzipped(alice("GET", "/api/workspaces/big/zip").content) == {"small.txt": b"s"}
    assert alice("GET", "/api/workspaces/other").status_code == 404
    assert alice("DELETE", "/api/workspaces/big").status_code == 200


def test_a_workspace_a_live_session_writes_has_one_writer(alice: Api) -> None:
    assert put_zip(alice, "shared", {"n.txt": b"1"}).status_code == 201
    live = alice.new_session(workspace="shared")
    second = alice("POST", "/api/sessions", json={"workspace": "shared"})
    assert second.status_code == 409 and live["id"] in second.json()["message"]
    copy = alice.new_session(workspace="shared", read_only=True)  # a copy is fine
    for method, kwargs in (("DELETE", {}), ("PUT", {"data": zipped({"m": b"2"})})):
        busy = alice(method, "/api/workspaces/shared", **kwargs)
        assert busy.status_code == 409 and live["id"] in busy.json()["message"]
    listed = {w["name"]: w for w in alice("GET", "/api/workspaces").json()["workspaces"]}
    assert listed["shared"]["live_session"] == live["id"]
    alice("DELETE", f"/api/sessions/{live['id']}")
    assert alice.new_session(workspace="shared")["id"]  # free again for a writer...
    for session in alice("GET", "/api/sessions").json():
        alice("DELETE", f"/api/sessions/{session['id']}")
    assert copy["id"] not in [s["id"] for s in alice("GET", "/api/sessions").json()]
    assert alice("DELETE", "/api/workspaces/shared").status_code == 200  # ...and to delete


def test_bad_requests_get_json_errors(alice: Api) -> None:
    not_zip = alice("PUT", "/api/workspaces/w", data=b"not a zip")
    assert not_zip.status_code == 400 and "zip" in not_zip.json()["message"]
    empty = alice("POST", "/api/workspaces/w/files", data={"field": "no file"})
    assert empty.status_code == 400 and empty.json()["message"]
    unknown = alice("GET", "/api/workspaces/none/zip", params={"snapshot": "nope"})
    assert unknown.status_code in (400, 404) and unknown.json()["message"]


def test_the_relay_serves_its_openapi_description(alice: Api) -> None:
    doc = Api(alice.url, None)("GET", "/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert {"/api/workspaces", "/api/workspaces/{name}", "/api/workspaces/{name}/zip",
            "/api/workspaces/{name}/files"} <= set(paths)
    assert set(paths["/api/workspaces/{name}"]) >= {"get", "put", "delete"}
    # every answer described for a workspace call is one the API gives above
    refs = [r for ops in paths.values() for op in ops.values() if isinstance(op, dict)
            for r in op.get("responses", {})]
    assert set(refs) <= {"200", "201", "400", "401", "404", "409", "413"}
