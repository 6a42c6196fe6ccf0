"""The applications this project ships, as Everest application folders.

Each subfolder holding an ``application.json`` (plus ``ApplicationFiles/``) is one
application; the local server loads them all at start (:func:`builtin_app_dirs`), so a
helper adds an application by dropping a folder here. ``everest_app.descriptor.load`` reads
them and ``export_zip`` turns one into the zip a real Everest imports.

Conventions for the commands of these applications:

- **The interpreter.** A command whose first word is ``python3`` (or ``python``) runs the
  staged script with Python. On a real Everest resource that is whatever ``python3`` the
  agent's PATH finds; the local server substitutes the interpreter it runs on
  (``sys.executable``), so the scripts run with the same Python as the server, virtualenv
  included. Scripts therefore use the standard library only and Python >= 3.8.
- **Scripts** live in ``ApplicationFiles/`` and are staged into the task's working
  directory, so a command names them relatively: ``python3 append.py ${message}``.
- **Arguments.** The command is split into arguments first (shell-like quoting) and
  ``${name}`` is substituted inside each argument; no shell ever sees it, so an input value
  is always one literal argument.
- **Services.** Long-lived applications (a notebook session) say so with the keyword
  ``service``; the local server runs them outside the batch slots.
"""

from __future__ import annotations

from pathlib import Path

APPS_DIR = Path(__file__).resolve().parent


def builtin_app_dirs() -> list[Path]:
    """The application folders shipped in this package, sorted by folder name."""
    return sorted(p for p in APPS_DIR.iterdir()
                  if p.is_dir() and (p / "application.json").is_file())
