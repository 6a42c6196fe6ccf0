"""CLI: ``launch``, ``sessions``, ``stop`` and ``relay``.

``launch`` runs a JupyterLab session as an Everest job and prints its URL
(:mod:`launcher.launch`); ``sessions`` lists the live ones; ``stop ID`` ends one; ``relay``
runs the relay as a service (:mod:`launcher.relay.service`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from everest_app import config as app_config
from everest_app.client import EverestClient
from everest_app.errors import AuthError, EverestError, NotFoundError
from everest_app.options import add_options, from_options
from everest_app.states import JobState
from launcher.cli.output import duration_text, print_json, print_table
from launcher.launch_options import LaunchOptions, profile_config
from launcher.relay.client import RelayClient
from launcher.relay.state import SessionState


def register(subparsers: Any) -> None:
    """Add the session commands to the root parser."""
    _register_launch(subparsers)
    _register_sessions(subparsers)
    _register_ui(subparsers)
    _register_relay(subparsers)


# -- launch ---------------------------------------------------------------------------------


def _register_launch(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "launch", help="start JupyterLab as an Everest job and print its URL",
        description="Start a JupyterLab session as an Everest job and print its URL once it "
                    "answers through the relay. With no Everest configured, a local server "
                    "and relay start in the background (the embedded default). Ctrl-C stops "
                    "the session unless --detach.")
    add_options(p, LaunchOptions, config_file=False,
                title="session options (docs/reference/launch.md; also the profile's launch:)")
    p.add_argument("--relay", default=None, metavar="URL",
                   help="relay address (default: the profile's relay_url)")
    p.add_argument("--detach", action="store_true",
                   help="print the URL and exit, leaving the session running")
    p.add_argument("--open", action="store_true", help="open the URL in a web browser")
    p.set_defaults(func=launch_cmd)


def _say(args: argparse.Namespace):
    """Progress goes to stderr, so --json output on stdout stays clean."""
    return lambda msg: print(f"- {msg}", file=sys.stderr, flush=True)


def connect(args: argparse.Namespace, *, start: bool = True
            ) -> tuple[EverestClient, RelayClient, app_config.Profile] | None:
    """The Everest and relay to use: the profile's (or --everest's), else the embedded one
    (started when ``start``; ``None`` when it does not run and ``start`` is False)."""
    from launcher import embedded

    profile = app_config.load_profile(args.profile, url=args.everest)
    if profile.url:
        relay_url = getattr(args, "relay", None) or profile.relay_url
        if not relay_url:
            raise app_config.ConfigError(
                f"no relay for {profile.url}: pass --relay URL, set EVEREST_RELAY_URL, or add "
                f"relay_url to profile '{profile.name}'")
        if not profile.token:
            raise AuthError(f"not logged in to {profile.url}: run everest-jupyter login")
        return (EverestClient(profile.url, profile.token),
                RelayClient(relay_url, profile.token), profile)
    if not start and embedded.running() is None:
        return None
    emb = embedded.ensure(progress=_say(args))
    return EverestClient(emb.url, emb.token), RelayClient(emb.relay_url, emb.token), profile


def _options(args: argparse.Namespace, defaults: dict) -> LaunchOptions:
    """The session's options: the command line's over the profile's ``launch:`` defaults."""
    return from_options(LaunchOptions, args, config=profile_config(defaults))


