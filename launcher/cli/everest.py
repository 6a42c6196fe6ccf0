"""Subcommands that talk to Everest directly: login, apps, jobs, files."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from everest_app import config, descriptor
from everest_app.apps import builtin_app_dirs
from everest_app.client import EverestClient
from everest_app.errors import AuthError, EverestError
from everest_app.job import Job
from launcher.cli.output import print_fields, print_json, print_table


def make_client(args: argparse.Namespace) -> EverestClient:
    """A client for the server and token chosen by ``--everest``, ``--profile`` and the env.

    With nothing configured, the embedded local server is used when it runs (it is never
    started here: only ``launch`` starts it).
    """
    from launcher import embedded

    profile = config.load_profile(args.profile, url=args.everest)
    if not profile.url:
        if embedded.running() is None:
            raise embedded.not_running_error()
        local = embedded.ensure()
        return EverestClient(local.url, local.token)
    return EverestClient(profile.url, profile.token or "")


def register(subparsers: Any) -> None:
    """Add login, logout, apps, app, jobs, job and files."""
    p = subparsers.add_parser("login", help="obtain a token and store it in the profile")
    p.add_argument("--user", "-u", help="Everest user name (asked when omitted)")
    p.add_argument("--label", default="everest-jupyter", help="the token's label on the server")
    p.add_argument("--lifetime", type=int, metavar="SECONDS",
                   help="token lifetime in seconds (server default: one week)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input instead of prompting")
    p.set_defaults(func=cmd_login)

    p = subparsers.add_parser("logout", help="revoke the stored token and forget it")
    p.set_defaults(func=cmd_logout)

    p = subparsers.add_parser("apps", help="list applications, or search them by name")
    p.add_argument("search", nargs="?", help="part of an application's name")
    p.set_defaults(func=cmd_apps)

    app = subparsers.add_parser("app", help="one application").add_subparsers(
        dest="app_command", metavar="ACTION", required=True)
    p = app.add_parser("show", help="an application's description")
    p.add_argument("app", help="24-hex id or owner/alias")
    p.set_defaults(func=cmd_app_show)

    p = app.add_parser("export", help="write an application as the zip Everest imports")
    p.add_argument("source", help="a shipped application's alias (e.g. jupyter-session), or a "
                                  "path to application.json, an application folder or a zip")
    p.add_argument("-o", "--output", type=Path, help="zip to write (default: <alias>.zip)")
    p.set_defaults(func=cmd_app_export)

    p = subparsers.add_parser("jobs", help="list your jobs")
    p.set_defaults(func=cmd_jobs)

    job = subparsers.add_parser("job", help="one job").add_subparsers(
        dest="job_command", metavar="ACTION", required=True)
    for action, helptext, func in (("show", "state, inputs and results", cmd_job_show),
                                   ("log", "the job's log", cmd_job_log),
                                   ("cancel", "cancel the job", cmd_job_cancel),
                                   ("delete", "delete the job and its files", cmd_job_delete)):
        p = job.add_parser(action, help=helptext)
        p.add_argument("job_id", metavar="ID")
        p.set_defaults(func=func)
        if action == "log":
            p.add_argument("-o", "--output", type=Path, help="save to this file instead")

    files = subparsers.add_parser("files", help="upload or download files").add_subparsers(
        dest="files_command", metavar="ACTION", required=True)
    p = files.add_parser("upload", help="upload files for use as job inputs; prints their URIs")
    p.add_argument("paths", nargs="+", type=Path)
    p.set_defaults(func=cmd_files_upload)
    p = files.add_parser("download", help="download a file by its URI")
    p.add_argument("uri")
    p.add_argument("-o", "--output", type=Path, help="target path (default: the file's name)")
    p.set_defaults(func=cmd_files_download)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("Password: ")


def cmd_login(args: argparse.Namespace) -> int:
    profile = config.load_profile(args.profile, url=args.everest)
    if not profile.url:
        raise EverestError("Which Everest? Pass --everest URL (for example "
                           "https://everest.distcomp.org).")
    if args.password_stdin and not args.user:
        raise EverestError("--password-stdin reads only the password: name the user with "
                           "--user NAME")
    user = args.user or input("User: ").strip()
    token = EverestClient.login(profile.url, user, _read_password(args),
                                label=args.label, lifetime=args.lifetime)
    path = config.save_profile(profile, token=token)
    if args.json:
        print_json({"profile": profile.name, "url": profile.url, "config": str(path)})
    else:
        print(f"Logged in to {profile.url} as {user}; token saved in profile '{profile.name}'.")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    profile = config.load_profile(args.profile, url=args.everest)
    if profile.url and profile.token:
        try:
            EverestClient(profile.url, profile.token).revoke_token()
        except AuthError:
            pass  # already expired or revoked: forgetting it is all that is left to do
    forgotten = config.forget_token(profile)
    if args.json:
        print_json({"profile": profile.name, "forgotten": forgotten})
    else:
        print("Logged out." if forgotten else "No stored token to forget.")
    return 0


def cmd_apps(args: argparse.Namespace) -> int:
    client = make_client(args)
    apps = client.search_apps(args.search) if args.search else client.apps()
    if args.json:
        print_json(apps)
    else:
        print_table(((a.get("id"), _app_ref(a), a.get("name")) for a in apps),
                    ("ID", "OWNER/ALIAS", "NAME"))
    return 0


def _app_ref(app: dict[str, Any]) -> str | None:
    owner, alias = app.get("owner"), app.get("alias")
    return f"{owner}/{alias}" if owner and alias else alias


def cmd_app_show(args: argparse.Namespace) -> int:
    app = make_client(args).app(args.app)
    if args.json:
        print_json(app)
        return 0
    print_fields([("id", app.get("id")), ("alias", _app_ref(app)), ("name", app.get("name")),
                  ("annotation", app.get("annotation"))])
    print("inputs:")
    _print_params(app.get("inputs") or {})
    print("outputs:")
    _print_params(app.get("outputs") or {})
    return 0


def _print_params(params: dict[str, dict[str, Any]]) -> None:
    rows = []
    for name, spec in params.items():
        kind = spec.get("type", "?") + ("/" + spec["format"] if spec.get("format") else "")
        rows.append(("  " + name, kind, "yes" if spec.get("required") else "", spec.get("title")))
    print_table(rows, ("  NAME", "TYPE", "REQUIRED", "TITLE"))


def load_application(source: str) -> descriptor.Application:
    """A shipped application by alias, else the application at the path ``source``.

    Raises :class:`EverestError` saying what is wrong when neither works.
    """
    shipped = {path.name: path for path in builtin_app_dirs()}
    path = shipped.get(source, Path(source))
    try:
        return descriptor.load(path)
    except FileNotFoundError as exc:
        raise EverestError(f"No application '{source}': not a shipped one "
                           f"({', '.join(sorted(shipped))}) nor an existing path.") from exc
    except descriptor.DescriptorError as exc:
        raise EverestError(str(exc)) from exc


def cmd_app_export(args: argparse.Namespace) -> int:
    app = load_application(args.source)
    written = descriptor.export_zip(app, args.output or Path(f"{app.alias}.zip"))
    if args.json:
        print_json({"alias": app.alias, "zip": str(written), "files": app.file_names()})
    else:
        print(f"Wrote {written} ({app.alias}, {len(app.file_names())} application files).")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = make_client(args).jobs()
    if args.json:
        print_json([j.raw for j in jobs])
    else:
        print_table(((j.id, j.state, j.app_alias or j.app_name, j.name) for j in jobs),
                    ("ID", "STATE", "APP", "NAME"))
    return 0


def _show_job(job: Job) -> None:
    print_fields([("id", job.id), ("name", job.name), ("state", job.state),
                  ("app", job.app_alias or job.app_name or job.app_id), ("inputs", job.inputs),
                  ("result", job.result), ("info", job.info)])


def cmd_job_show(args: argparse.Namespace) -> int:
    job = make_client(args).job(args.job_id)
    print_json(job.raw) if args.json else _show_job(job)
    return 0


def cmd_job_log(args: argparse.Namespace) -> int:
    client = make_client(args)
    if args.output:
        saved = client.save_log(args.job_id, args.output)
        print_json({"job_id": args.job_id, "path": str(saved)}) if args.json else print(saved)
    elif args.json:
        print_json({"job_id": args.job_id, "log": client.log(args.job_id)})
    else:
        sys.stdout.write(client.log(args.job_id))
    return 0


def cmd_job_cancel(args: argparse.Namespace) -> int:
    client = make_client(args)
    client.cancel(args.job_id)
    if args.json:
        print_json({"job_id": args.job_id, "state": str(client.job(args.job_id).state)})
    else:
        print(f"Cancel requested for job {args.job_id}.")
    return 0


def cmd_job_delete(args: argparse.Namespace) -> int:
    make_client(args).delete_job(args.job_id)
    if args.json:
        print_json({"job_id": args.job_id, "deleted": True})
    else:
        print(f"Deleted job {args.job_id}.")
    return 0


def cmd_files_upload(args: argparse.Namespace) -> int:
    client = make_client(args)
    uploaded = [client.upload(path) for path in args.paths]
    if args.json:
        print_json(uploaded)
    else:
        print_table(((u["uri"], u.get("length")) for u in uploaded), ("URI", "BYTES"))
    return 0


def cmd_files_download(args: argparse.Namespace) -> int:
    target = args.output or Path(args.uri.rstrip("/").rsplit("/", 1)[-1])
    saved = make_client(args).download(args.uri, target)
    print_json({"uri": args.uri, "path": str(saved)}) if args.json else print(saved)
    return 0
