"""A task's working directory: staging inputs, building the command, reading outputs.

Pure file work, no database and no event loop, so it runs in a worker thread and is tested
directly. Rules (Everest's where known, documented guesses otherwise):

- **Command.** ``config.command`` is split into arguments first (``shlex``, POSIX rules),
  then ``${name}`` is replaced inside each argument, in one pass (a value containing
  ``${other}`` stays literal). No shell ever sees the result. An argument that is exactly
  ``${name}`` of an array expands to one argument per item; inside a longer argument items
  are joined with spaces. A declared but absent input gives ``""``, and an argument that is
  only such a placeholder is dropped. Undeclared names stay literal.
- **Values.** Numbers as JSON writes them, booleans ``true``/``false``, strings as is; a file
  input is replaced by the name it was staged under.
- **Inputs.** An ``inputMappings`` entry writes a scalar's value into its file, or stages
  the file input under that name (an array of files goes into a folder of that name, an
  array of scalars one per line). Unmapped file inputs keep their own (sanitised) names.
- **Interpreter.** A first argument ``python``/``python3``/``python3.X`` runs as
  ``sys.executable``; other commands are looked up on PATH and in the work directory.
- **Outputs.** ``outputMappings`` read a work-dir file (``stdout``/``stderr`` are the
  captured streams): numbers parsed (``pattern``, a regex, picks group 1 or the whole
  match), strings as text (at most 1 MiB, longer is cut with a marker), files published as
  job files. Array outputs: for files ``file`` is a glob; for scalars one item per line.
  A missing file omits a non-required output and fails the task for a required one.
  Nothing outside the work directory is ever read (symlinks are resolved and checked).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from everest_app.descriptor import Application, file_kind

MAX_TEXT_OUTPUT = 1 << 20
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_ABSENT = object()


class StagingError(Exception):
    """The task cannot be started or its outputs cannot be read; the message is the info."""


def safe_name(name: str) -> str | None:
    """The last path component of ``name`` if it is a usable file name, else None."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", "..") or "\x00" in base or len(base.encode()) > 255:
        return None
    return base


def uri_file_name(uri: str) -> str:
    """The file name a URI ends with (percent-decoded, sanitised); ``file`` if none."""
    return safe_name(unquote(uri.split("?", 1)[0])) or "file"