def launch_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter launch``: see the parser's description."""
    from launcher.launch import Launch, LaunchFailed, follow

    say = _say(args)
    everest, relay, profile = connect(args)
    if not profile.url:
        say(f"web UI: {everest.url}/ (everest-jupyter ui opens it signed in)")
    run = Launch(everest, relay, _options(args, profile.launch), progress=say)
    try:
        launched = run.run()
    except LaunchFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.log:
            print(f"--- log of job {exc.job_id} ---\n{exc.log.rstrip()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        say("interrupted: stopping the session")
        run.stop(wait=15)
        return 130
    if args.json:
        print_json({"url": launched.url, "job_id": launched.job_id,
                    "session_id": launched.session_id})
    else:
        print(f"JupyterLab is ready: {launched.url}", flush=True)
    sys.stdout.flush()
    if args.open:
        import webbrowser

        webbrowser.open(launched.url)
    if args.detach:
        if not args.json:
            say(f"detached; stop it with: everest-jupyter stop {launched.session_id}")
        return 0
    say("the session runs until its time limit; Ctrl-C stops it")
    try:
        state = follow(everest, relay, launched, report=say)
    except KeyboardInterrupt:
        say("stopping the session")
        state = run.stop(wait=30)
        say(f"session stopped (job {state or 'state unknown'})")
        return 0 if _say_workspace(relay, launched.session_id, say) else 1
    say(f"the session's job ended: {state}")
    saved = _say_workspace(relay, launched.session_id, say)
    return 0 if state in (JobState.DONE, JobState.CANCELLED) and saved else 1


def _say_workspace(relay: RelayClient, session_id: str, say) -> bool:
    """Tell how the session's workspace was saved at its end; False when it was not."""
    from launcher.launch import workspace_outcome

    try:
        said = workspace_outcome(relay.session(session_id))
    except EverestError:
        return True
    if said:
        say(said)
    return not (said and "NOT saved" in said)


# -- sessions, stop ---------------------------------------------------------------------------


def _register_sessions(subparsers: Any) -> None:
    p = subparsers.add_parser("sessions", help="list your live sessions, their time left and "
                                               "URLs")
    p.add_argument("--all", action="store_true", help="include ended sessions")
    p.add_argument("--relay", default=None, metavar="URL", help="relay address")
    p.set_defaults(func=sessions_cmd)
    p = subparsers.add_parser("stop", help="stop a session (by session id or job id)")
    p.add_argument("id", help="session id or job id")
    p.add_argument("--relay", default=None, metavar="URL", help="relay address")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for the job to finish stopping")
    p.set_defaults(func=stop_cmd)


def sessions_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter sessions``: the caller's sessions from the relay."""
    found = connect(args, start=False)
    rows = found[1].sessions(include_ended=args.all) if found else []
    if args.json:
        print_json(rows)
        return 0
    if found is None:
        print("No sessions: the local Everest server is not running. "
              "'everest-jupyter launch' starts it with a session.")
        return 0
    print_table([(s["id"], s["state"], s.get("job_id"), _time_left(s),
                  s.get("url") if s["ready"] else None)
                 for s in rows], ("SESSION", "STATE", "JOB", "TIME LEFT", "URL"))
    return 0


def _time_left(session: dict) -> str | None:
    """``1h 59m (time limit)``: when a live session ends, by its runner's last report."""
    left = duration_text(session.get("time_left"))
    return f"{left} ({session['ends_by']})" if left and session.get("ends_by") else left


def stop_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter stop ID``: cancel the session's job and end it at the relay."""
    from launcher.launch import stop_session

    found = connect(args, start=False)
    if found is None:
        raise NotFoundError(f"no session {args.id}: the local Everest server is not running, "
                            "so none of its sessions is either")
    everest, relay, _ = found
    sessions = relay.sessions(include_ended=True)
    match = next((s for s in sessions if args.id in (s["id"], s.get("job_id"))), None)
    if match is None:
        try:
            job = everest.job(args.id)
        except NotFoundError:
            raise NotFoundError(f"no session or job {args.id}: 'everest-jupyter sessions "
                                "--all' lists yours") from None
        job_id, session_id, ended = args.id, None, job.state.is_terminal
    else:
        job_id, session_id = match.get("job_id"), match["id"]
        ended = SessionState.known(match["state"]) is SessionState.ENDED
        if ended and job_id:
            try:
                ended = everest.job(job_id).state.is_terminal
            except NotFoundError:
                pass
    if ended:
        state = str(everest.job(job_id).state) if job_id else None
    else:
        state = stop_session(everest, relay, job_id, session_id,
                             wait=0 if args.no_wait else 30)
    if args.json:
        print_json({"session_id": session_id, "job_id": job_id, "job_state": state,
                    "already_ended": ended})
    elif ended:
        print(f"session {session_id or '-'} had already ended (job {job_id or '-'}: "
              f"{state or 'unknown'}); nothing to stop")
    else:
        print(f"stopped session {session_id or '-'} (job {job_id or '-'}: {state or 'unknown'})")
    if session_id and not ended and not args.json:
        return 0 if _say_workspace(relay, session_id, lambda m: print(m)) else 1
    return 0


# -- ui ---------------------------------------------------------------------------------------


def _register_ui(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ui", help="open the Everest web UI, signed in",
        description="Open the web UI of the Everest in use in a browser. On the embedded "
                    "local server (started if needed) the link signs you in once, for "
                    "two minutes; a password for the login page is set with "
                    "'everest-jupyter server add-user NAME'.")
    p.add_argument("--no-browser", action="store_true",
                   help="print the link instead of opening a browser")
    p.set_defaults(func=ui_cmd)


def server_start_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter server start``: the embedded server (and relay) in the background."""
    from launcher import embedded

    emb = embedded.ensure(progress=_say(args))
    if args.json:
        print_json({"url": emb.url, "relay_url": emb.relay_url, "pid": emb.pid})
    else:
        print(f"local Everest server at {emb.url} (pid {emb.pid}); web UI: {emb.url}/ "
              "('everest-jupyter ui' opens it signed in)")
    return 0


def ui_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter ui``: open (or print) the web UI, signed in on the embedded server."""
    profile = app_config.load_profile(args.profile, url=args.everest)
    if profile.url:
        url, signed_in = profile.url.rstrip("/") + "/", False
    else:
        everest = connect(args)[0]
        url = everest.request("POST", "/api/auth/signin_link").json()["url"]
        signed_in = True
    if args.json:
        print_json({"url": url, "signed_in": signed_in})
    elif args.no_browser:
        print(url, flush=True)
    if not args.no_browser:
        import webbrowser

        if not webbrowser.open(url):
            print(f"no browser could be opened; open {url}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"opened {url if not signed_in else 'the web UI, signed in'}")
    return 0


# -- relay ------------------------------------------------------------------------------------


def _register_relay(subparsers: Any) -> None:
    from launcher.relay.config import RELAY_DESCRIPTION, add_relay_arguments

    p = subparsers.add_parser(
        "relay", help="run the relay (session rendezvous and tunnel end) as a service",
        description=RELAY_DESCRIPTION)
    add_relay_arguments(p)
    p.set_defaults(func=run_relay)


def run_relay(args: argparse.Namespace) -> int:
    """``everest-jupyter relay``: run the relay in the foreground until SIGINT/SIGTERM."""
    from launcher.relay.service import run

    return run(args)
