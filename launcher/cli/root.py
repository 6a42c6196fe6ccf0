"""The ``everest-jupyter`` command: the root parser, error handling and exit codes.

Each group of subcommands lives in its own module exposing ``register(subparsers)``; a
handler takes the parsed arguments and returns the exit code. Errors the user can act on
(:class:`EverestError`) print one line; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from everest_app.errors import AuthError, EverestConnectionError, EverestError, NotFoundError

log = logging.getLogger(__name__)

def _server_start(args: argparse.Namespace) -> int:
    from launcher.cli.session import server_start_cmd

    return server_start_cmd(args)


COMMAND_MODULES: tuple[tuple[str, dict], ...] = (
    ("launcher.cli.session", {}),
    ("launcher.cli.workspace", {}),
    ("launcher.cli.everest", {}),
    ("launcher.cli.kernels", {}),
    # the local server this CLI runs hosts the session relay, so its web form can launch
    ("everest_local.cli", {"default_plugins": ("launcher.relay.plugin",),
                           "start": _server_start}),
)
"""Modules whose ``register(subparsers, **options)`` adds subcommands, in help order."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONNECTION, EXIT_AUTH, EXIT_NOT_FOUND = 0, 1, 2, 3, 4, 5


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="everest-jupyter",
        description="JupyterLab sessions as Everest jobs, and the Everest client behind them.",
    )
    _add_common_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=_CommandParser)
    for name, options in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, **options)
    return parser


class _CommandParser(argparse.ArgumentParser):
    """The parser of a (sub)command: it takes the common options too, and is the one whose
    usage goes with its errors (the deepest one's defaults win). Its own subcommands are
    made of this class as well (argparse makes them of their parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _add_common_options(self, default=argparse.SUPPRESS)
        self.set_defaults(_parser=self)


def _add_common_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """The options every command takes, before or after its name.

    On subcommands the default is ``SUPPRESS``, so a value given before the command name
    is not overwritten by the subcommand's default.
    """
    flag_default = False if default is None else default
    parser.add_argument("--debug", action="store_true", default=flag_default,
                        help="log debug output and show tracebacks")
    parser.add_argument("--json", action="store_true", default=flag_default,
                        help="print machine-readable JSON")
    parser.add_argument("--profile", default=default,
                        help="configuration profile to use (default: the file's default)")
    parser.add_argument("--everest", metavar="URL", default=default,
                        help="Everest server URL (overrides the profile)")


def exit_code_for(error: EverestError) -> int:
    """The process exit code for an error: 3 connection, 4 auth, 5 not found, else 1."""
    for kind, code in ((EverestConnectionError, EXIT_CONNECTION), (AuthError, EXIT_AUTH),
                       (NotFoundError, EXIT_NOT_FOUND)):
        if isinstance(error, kind):
            return code
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    # The imports make most of what this short-lived process ever allocates, and none of it
    # is garbage: no collections while importing, and none of it looked at again (also not
    # when the interpreter exits, which otherwise costs tens of milliseconds per command)
    gc.disable()
    try:
        parser = build_parser()
    finally:
        gc.freeze()
        gc.enable()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command they were given to, with that command's usage
        getattr(args, "_parser", parser).error("unrecognized arguments: " + " ".join(unknown))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        # the client's retries are reported by its final error, not by each attempt
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args) or EXIT_OK
    except EverestError as exc:
        if args.debug:
            log.exception("command failed")
        print(f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            log.exception("command failed")
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
