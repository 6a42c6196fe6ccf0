"""What a newcomer reads: each CLI message tells the truth and says what to do next, with
the right exit code, on the embedded default in a fresh HOME (real processes throughout).
The tests run in file order: the server is started, used and stopped as a user would."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.cli_home import CliHome


def test_before_anything_runs(cli_user: CliHome) -> None:
    jobs = cli_user.cli("jobs")
    assert jobs.returncode == 1
    assert jobs.stderr == ("error: No Everest server configured: start the local one with "
                           "'everest-jupyter server start' (or 'everest-jupyter launch'), or "
                           "use a real Everest with --everest URL, EVEREST_URL, or "
                           "'everest-jupyter --everest URL login'\n")
    sessions = cli_user.cli("sessions")
    assert sessions.returncode == 0
    assert sessions.stdout.startswith("No sessions: the local Everest server is not running.")


def test_an_unknown_option_gets_the_commands_own_usage(cli_user: CliHome) -> None:
    result = cli_user.cli("launch", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: everest-jupyter launch ")
    assert result.stderr.endswith("everest-jupyter launch: error: unrecognized arguments: "
                                  "--bogus\n")
    nested = cli_user.cli("job", "show", "x", "--bogus")
    assert nested.returncode == 2 and nested.stderr.startswith("usage: everest-jupyter job show")


def test_add_user_says_whether_it_added_or_reset(cli_user: CliHome) -> None:
    first = cli_user.cli("server", "add-user", "bob", "--password-stdin", stdin="pw-one\n")
    assert (first.returncode, first.stdout) == (0, "user bob added\n")
    again = cli_user.cli("server", "add-user", "bob", "--password-stdin", stdin="pw-two\n")
    assert again.returncode == 0
    assert again.stdout == ("password of user bob reset (their sign-in tokens are revoked; "
                            "running jobs keep theirs)\n")
    as_json = cli_user.cli("--json", "server", "add-user", "bob", "--password-stdin",
                           stdin="pw-two\n")
    assert json.loads(as_json.stdout) == {"user": "bob", "created": False}


def test_stop_of_an_ended_session_says_so(cli_user: CliHome) -> None:
    out = cli_user.cli_json("launch", "--detach", "--time-limit", "300")
    first = cli_user.cli("stop", out["session_id"])
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"stopped session {out['session_id']} (job {out['job_id']}: "
                                   "CANCELLED)")
    again = cli_user.cli("stop", out["session_id"])
    assert again.returncode == 0, again.stderr
    assert again.stdout == (f"session {out['session_id']} had already ended (job "
                            f"{out['job_id']}: CANCELLED); nothing to stop\n")
    again_json = cli_user.cli_json("stop", out["job_id"])
    assert again_json["already_ended"] is True and again_json["job_state"] == "CANCELLED"

    log = cli_user.cli_json("job", "log", out["job_id"])
    assert log["job_id"] == out["job_id"] and "Job CANCELLED" in log["log"]
    cancel = cli_user.cli_json("job", "cancel", out["job_id"])
    assert cancel == {"job_id": out["job_id"], "state": "CANCELLED"}
    assert cli_user.cli_json("job", "delete", out["job_id"]) == {"job_id": out["job_id"],
                                                             "deleted": True}


def test_files_download_json(cli_user: CliHome, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("hello\n")
    [uploaded] = cli_user.cli_json("files", "upload", str(source))
    target = tmp_path / "back.txt"
    got = cli_user.cli_json("files", "download", uploaded["uri"], "-o", str(target))
    assert got == {"uri": uploaded["uri"], "path": str(target)}
    assert target.read_text() == "hello\n"


def test_login_with_password_stdin(cli_user: CliHome, tmp_path: Path) -> None:
    url = json.loads((cli_user.data_dir / "server" / "server.json").read_text())["url"]
    other = CliHome(tmp_path)  # a profile of its own, so this user's default stays embedded
    no_user = other.cli("--everest", url, "login", "--password-stdin", stdin="pw-two\n")
    assert no_user.returncode == 1
    assert no_user.stderr == ("error: --password-stdin reads only the password: name the "
                              "user with --user NAME\n")
    ok = other.cli("--everest", url, "login", "-u", "bob", "--password-stdin", stdin="pw-two\n")
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # no GetPassWarning or anything else
    assert ok.stdout.startswith(f"Logged in to {url} as bob")
    assert other.cli_json("logout") == {"profile": "default", "forgotten": True}


def test_after_server_stop_commands_say_it_was_stopped(cli_user: CliHome) -> None:
    stopped = cli_user.cli("server", "stop")
    assert (stopped.returncode, stopped.stdout) == (0, "stopped\n")
    for command in (["jobs"], ["apps"]):
        result = cli_user.cli(*command)
        assert result.returncode == 3, command
        assert result.stderr == ("error: the local Everest server is not running (it was "
                                 "stopped): start it with 'everest-jupyter server start' (or "
                                 "'everest-jupyter launch'), or pass --everest URL\n"), command
    sessions = cli_user.cli("sessions")
    assert sessions.returncode == 0
    assert sessions.stdout == ("No sessions: the local Everest server is not running. "
                               "'everest-jupyter launch' starts it with a session.\n")
