"""CLI: ``workspaces`` (list, or one's history) and ``workspace download|upload|delete``.

A workspace is the folder a session opens as its JupyterLab root and the relay keeps after
it (:mod:`launcher.relay.workspaces`); these commands reach it without a session, through
the relay's API (:mod:`launcher.relay.workspace_api`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from everest_app.errors import NotFoundError
from launcher.cli.output import print_json, print_table


def register(subparsers: Any) -> None:
    """Add the workspace commands to the root parser."""
    p = subparsers.add_parser(
        "workspaces", help="list your workspaces (size, last saved, live session)",
        description="List your workspaces at the relay: size, files, when last saved, by "
                    "which session, and the live session writing it now. With a NAME, "
                    "that workspace's history (snapshots a launch can restore with "
                    "--snapshot ID).")
    p.add_argument("name", nargs="?", help="show this workspace's history")
    p.add_argument("--relay", default=None, metavar="URL", help="relay address")
    p.set_defaults(func=workspaces_cmd)

    p = subparsers.add_parser("workspace", help="download, upload or delete a workspace")
    sub = p.add_subparsers(dest="workspace_command", metavar="ACTION", required=True)
    d = sub.add_parser("download", help="save a workspace (or one snapshot) as a zip")
    d.add_argument("name")
    d.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="where (default: NAME.zip here)")
    d.add_argument("--snapshot", default=None, metavar="ID",
                   help="a snapshot of its history (default: the latest saved state)")
    d.set_defaults(func=download_cmd)
    u = sub.add_parser(
        "upload", help="make a folder, zip or file the content of a workspace",
        description="Replace the workspace's files with a folder's (links stay links), a "
                    "zip's, or one file; its history keeps what was there. The next "
                    "'launch --workspace NAME' opens it.")
    u.add_argument("source", type=Path, metavar="DIR|FILE")
    u.add_argument("--name", required=True, help="the workspace")
    u.set_defaults(func=upload_cmd)
    r = sub.add_parser("delete", help="remove a workspace and its history")
    r.add_argument("name")
    r.set_defaults(func=delete_cmd)
    for parser in (d, u, r):
        parser.add_argument("--relay", default=None, metavar="URL", help="relay address")


def _relay(args: argparse.Namespace):
    from launcher.cli.session import connect

    found = connect(args, start=not getattr(args, "no_start", False))
    return found[1]


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _size(n: int | None) -> str | None:
    if n is None:
        return None
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return None


def workspaces_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter workspaces [NAME]``."""
    relay = _relay(args)
    if args.name:
        found = relay.workspace(args.name)
        if args.json:
            print_json(found)
            return 0
        print(f"{found['name']}: {_size(found['bytes'])}, {found['files']} files; live "
              f"session: {found['live_session'] or '-'}")
        print_table([(s["id"], _when(s["time"]), s["session_id"] or "(upload)", s["resource"],
                      s["files"], _size(s["bytes"]), "yes" if s["saved"] else "NO")
                     for s in found["snapshots"]],
                    ("SNAPSHOT", "TIME", "SESSION", "RESOURCE", "FILES", "SIZE",
                     "FINAL SAVE"))
        return 0
    found = relay.workspaces()
    if args.json:
        print_json(found)
        return 0
    print_table([(w["name"], _size(w["bytes"]), w["files"], _when(w["last_saved"]),
                  w["last_session"], w["live_session"]) for w in found["workspaces"]],
                ("WORKSPACE", "SIZE", "FILES", "LAST SAVED", "LAST SESSION", "LIVE SESSION"))
    quota = f" of {_size(found['quota'])}" if found.get("quota") else ""
    print(f"using {_size(found['usage'])}{quota}")
    return 0


def download_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter workspace download NAME [-o FILE] [--snapshot ID]``."""
    relay = _relay(args)
    out = args.output or Path(args.name.replace("/", "-") + ".zip")
    path = relay.download_workspace(args.name, out, args.snapshot)
    if args.json:
        print_json({"name": args.name, "snapshot": args.snapshot, "path": str(path.resolve()),
                    "bytes": path.stat().st_size})
    else:
        print(f"saved workspace {args.name}" + (f" (snapshot {args.snapshot})"
                                                 if args.snapshot else "") + f" to {path}")
    return 0


def upload_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter workspace upload DIR|FILE --name NAME``."""
    if not args.source.exists():
        raise NotFoundError(f"no such file or folder: {args.source}")
    snap = _relay(args).upload_workspace(args.name, args.source)
    if args.json:
        print_json(snap)
    else:
        print(f"workspace {args.name} now holds {snap['files']} files ({_size(snap['bytes'])}),"
              f" snapshot {snap['id']}")
    return 0


def delete_cmd(args: argparse.Namespace) -> int:
    """``everest-jupyter workspace delete NAME``."""
    _relay(args).delete_workspace(args.name)
    if args.json:
        print_json({"name": args.name, "deleted": True})
    else:
        print(f"deleted workspace {args.name} and its history", file=sys.stdout)
    return 0
