"""CLI: ``kernels install``, ``kernels list``, ``kernels remove`` — kernelspecs whose kernel
runs as an Everest job (:mod:`launcher.kernels`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from everest_app.errors import EverestError, NotFoundError
from everest_app.options import add_options, dest, settings
from launcher.cli.output import print_json, print_table
from launcher.kernels.settings import KernelSettings


def register(subparsers: Any) -> None:
    """Add ``kernels`` and its subcommands to the root parser."""
    p = subparsers.add_parser(
        "kernels", help="kernelspecs whose kernel runs as an Everest job",
        description="Install, list and remove kernelspecs for any JupyterLab whose kernel "
                    "runs as an Everest job on a resource, tunnelled through the relay "
                    "(docs/kernels.md).")
    sub = p.add_subparsers(dest="kernels_command", metavar="COMMAND")
    inst = sub.add_parser("install", help="write a kernelspec for a resource")
    inst.add_argument("--name", help="the kernelspec's name (default: everest-<resource>)")
    inst.add_argument("--display-name", help="the name JupyterLab's launcher shows")
    add_options(inst, KernelSettings, config_file=False,
                title="kernel settings (docs/reference/kernels.md)")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--prefix", help="install under PREFIX/share/jupyter/kernels")
    where.add_argument("--sys-prefix", action="store_true",
                       help="install into this Python's prefix (a venv, Binder)")
    inst.set_defaults(func=install_cmd)
    lst = sub.add_parser("list", help="the installed Everest kernelspecs")
    lst.set_defaults(func=list_cmd)
    rm = sub.add_parser("remove", help="remove an Everest kernelspec")
    rm.add_argument("name")
    rm.set_defaults(func=remove_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def install_cmd(args: argparse.Namespace) -> int:
    from launcher.kernels import spec

    config = {name: getattr(args, dest(name, trait)) for name, trait in settings(KernelSettings)
              if hasattr(args, dest(name, trait))}
    config.update(everest_url=args.everest, profile=args.profile)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        folder = spec.install(config, name=args.name, display_name=args.display_name,
                              prefix=prefix)
    except ValueError as exc:
        raise EverestError(str(exc)) from None
    if args.json:
        print_json({"name": folder.name, "resource_dir": str(folder)})
    else:
        print(f"installed kernelspec {folder.name} in {folder}")
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    from launcher.kernels import spec

    found = spec.listing()
    if args.json:
        print_json(found)
        return 0
    print_table([(k["name"], k["display_name"], k["config"].get("resource"),
                  k["resource_dir"]) for k in found],
                ["name", "display name", "resource", "folder"])
    return 0


def remove_cmd(args: argparse.Namespace) -> int:
    from launcher.kernels import spec

    try:
        folder = spec.remove(args.name)
    except KeyError as exc:
        raise NotFoundError(exc.args[0]) from None
    if args.json:
        print_json({"removed": args.name, "resource_dir": str(folder)})
    else:
        print(f"removed kernelspec {args.name} ({folder})")
    return 0
