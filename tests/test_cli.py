"""The CLI's behaviour: commands, output, exit codes, bad arguments, a server that is down."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import responses
from responses import matchers

from everest_app import config
from launcher.cli.root import main

URL = "https://everest.test"
JOB = {"id": "a" * 24, "name": "demo", "state": "DONE", "inputs": {"duration": 1},
       "appId": "b" * 24, "appAlias": "sleep", "appName": "sleep", "result": {}}


@pytest.fixture
def logged_in(home, monkeypatch):
    """A profile for URL with a stored token, as `login` leaves it."""
    config.save_profile(config.Profile(name="test", url=URL), token="stored-token")
    return home


@pytest.fixture
def api():
    with responses.RequestsMock() as rsps:
        yield rsps


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "launcher.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("login", "logout", "apps", "app", "jobs", "job", "files"):
        assert f"\n    {command} " in out


def test_server_down_prints_one_line_and_exits_3(home):
    proc = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "--everest", "http://127.0.0.1:9", "jobs"],
        capture_output=True, text=True)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Cannot reach Everest")


def test_no_server_configured_is_one_clear_line(home, capsys):
    assert main(["jobs"]) == 1
    assert "No Everest server configured" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["job"], ["job", "show"], ["nonsense"], ["job", "frob", "x"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_login_stores_the_token_0600_and_never_echoes_the_password(home, api, monkeypatch,
                                                                    capsys):
    api.post(f"{URL}/api/auth/access_token", json={"access_token": "secret-token"},
             match=[matchers.json_params_matcher(
                 {"username": "alice", "password": "pw", "label": "lab", "lifetime": 60})])
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    code = main(["--everest", URL, "login", "-u", "alice", "--label", "lab", "--lifetime", "60",
                 "--password-stdin"])
    assert code == 0
    out = capsys.readouterr().out
    assert "pw" not in out and "secret-token" not in out
    profile = config.load_profile()
    assert (profile.url, profile.token) == (URL, "secret-token")
    assert stat.S_IMODE(profile.default_token_file().stat().st_mode) == 0o600


def test_login_prompts_with_getpass(home, api, monkeypatch):
    api.post(f"{URL}/api/auth/access_token", json={"access_token": "t"})
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed")
    assert main(["--everest", URL, "login", "-u", "bob"]) == 0
    assert json.loads(api.calls[0].request.body)["password"] == "typed"


def test_wrong_password_exits_4(home, api, monkeypatch, capsys):
    api.post(f"{URL}/api/auth/access_token", status=401, json={"message": "bad credentials"})
    monkeypatch.setattr(sys, "stdin", io.StringIO("nope\n"))
    assert main(["--everest", URL, "login", "-u", "a", "--password-stdin"]) == 4
    assert "bad credentials" in capsys.readouterr().err


def test_logout_revokes_and_forgets(logged_in, api, capsys):
    api.delete(f"{URL}/api/auth/access_token",
               match=[matchers.header_matcher({"Authorization": "Bearer stored-token"})])
    assert main(["logout"]) == 0
    assert config.load_profile().token is None


def test_jobs_table_and_json(logged_in, api, capsys):
    api.get(f"{URL}/api/jobs", json=[JOB])
    api.get(f"{URL}/api/jobs", json=[JOB])
    assert main(["jobs"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATE", "APP", "NAME"]
    assert row.split() == [JOB["id"], "DONE", "sleep", "demo"]
    assert main(["--json", "jobs"]) == 0
    assert json.loads(capsys.readouterr().out) == [JOB]


def test_job_show_log_cancel_delete(logged_in, api, capsys, tmp_path):
    jid = JOB["id"]
    api.get(f"{URL}/api/jobs/{jid}", json=JOB)
    api.get(f"{URL}/api/jobs/{jid}/log", body="2026-01-01 00:00:00.000 started\n")
    api.get(f"{URL}/api/jobs/{jid}/log", body="2026-01-01 00:00:00.000 started\n")
    api.post(f"{URL}/api/jobs/{jid}/cancel")
    api.delete(f"{URL}/api/jobs/{jid}")
    assert main(["job", "show", jid]) == 0
    assert "state:" in capsys.readouterr().out
    assert main(["job", "log", jid]) == 0
    assert capsys.readouterr().out.endswith("started\n")
    assert main(["job", "log", jid, "-o", str(tmp_path / "j.log")]) == 0
    assert (tmp_path / "j.log").read_text().endswith("started\n")
    assert main(["job", "cancel", jid]) == 0
    assert main(["job", "delete", jid]) == 0


def test_unknown_job_exits_5(logged_in, api, capsys):
    api.get(f"{URL}/api/jobs/nope", status=404, json={"message": "no such job"})
    assert main(["job", "show", "nope"]) == 5
    assert capsys.readouterr().err.strip() == "error: Not found: GET /api/jobs/nope (no such job)."


def test_apps_search_and_show(logged_in, api, capsys):
    app = {"id": "c" * 24, "owner": "everest", "alias": "sleep", "name": "Sleep",
           "inputs": {"duration": {"type": "number", "required": True, "title": "Seconds"}},
           "outputs": {}}
    api.get(f"{URL}/api/apps/search", json=[app], match=[matchers.query_param_matcher(
        {"name": "sle"})])
    api.get(f"{URL}/api/apps/everest/sleep", json=app)
    assert main(["apps", "sle"]) == 0
    assert "everest/sleep" in capsys.readouterr().out
    assert main(["app", "show", "everest/sleep"]) == 0
    out = capsys.readouterr().out
    assert "duration" in out and "yes" in out


def test_files_upload_and_download(logged_in, api, capsys, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("data")
    api.post(f"{URL}/api/files/temp", json={"uri": "/api/files/temp/u/in.txt", "filename":
                                            "in.txt", "length": 4})
    api.get(f"{URL}/api/files/temp/u/in.txt", body=b"data")
    assert main(["files", "upload", str(src)]) == 0
    assert "/api/files/temp/u/in.txt" in capsys.readouterr().out
    target = tmp_path / "out" / "copy.txt"
    assert main(["files", "download", "/api/files/temp/u/in.txt", "-o", str(target)]) == 0
    assert target.read_text() == "data"


def test_upload_of_a_missing_file_is_one_line(logged_in, capsys, tmp_path):
    assert main(["files", "upload", str(tmp_path / "missing.txt")]) == 1
    assert capsys.readouterr().err.startswith("error: [Errno 2]")


def test_app_export_of_a_shipped_app_writes_a_zip_everest_imports(tmp_path, capsys):
    import zipfile

    from everest_app import descriptor

    target = tmp_path / "js.zip"
    assert main(["app", "export", "jupyter-session", "-o", str(target)]) == 0
    names = zipfile.ZipFile(target).namelist()
    assert "application.json" in names and "ApplicationFiles/session_runner.py" in names
    assert not [n for n in names if "__pycache__" in n]
    assert descriptor.load(target).alias == "jupyter-session"


def test_app_export_of_the_real_templet_export_round_trips(tmp_path):
    import json
    import zipfile

    source = str(Path(__file__).parent / "data" / "templet-parsweep.zip")
    target = tmp_path / "again.zip"
    assert main(["app", "export", source, "-o", str(target)]) == 0
    original = json.loads(zipfile.ZipFile(source).read("application.json"))
    assert json.loads(zipfile.ZipFile(target).read("application.json")) == original


def test_app_export_of_an_unknown_app_names_the_shipped_ones(capsys):
    assert main(["app", "export", "no-such-app"]) == 1
    err = capsys.readouterr().err
    assert "No application 'no-such-app'" in err and "jupyter-session" in err


def test_common_options_work_before_and_after_the_command(logged_in, api, capsys):
    api.get(f"{URL}/api/jobs", json=[JOB])
    api.get("http://other.test/api/jobs/" + JOB["id"], json=JOB)
    assert main(["jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [JOB]
    assert main(["--json", "job", "show", JOB["id"], "--everest", "http://other.test"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == JOB["id"]


def test_with_nothing_configured_commands_use_the_running_embedded_server(home, capsys):
    from launcher import embedded

    assert main(["jobs"]) == 1  # not running: never started by a plain command
    assert embedded.running() is None
    local = embedded.ensure()
    try:
        assert main(["--json", "apps"]) == 0
        aliases = {app["alias"] for app in json.loads(capsys.readouterr().out)}
        assert {"jupyter-session", "sleep", "append"} <= aliases
        assert main(["jobs"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "(none)"
    finally:
        assert embedded.stop()
    assert local.url and embedded.running() is None


def test_the_server_command_hosts_the_session_relay_and_takes_more_plugins():
    from launcher.cli.root import build_parser

    assert build_parser().parse_args(["server"]).plugin == ["launcher.relay.plugin"]
    args = build_parser().parse_args(["server", "--plugin", "my.plugin"])
    assert args.plugin == ["launcher.relay.plugin", "my.plugin"]
    assert build_parser().parse_args(["server"]).plugin == ["launcher.relay.plugin"]