def format_value(value: Any) -> str:
    """A scalar as it appears in a command argument or an input file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return str(value)


def stage_inputs(app: Application, inputs: dict[str, Any], work: Path,
                 files: dict[str, Path]) -> dict[str, Any]:
    """Write the app files and inputs into ``work``; return each input's command value.

    ``files`` maps every file URI among the inputs to its stored path. Returns, per declared
    input, the string (or list of strings) that ``${name}`` stands for. Raises
    :class:`StagingError` when a file input's file is gone.
    """
    app.copy_files_to(work)
    mapped = {m["param"]: m["file"] for m in app.input_mappings}
    values: dict[str, Any] = {}
    for name, prop in app.inputs.items():
        value = inputs.get(name, _ABSENT)
        if value is _ABSENT or value is None:
            values[name] = ""
            continue
        target = mapped.get(name)
        kind = file_kind(prop)
        if kind == "file":
            values[name] = _stage_file(name, value, work, target, files)
        elif kind == "files":
            folder = work / target if target else work
            folder.mkdir(parents=True, exist_ok=True)
            names = [_stage_file(name, v, folder, n, files)
                     for v, n in zip(value, _distinct_names(value), strict=True)]
            values[name] = [str(Path(target) / n) if target else n for n in names]
        else:
            values[name] = ([format_value(v) for v in value] if isinstance(value, list)
                            else format_value(value))
            if target:
                text = ("\n".join(values[name]) + "\n" if isinstance(value, list)
                        else values[name])
                _write_inside(work, target, text.encode("utf-8"))
    return values


def _distinct_names(uris: list[str]) -> list[str]:
    """The file names to stage an array of files under: each URI's own name, except that a
    name already taken becomes ``<index>-<name>``, so no item overwrites another."""
    taken: set[str] = set()
    names = []
    for index, uri in enumerate(uris):
        name = uri_file_name(uri)
        if name in taken:
            name = f"{index}-{name}"
        taken.add(name)
        names.append(name)
    return names


def _stage_file(name: str, uri: str, work: Path, target: str | None,
                files: dict[str, Path]) -> str:
    src = files.get(uri)
    if src is None or not src.is_file():
        raise StagingError(f"input '{name}': file {uri} no longer exists")
    dest_name = target or uri_file_name(uri)
    dest = _inside(work, dest_name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest_name


def _inside(work: Path, rel: str) -> Path:
    path = (work / rel).resolve()
    root = work.resolve()
    if path != root and root not in path.parents:
        raise StagingError(f"{rel!r} would leave the task's work directory")
    return path


def _write_inside(work: Path, rel: str, data: bytes) -> None:
    path = _inside(work, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_argv(template: str, values: dict[str, Any]) -> list[str]:
    """Split ``template`` into arguments, then substitute ``${name}`` inside each.

    ``values`` maps declared input names to a string or a list of strings. Raises
    :class:`StagingError` for an unparsable template or an empty command.
    """
    try:
        parts = shlex.split(template, posix=True)
    except ValueError as exc:
        raise StagingError(f"cannot split the command {template!r}: {exc}") from exc
    argv: list[str] = []
    for part in parts:
        whole = _PLACEHOLDER.fullmatch(part)
        if whole and whole.group(1) in values:
            value = values[whole.group(1)]
            if isinstance(value, list):
                argv.extend(value)
            elif value != "":
                argv.append(value)
            continue
        argv.append(_PLACEHOLDER.sub(lambda m: _joined(values, m), part))
    if not argv:
        raise StagingError(f"the command {template!r} is empty")
    return argv


def _joined(values: dict[str, Any], match: re.Match[str]) -> str:
    if match.group(1) not in values:
        return match.group(0)
    value = values[match.group(1)]
    return " ".join(value) if isinstance(value, list) else value


def resolve_executable(argv: list[str], work: Path, path_env: str | None) -> list[str]:
    """``argv`` with its program made absolute; ``python3`` becomes ``sys.executable``.

    Raises :class:`StagingError` with a clear message when the program does not exist
    here (the usual case: a Windows command such as ``cmd.exe`` on this Linux server).
    """
    prog = argv[0]
    if _PYTHON.match(prog):
        return [sys.executable, *argv[1:]]
    if "/" in prog:
        candidate = (work / prog) if not os.path.isabs(prog) else Path(prog)
        found = str(candidate) if os.access(candidate, os.X_OK) and candidate.is_file() else None
    else:
        found = shutil.which(prog, path=path_env)
    if found:
        return [found, *argv[1:]]
    hint = ""
    if prog.lower().endswith((".exe", ".bat", ".cmd")) or prog.lower() in ("cmd", "powershell"):
        hint = (" — the application's command is for Windows, and this local server runs "
                "tasks on Linux")
    raise StagingError(f"command not found: {prog!r}{hint}")


def collect_outputs(app: Application, work: Path,
                    publish: Callable[[Path, str], str], *, strict: bool = True
                    ) -> dict[str, Any]:
    """Read the outputs of a finished task per ``outputMappings``.

    ``publish(path, name)`` moves a file out of the work dir into the job's files and
    returns its URI. With ``strict`` a missing required output or an unparsable number
    raises :class:`StagingError`; without it (a failed task) such outputs are skipped.
    """
    result: dict[str, Any] = {}
    for mapping in app.output_mappings:
        name = mapping["param"]
        prop = app.outputs.get(name, {"type": "string"})
        try:
            value = _read_output(name, prop, mapping, work, publish)
        except StagingError:
            if strict:
                raise
            continue
        if value is not _ABSENT:
            result[name] = value
    return result


def _read_output(name: str, prop: dict[str, Any], mapping: dict[str, str], work: Path,
                 publish: Callable[[Path, str], str]) -> Any:
    kind = prop.get("type", "string")
    items = prop.get("items") or {}
    files = file_kind(prop)
    if files == "files":
        matches = sorted(glob.glob(str(work / mapping["file"])))
        return [publish(_checked(work, Path(p)), safe_name(p) or name) for p in matches
                if os.path.isfile(p)]
    path = work / mapping["file"]
    if not path.is_file():
        if prop.get("required"):
            raise StagingError(f"output '{name}': the task did not write {mapping['file']}")
        return _ABSENT
    path = _checked(work, path)
    if files == "file":
        return publish(path, safe_name(mapping["file"]) or name)
    text = _read_text(path)
    if mapping.get("pattern"):
        found = re.search(mapping["pattern"], text, re.MULTILINE)
        if not found:
            raise StagingError(f"output '{name}': pattern {mapping['pattern']!r} not found "
                               f"in {mapping['file']}")
        text = found.group(1) if found.groups() else found.group(0)
    if kind == "array":
        return [_scalar(name, items.get("type", "string"), line, mapping["file"])
                for line in text.splitlines() if line.strip()]
    return _scalar(name, kind, text, mapping["file"])


def _checked(work: Path, path: Path) -> Path:
    real = path.resolve()
    if work.resolve() not in real.parents:
        raise StagingError(f"output file {path.name} points outside the work directory")
    return real


def _read_text(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_TEXT_OUTPUT + 1)
    text = data[:MAX_TEXT_OUTPUT].decode("utf-8", errors="replace")
    if len(data) > MAX_TEXT_OUTPUT:
        text += "\n[... cut at 1 MiB by the local server]"
    return text


def _scalar(name: str, kind: str, text: str, file: str) -> Any:
    if kind in ("number", "integer"):
        s = text.strip()
        try:
            value = int(s) if re.fullmatch(r"[+-]?\d+", s) else float(s)
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            raise StagingError(f"output '{name}': {s[:40]!r} in {file} is not a number")
        return value
    if kind == "boolean":
        return text.strip().lower() in ("true", "1", "yes")
    return text
