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
  array of scalars one per line). Unmapped file inputs keep their own (sanitised) names —
  except a name the application's own files take (its script, a folder of its files):
  such a job is refused at submission (400 naming the input, :func:`name_clash`), and
  staging never lets an input replace an application file either.
- **Interpreter.** A first argument ``python``/``python3``/``python3.X`` runs as
  ``sys.executable``; other commands are looked up on PATH and in the work directory.
- **Outputs.** ``outputMappings`` read a work-dir file (``stdout``/``stderr`` are the
  captured streams): numbers parsed (``pattern``, a regex, picks group 1 or the whole
  match), strings as text (at most 1 MiB, longer is cut with a marker), files published as
  job files. Array outputs: for files ``file`` is a glob; for scalars one item per line.
  A missing file omits a non-required output and fails the task for a required one.
  Nothing outside the work directory is ever read: outputs are opened beneath the work
  folder the server holds open, and a link on the way fails the output
  (:mod:`everest_local.workdir`).
"""

from __future__ import annotations

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
from everest_local.workdir import Opened, UnsafeFile, WorkDir, read_text

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
    own = _taken_by_app(app)
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
            values[name] = _stage_file(name, value, work, target, files,
                                       set() if target else own)
        elif kind == "files":
            folder = work / target if target else work
            folder.mkdir(parents=True, exist_ok=True)
            names = [_stage_file(name, v, folder, n, files,
                                 own if not target else _under(own, target))
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


def _taken_by_app(app: Application) -> set[str]:
    """The application's own files and the folders holding them, as relative names."""
    taken: set[str] = set()
    for name in app.file_names():
        parts = name.split("/")
        taken.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return taken


def _under(taken: set[str], folder: str) -> set[str]:
    """``taken`` names inside ``folder``, relative to it."""
    prefix = folder.strip("/") + "/"
    return {n[len(prefix):] for n in taken if n.startswith(prefix)}


def _clash_words(name: str, staged: str) -> str:
    return (f"input '{name}': a file named {staged!r} would replace the application's own "
            f"{staged!r}; upload it under another name")


def name_clash(app: Application, inputs: dict[str, Any]) -> str | None:
    """Why ``inputs`` cannot run: an unmapped file input (or an item of a file array) whose
    name would replace one of the application's own files or folders; None if none does.
    Mapped names are the application's own choice and are not checked."""
    mapped = {m["param"]: m["file"] for m in app.input_mappings}
    taken: set[str] | None = None
    for name, uris in app.file_inputs(inputs):
        target = mapped.get(name)
        if target and file_kind(app.inputs[name]) == "file":
            continue
        if taken is None:
            taken = _taken_by_app(app)
        own = _under(taken, target) if target else taken
        names = _distinct_names(uris) if file_kind(app.inputs[name]) == "files" else \
            [uri_file_name(uris[0])]
        for staged in names:
            if staged in own:
                return _clash_words(name, staged)
    return None


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
                files: dict[str, Path], own: set[str]) -> str:
    src = files.get(uri)
    if src is None or not src.is_file():
        raise StagingError(f"input '{name}': file {uri} no longer exists")
    dest_name = target or uri_file_name(uri)
    if dest_name in own:
        raise StagingError(_clash_words(name, dest_name))
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


def collect_outputs(app: Application, work: WorkDir,
                    publish: Callable[[Opened, str], str], *, strict: bool = True
                    ) -> dict[str, Any]:
    """Read the outputs of a finished task per ``outputMappings``.

    ``publish(opened, name)`` moves an opened file out of the work dir into the job's files
    and returns its URI. With ``strict`` a missing required output, an unparsable number or
    an output that is a link raises :class:`StagingError`; without it (a failed task) such
    outputs are skipped.
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


def _open(work: WorkDir, rel: str) -> Opened | None:
    try:
        return work.open(rel)
    except UnsafeFile as exc:
        raise StagingError(str(exc)) from None


def _read_output(name: str, prop: dict[str, Any], mapping: dict[str, str], work: WorkDir,
                 publish: Callable[[Opened, str], str]) -> Any:
    kind = prop.get("type", "string")
    items = prop.get("items") or {}
    files = file_kind(prop)
    if files == "files":
        uris = []
        for rel in _glob(work, mapping["file"]):
            opened = _open(work, rel)
            if opened is None:
                continue
            try:
                uris.append(publish(opened, safe_name(rel) or name))
            finally:
                opened.close()
        return uris
    opened = _open(work, mapping["file"])
    if opened is None:
        if prop.get("required"):
            raise StagingError(f"output '{name}': the task did not write {mapping['file']}")
        return _ABSENT
    try:
        if files == "file":
            return publish(opened, safe_name(mapping["file"]) or name)
        text = _read_text(opened)
    finally:
        opened.close()
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


def _glob(work: WorkDir, pattern: str) -> list[str]:
    try:
        return work.glob(pattern)
    except UnsafeFile as exc:
        raise StagingError(str(exc)) from None


def _read_text(opened: Opened) -> str:
    data = read_text(opened, MAX_TEXT_OUTPUT + 1)
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
