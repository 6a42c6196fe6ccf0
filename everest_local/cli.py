"""``everest-jupyter server``: run the local server, add users, stop it.

``register(subparsers)`` adds the ``server`` command to the project's CLI; ``main()`` is the
same command line for ``python -m everest_local``.

    everest-jupyter server [--config FILE] [--port 8800] [--data-dir DIR] [--plugin MODULE] ...
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
from typing import Any

from traitlets import TraitError

from everest_app.descriptor import DescriptorError
from everest_app.options import add_options, from_options
from everest_local.settings import ServerSettings, default_data_dir


def configure(parser: argparse.ArgumentParser) -> Any:
    """Add the serve options (one per :class:`ServerSettings` setting) and the
    add-user/stop subcommands to ``parser``; returns its subcommands (``add_parser``)."""
    add_options(parser, ServerSettings,
                title="settings (docs/reference/server.md; also c.ServerSettings.<name>)")
    parser.set_defaults(func=serve)
    sub = parser.add_subparsers(dest="server_command", metavar="SUBCOMMAND")
    add = sub.add_parser("add-user", help="create a user (or reset their password)")
    add.add_argument("name")
    add_options(add, ServerSettings, only=["data_dir"])
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.set_defaults(func=add_user)
    stop = sub.add_parser("stop", help="stop the server running on the data directory")
    add_options(stop, ServerSettings, only=["data_dir"])
    stop.add_argument("--timeout", type=float, default=60.0)
    stop.set_defaults(func=stop_cmd)
    return sub


def register(subparsers: Any, *, default_plugins: Sequence[str] = (),
             start: Callable[[argparse.Namespace], int] | None = None) -> None:
    """Add ``server`` (with ``add-user`` and ``stop``) to a CLI's ``subparsers`` (what
    ``ArgumentParser.add_subparsers`` returned).

    ``default_plugins`` are loaded by every ``server`` run, before any ``--plugin``: the
    project's CLI passes the session relay this way, so this package never names it.
    ``start``, when given, is ``server start``: starting the CLI's background server.
    """
    parser = subparsers.add_parser(
        "server", help="run the Everest-compatible local server",
        description="Run the Everest-compatible local server in the foreground.")
    sub = configure(parser)
    parser.set_defaults(plugin=list(default_plugins))
    if start is not None:
        sub.add_parser("start", help="start the server in the background (the one "
                                     "'launch' uses) and print its web UI's address"
                       ).set_defaults(func=start)


def _data_dir(args: argparse.Namespace) -> Path:
    given = getattr(args, "data_dir", None)
    return Path(given).expanduser().resolve() if given else default_data_dir()


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted. Exit 2 when it cannot start."""
    from everest_local.app import LocalServer, ServerBusyError

    logging.getLogger("everest_local").setLevel(logging.INFO)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        server = LocalServer(from_options(ServerSettings, args))
        return server.run()
    except (ValueError, TraitError, DescriptorError, FileNotFoundError, ServerBusyError,
            OSError) as exc:
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
        created = add(_data_dir(args), args.name, password)
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

    data_dir = _data_dir(args)
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
