"""The session's local packages: the files the user sent with the job, ready for pip.

``everest-jupyter launch --packages ./my.whl`` or ``-r requirements.txt`` uploads the local
files as file inputs, which Everest stages into the task's folder: the package files into
``package_files/``, the requirements file as ``requirements.txt``. A ``packages`` entry that
is the bare name of a staged file means that file; the requirements file names staged files
as ``${EVEREST_JUPYTER_PACKAGES}/NAME``, which pip expands from the environment.

The staged files are copied into a folder of the cache named by their content, so a session
with the same files reuses the environment the first one built (the environment's key holds
the paths), and a changed wheel gets a new one.

Python >= 3.8, standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

PACKAGE_DIR = "package_files"
REQUIREMENTS_FILE = "requirements.txt"
ENV_VAR = "EVEREST_JUPYTER_PACKAGES"
PLACEHOLDER = "${" + ENV_VAR + "}"


class PackageFilesError(ValueError):
    """The staged package files cannot be used; the message says which."""


def _staged(inputs_dir: str) -> list[tuple]:
    """``(name, path)`` of every staged file (package files, then the requirements file)."""
    found = []
    folder = os.path.join(inputs_dir, PACKAGE_DIR)
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append((PACKAGE_DIR + "/" + name, path))
    requirements = os.path.join(inputs_dir, REQUIREMENTS_FILE)
    if os.path.isfile(requirements):
        found.append((REQUIREMENTS_FILE, requirements))
    return found


def _digest(files: list[tuple]) -> str:
    sha = hashlib.sha256()
    for name, path in files:
        sha.update(name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def keep(inputs_dir: str, cache_dir: str) -> str | None:
    """Copy the staged files into ``cache_dir/<digest>/`` (once; atomically: the package
    files into ``files/``, the requirements file beside it) and return that folder, or
    ``None`` when the job brought none."""
    files = _staged(inputs_dir)
    if not files:
        return None
    dest = os.path.join(cache_dir, _digest(files))
    if os.path.isdir(dest):
        return dest
    os.makedirs(cache_dir, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".partial-", dir=cache_dir)
    try:
        os.mkdir(os.path.join(partial, "files"))
        for name, path in files:
            target = name if name == REQUIREMENTS_FILE else \
                os.path.join("files", os.path.basename(name))
            shutil.copyfile(path, os.path.join(partial, target))
        os.rename(partial, dest)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not os.path.isdir(dest):  # else another runner just made the same folder
            raise
    return dest


def resolve(packages: list[str], inputs_dir: str, cache_dir: str) -> list[str]:
    """The pip arguments for ``packages`` plus the staged files: bare names of staged files
    become their kept paths, the placeholder its folder, and a staged requirements file a
    ``--requirement=`` argument. Sets ``EVEREST_JUPYTER_PACKAGES`` in this process's
    environment (pip, a child, reads it in the requirements file).

    Raises :class:`PackageFilesError` when a package names the placeholder but no files
    came with the job.
    """
    kept = keep(inputs_dir, cache_dir)
    if kept is None:
        for spec in packages:
            if PLACEHOLDER in spec:
                raise PackageFilesError(
                    f"input 'packages': {spec} names a package file, but the job brought "
                    "none (input package_files)")
        return list(packages)
    files = os.path.join(kept, "files")
    os.environ[ENV_VAR] = files
    names = set(os.listdir(files))
    out = []
    for spec in packages:
        out.append(os.path.join(files, spec) if spec in names else
                   spec.replace(PLACEHOLDER, files))
    requirements = os.path.join(kept, REQUIREMENTS_FILE)
    if os.path.isfile(requirements):
        out.append("--requirement=" + requirements)
    return out
