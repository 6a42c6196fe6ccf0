"""Local packages as job inputs: what ``launch --packages ./my.whl`` and ``-r FILE`` bring.

A package named by a local path (a wheel, an sdist, a project folder) or a requirements file
cannot be read where the session runs: the resource may be another machine, and even on this
one the task runs as another account that cannot enter the user's home. So the launcher
reads them, here, as the user, and sends them the way Everest sends any file: uploaded
(``POST /api/files/temp``), then given as file inputs of ``jupyter-session``, which every
resource kind stages into the task's folder.

- ``package_files`` (an array of files, staged into the folder ``package_files/``) holds
  every local file; a spec of ``packages`` that named one becomes its bare file name, which
  the runner resolves to the staged copy.
- ``requirements`` (one file, staged as ``requirements.txt``) is the requirements file with
  every local path in it — a requirement, or a nested ``-r``/``-c`` file, themselves
  rewritten the same way — replaced by ``${EVEREST_JUPYTER_PACKAGES}/NAME``; pip expands that
  variable, which the runner sets to the staged folder.

A folder is zipped first (pip installs a project from a zip of it); ``.git``, ``.venv``,
``__pycache__`` and the like stay behind. ``-e`` of a local path is refused: an editable
install of a copy edits nothing of the user's.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from everest_app.errors import BadRequestError

PLACEHOLDER = "${EVEREST_JUPYTER_PACKAGES}"
"""How a requirements file names a staged file (pip expands ``${VAR}`` in requirements)."""

_PACKAGE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz", ".tar")
_PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
_SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".ipynb_checkpoints",
              ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "node_modules"}
_NESTED = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S.*)$")
_EDITABLE = re.compile(r"^(-e|--editable)(?:\s*=\s*|\s+)(\S.*)$")


class LocalPackageError(BadRequestError):
    """A local package or requirements file cannot be sent; the message names it."""

    def __init__(self, message: str):
        super().__init__(message, status=400)


def looks_local(spec: str, base: str | os.PathLike | None = None) -> bool:
    """True when ``spec`` names a path rather than a requirement (``numpy>=2``, a URL): it
    starts like a path or holds a slash, ends like a package file, or is a project folder
    in ``base`` (default the working directory), as pip would take it."""
    if "://" in spec or spec.startswith("-"):
        return False
    if spec.startswith((".", "/", "~")) or os.sep in spec or "/" in spec:
        return True
    if spec.lower().endswith(_PACKAGE_SUFFIXES):
        return True
    folder = Path(base or os.getcwd()) / spec
    return any((folder / n).is_file() for n in _PROJECT_FILES)


@dataclass
class LocalPackages:
    """The files to send and the inputs that name them (see the module docstring)."""

    packages: list[str] = field(default_factory=list)
    """``packages`` as the runner gets it: local paths replaced by staged names."""
    files: dict[str, Path] = field(default_factory=dict)
    """Staged name -> local file to upload into ``package_files``."""
    requirements: Path | None = None
    """The rewritten requirements file to upload as ``requirements``, if one was given."""
    _temp: tempfile.TemporaryDirectory | None = None
    _cwd: Path = field(default_factory=Path.cwd)

    def inputs(self, upload: Callable[[Path, str], str]) -> dict[str, Any]:
        """Upload the files with ``upload(path, name) -> uri``; the job inputs naming them."""
        out: dict[str, Any] = {}
        if self.packages:
            out["packages"] = " ".join(self.packages)
        if self.files:
            out["package_files"] = [upload(path, name) for name, path in self.files.items()]
        if self.requirements is not None:
            out["requirements"] = upload(self.requirements, "requirements.txt")
        return out

    def close(self) -> None:
        """Remove the zips and rewritten files made for the upload."""
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    # -- building ------------------------------------------------------------------------

    @classmethod
    def collect(cls, packages: list[str], requirements: str | None = None,
                cwd: str | os.PathLike | None = None) -> LocalPackages:
        """Sort ``packages`` and the ``requirements`` file (paths relative to ``cwd``,
        default the working directory) into what travels. Raises
        :class:`LocalPackageError` for a path that does not exist or cannot be read."""
        self = cls()
        self._cwd = Path(cwd or os.getcwd())
        for spec in packages:
            if looks_local(spec, self._cwd):
                self.packages.append(self._add(self._existing(spec, self._cwd, "--packages")))
            else:
                self.packages.append(spec)
        if requirements:
            path = self._existing(requirements, self._cwd, "-r")
            if path.is_dir():
                raise LocalPackageError(f"-r {requirements}: a folder, not a requirements file")
            self.requirements = self._workdir() / "requirements.txt"
            self.requirements.write_text(self._rewrite(path, [path.resolve()]),
                                         encoding="utf-8")
        return self

    def _workdir(self) -> Path:
        if self._temp is None:
            self._temp = tempfile.TemporaryDirectory(prefix="everest-jupyter-packages-")
        return Path(self._temp.name)

    @staticmethod
    def _existing(spec: str, base: Path, where: str) -> Path:
        path = Path(os.path.expanduser(spec))
        path = path if path.is_absolute() else base / path
        if not path.exists():
            raise LocalPackageError(f"{where} {spec}: no such file or folder ({path})")
        if not os.access(path, os.R_OK):
            raise LocalPackageError(f"{where} {spec}: {path} cannot be read")
        return path

    def _add(self, path: Path) -> str:
        """Stage ``path`` (a folder as a zip) under a name of its own; returns the name."""
        if path.is_dir():
            path = self._zip(path)
        elif not path.is_file():
            raise LocalPackageError(f"{path}: not a file or a folder")
        name = path.name
        known = self.files.get(name)
        if known is not None and known.resolve() != path.resolve():
            raise LocalPackageError(
                f"two local packages are named {name} ({known} and {path}): rename one")
        self.files[name] = path
        return name

    def _zip(self, folder: Path) -> Path:
        """``folder`` as ``<name>.zip`` holding ``<name>/...`` (the layout pip unpacks)."""
        folder = folder.resolve()
        if not any((folder / n).is_file() for n in _PROJECT_FILES):
            raise LocalPackageError(
                f"{folder}: a folder without pyproject.toml, setup.py or setup.cfg is not a "
                "Python project pip can install")
        target = self._workdir() / f"zip-{len(self.files)}" / f"{folder.name}.zip"
        target.parent.mkdir()
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for root, dirs, names in os.walk(folder):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS
                                 and not d.endswith(".egg-info"))
                for n in sorted(names):
                    path = Path(root) / n
                    if path.is_symlink() or n.endswith(".pyc"):
                        continue
                    zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
        return target

    def _rewrite(self, path: Path, seen: list[Path]) -> str:
        """The requirements file at ``path`` with its local paths replaced (nested ``-r``
        and ``-c`` files rewritten and staged too)."""
        out = []
        for line in _logical_lines(path.read_text(encoding="utf-8")):
            text = _strip_comment(line).strip()
            nested = _NESTED.match(text)
            if nested:
                flag, target = nested.group(1), _unquote(nested.group(2))
                if "://" in target:
                    out.append(text)
                    continue
                # pip reads a nested file relative to the file that names it
                child = self._existing(target, path.parent, f"{path}: {flag}")
                if child.resolve() in seen:
                    raise LocalPackageError(f"{path}: {flag} {target} includes itself")
                rewritten = self._workdir() / f"requirements-{len(self.files)}.txt"
                rewritten.write_text(self._rewrite(child, [*seen, child.resolve()]),
                                     encoding="utf-8")
                name = self._add_as(rewritten, child.name)
                out.append(f"{flag} {PLACEHOLDER}/{name}")
                continue
            editable = _EDITABLE.match(text)
            if editable and looks_local(_unquote(editable.group(2)), self._cwd):
                raise LocalPackageError(
                    f"{path}: {text!r} is an editable install of a local folder, which cannot "
                    "be edited from the session; name the folder without -e (it is sent as "
                    "a copy) or build a wheel")
            token = text.split(";", 1)[0].split()[0] if text and not text.startswith("-") \
                else ""
            if token and looks_local(_unquote(token), self._cwd):
                # pip resolves a plain path against the working directory; a path next to
                # the requirements file is what its author usually meant when that fails
                spec = _unquote(token)
                try:
                    local = self._existing(spec, self._cwd, str(path))
                except LocalPackageError:
                    local = self._existing(spec, path.parent, str(path))
                rest = text[len(token):]
                out.append(f"{PLACEHOLDER}/{self._add(local)}{rest}")
                continue
            if text:
                out.append(text)
        return "\n".join(out) + "\n"

    def _add_as(self, path: Path, wanted: str) -> str:
        """Stage ``path`` under ``wanted``, or ``<n>-<wanted>`` when that name is taken."""
        name, n = wanted, 1
        while name in self.files:
            name, n = f"{n}-{wanted}", n + 1
        self.files[name] = path
        return name


def _logical_lines(text: str) -> list[str]:
    """Lines with pip's backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            current += raw[:-1]
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    return lines


def _strip_comment(line: str) -> str:
    """pip's comment rule: ``#`` at the start of a line or after whitespace."""
    return re.sub(r"(^|\s+)#.*$", "", line)


def _unquote(text: str) -> str:
    try:
        parts = shlex.split(text)
    except ValueError:
        return text
    return parts[0] if len(parts) == 1 else text
