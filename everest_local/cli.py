"""``everest-jupyter server``: run the local server, add users, stop it.

``register(subparsers)`` adds the ``server`` command to the project's CLI; ``main()`` is the
same command line for ``python -m everest_local``.

    everest-jupyter server [--host 127.0.0.1] [--port 8800] [--data-dir DIR] [--apps PATH ...]
                           [--slots N] [--service-slots N] [--kill-grace S] [--plugin MODULE]
                           [--resources FILE]
    everest-jupyter server add-user NAME [--data-dir DIR] [--password-stdin]
    everest-jupyter server stop [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from everest_app.descriptor import DescriptorError
from everest_local.settings import ServerSettings, default_slots


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/everest-jupyter/server``: where the embedded server keeps its data."""
    from everest_app.config import data_dir

    return data_dir() / "server"


def _data_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the server's data directory "
                             "(default: $XDG_DATA_HOME/everest-jupyter/server)")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the serve options and the add-user/stop subcommands to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8800, help="port (0: any free port)")
    _data_dir_arg(parser)
    parser.add_argument("--apps", nargs="+", type=Path, default=[], metavar="PATH",
                        help="more applications: folders, application.json or export zips")
    parser.add_argument("--slots", type=int, default=default_slots(),
                        help="batch tasks run at once (default: %(default)s, the CPUs here)")
    parser.add_argument("--service-slots", type=int, default=32,
                        help="long-lived service tasks (sessions) run at once")
    parser.add_argument("--kill-grace", type=float, default=5.0,
                        help="seconds between SIGINT, SIGTERM and SIGKILL on cancel")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="tries of a task of an app with retryFailedTasks")
    parser.add_argument("--resources", type=Path, metavar="FILE",
                        help="YAML file of the resources tasks may run on (docker, ssh, "
                             "slurm; see docs/resources.md); default: this machine only")
    parser.add_argument("--public-url", help="the URL tasks use to reach this server")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep task work directories (for debugging)")
    parser.add_argument("--login-attempts", type=int, default=5,
                        help="failed sign-ins for one user from one address before each "
                             "further try must wait (1 s, doubling; 4x this per user or per "
                             "address from anywhere)")
    parser.add_argument("--login-backoff-max", type=float, default=900.0, metavar="SECONDS",
                        help="longest wait between sign-in tries after failures")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE and call its setup(server)")
    parser.set_defaults(func=serve)
    sub = parser.add_subparsers(dest="server_command", metavar="SUBCOMMAND")
    add = sub.add_parser("add-user", help="create a user (or reset their password)")
    add.add_argument("name")
    _data_dir_arg(add)
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.set_defaults(func=add_user)
    stop = sub.add_parser("stop", help="stop the server running on the data directory")
    _data_dir_arg(stop)
    stop.add_argument("--timeout", type=float, default=60.0)
    stop.set_defaults(func=stop_cmd)


def register(subparsers: argparse._SubParsersAction, *,
             default_plugins: Sequence[str] = (),
             start: Callable[[argparse.Namespace], int] | None = None) -> None:
    """Add ``server`` (with ``add-user`` and ``stop``) to a CLI.

    ``default_plugins`` are loaded by every ``server`` run, before any ``--plugin``: the
    project's CLI passes the session relay this way, so this package never names it.
    ``start``, when given, is ``server start``: starting the CLI's background server.
    """
    parser = subparsers.add_parser(
        "server", help="run the Everest-compatible local server",
        description="Run the Everest-compatible local server in the foreground.")
    configure(parser)
    parser.set_defaults(plugin=list(default_plugins))
    if start is not None:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.add_parser("start", help="start the server in the background (the one "
                                     "'launch' uses) and print its web UI's address"
                       ).set_defaults(func=start)


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted. Exit 2 when it cannot start."""
    from everest_local.app import LocalServer, ServerBusyError

    logging.getLogger("everest_local").setLevel(logging.INFO)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        settings = ServerSettings(
            data_dir=args.data_dir or default_data_dir(), host=args.host, port=args.port,
            apps=args.apps, slots=args.slots, service_slots=args.service_slots,
            kill_grace=args.kill_grace, max_attempts=args.max_attempts,
            keep_work=args.keep_work, public_url=args.public_url, plugins=args.plugin,
            resources=args.resources, login_attempts=args.login_attempts,
            login_backoff_max=args.login_backoff_max)
        server = LocalServer(settings)
        return server.run()
    except (ValueError, DescriptorError, FileNotFoundError, ServerBusyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_user(args: argparse.Namespace) -> int:
    from everest_local.auth import add_user as add

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if password != getpass.getpass("Again: "):
            print("error: the passwords differ", file=sys.stderr)
            return 1
    try:
        created = add(args.data_dir or default_data_dir(), args.name, password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps({"user": args.name, "created": created}))
    elif created:
        print(f"user {args.name} added")
    else:
        print(f"password of user {args.name} reset (their sign-in tokens are revoked; "
              "running jobs keep theirs)")
    return 0


def stop_cmd(args: argparse.Namespace) -> int:
    from everest_local.app import stop_server

    data_dir = args.data_dir or default_data_dir()
    try:
        stopped = stop_server(data_dir, args.timeout)
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps({"stopped": stopped, "data_dir": str(data_dir)}))
    else:
        print("stopped" if stopped else f"no local server runs on {data_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m everest_local``: the ``server`` command on its own."""
    parser = argparse.ArgumentParser(prog="python -m everest_local",
                                     description="The Everest-compatible local server.")
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)
