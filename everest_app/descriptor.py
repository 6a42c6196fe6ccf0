"""Everest application descriptions: load, validate job inputs, export to the zip Everest imports.

An application is what Everest exports: ``application.json`` plus a folder
``ApplicationFiles/`` whose files are staged into every task. :func:`load` reads any of the
three shapes an application comes in (the JSON file alone, a folder holding it and
``ApplicationFiles/``, or an export zip) into an :class:`Application`;
:func:`validate_inputs` checks a job's inputs against it; :func:`export_zip` writes the zip
that Everest's "import application" accepts.

Decisions where Everest says nothing public (the list in ``docs/architecture.md``, "Where the
local server guesses Everest's behaviour"):

- ``config.resourceRequirements.timeLimit.defaultValue`` is read in **seconds**; ``0`` or a
  missing value means no limit. (The real Templet export says ``1``: taken literally, that is
  one second. Its Windows command cannot run on Linux anyway.)
- Input types: ``number``, ``integer``, ``boolean``, ``string`` (optionally with ``enum``),
  ``enum`` (a ``string`` whose value must be one of ``enum``), ``string`` + ``format: uri``
  (a file), ``array`` (of any of those, per ``items``). ``default`` fills a missing input;
  ``minimum``/``maximum`` bound numbers. Numbers must be JSON numbers: ``"3"`` is not ``3``.
- Unknown input names are kept and ignored, as the real server appears to do.
- An application is a *service* (long-lived, e.g. a notebook session) when its ``keywords``
  contain ``"service"``; the local server runs services outside the batch slots.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from everest_app.errors import BadRequestError

APPLICATION_JSON = "application.json"
FILES_DIR = "ApplicationFiles"
SERVICE_KEYWORD = "service"

_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SCALAR_TYPES = {"number", "integer", "boolean", "string", "enum"}
_KNOWN_TYPES = _SCALAR_TYPES | {"array"}
_TOP_ORDER = ("alias", "name", "annotation", "keywords", "description", "inputs", "outputs",
              "type", "config", "retryFailedTasks", "files", "version")
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so an export of the same app is byte-identical


class DescriptorError(ValueError):
    """An application description that cannot be used; the message says what is wrong."""


@dataclass
class Application:
    """One Everest application: its description and where its application files live.

    ``files_source`` is the folder holding the files of ``ApplicationFiles/``, or a zip path
    whose ``ApplicationFiles/`` members they are; ``None`` when the app has no files.
    ``extra`` keeps top-level keys this model does not name, so nothing is lost on export.
    """

    alias: str
    name: str
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    annotation: str = ""
    keywords: list[str] = field(default_factory=list)
    description: str = ""
    retry_failed_tasks: bool = False
    files: list[Any] = field(default_factory=list)
    version: str = "1.0.0"
    extra: dict[str, Any] = field(default_factory=dict)
    files_source: Path | None = None
    source: Path | None = None

    # -- the parts of config the executor needs ---------------------------------------

    @property
    def command(self) -> str:
        """The command template, with ``${input}`` placeholders."""
        return str(self.config.get("command") or "")

    @property
    def input_mappings(self) -> list[dict[str, str]]:
        """``config.inputMappings``: ``{param, file, pattern}`` entries."""
        return list(self.config.get("inputMappings") or [])

    @property
    def output_mappings(self) -> list[dict[str, str]]:
        """``config.outputMappings``: ``{param, file, pattern}`` entries."""
        return list(self.config.get("outputMappings") or [])

    @property
    def time_limit(self) -> float | None:
        """The task time limit in seconds (our reading of ``timeLimit``), or None for none."""
        req = (self.config.get("resourceRequirements") or {}).get("timeLimit") or {}
        value = req.get("defaultValue") if isinstance(req, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return float(value)

    def file_inputs(self, inputs: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
        """``(name, uris)`` of each file or file-array input given in ``inputs`` (the one
        walk of an application's file inputs: checks, staging and uploads all use it)."""
        for name, prop in self.inputs.items():
            kind, value = file_kind(prop), inputs.get(name)
            if kind == "file" and isinstance(value, str):
                yield name, [value]
            elif kind == "files" and isinstance(value, list):
                yield name, [v for v in value if isinstance(v, str)]

    @property
    def is_service(self) -> bool:
        """True when the app is long-lived (keyword ``service``): it takes no batch slot."""
        return any(str(k).strip().lower() == SERVICE_KEYWORD for k in self.keywords)

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``application.json`` content, in Everest's key order."""
        data: dict[str, Any] = {
            "alias": self.alias, "name": self.name, "annotation": self.annotation,
            "keywords": list(self.keywords), "description": self.description,
            "inputs": copy.deepcopy(self.inputs), "outputs": copy.deepcopy(self.outputs),
            "type": "application", "config": copy.deepcopy(self.config),
            "retryFailedTasks": self.retry_failed_tasks, "files": copy.deepcopy(self.files),
            "version": self.version,
        }
        for key, value in self.extra.items():
            data.setdefault(key, copy.deepcopy(value))
        return data

    def file_names(self) -> list[str]:
        """Relative POSIX paths of the application files (sorted)."""
        return sorted(name for name, _ in self._iter_files())

    def copy_files_to(self, dest: str | os.PathLike) -> None:
        """Copy the application files into ``dest`` (created if needed).

        Symlinks in a files folder are followed, so ``ApplicationFiles`` may link to shared
        code. Raises :class:`DescriptorError` for a zip member that would escape ``dest``.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name, opener in self._iter_files():
            target = dest.joinpath(*PurePosixPath(name).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            if self._source_mode(name) & 0o111:
                target.chmod(0o755)

    def _source_mode(self, name: str) -> int:
        if self.files_source is not None and self.files_source.is_dir():
            return (self.files_source / name).stat().st_mode
        return 0

    def _iter_files(self) -> Iterator[tuple[str, Any]]:
        src = self.files_source
        if src is None:
            return
        if src.is_dir():
            for root, dirs, names in os.walk(src, followlinks=True):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for n in names:
                    if n.endswith(".pyc"):
                        continue
                    path = Path(root) / n
                    rel = path.relative_to(src).as_posix()
                    yield rel, (lambda p=path: open(p, "rb"))
            return
        with zipfile.ZipFile(src) as zf:
            members = _zip_file_members(zf)
        for rel, member in members:
            yield rel, (lambda m=member: _ZipMemberReader(src, m))


class _ZipMemberReader(io.BytesIO):
    """A zip member's bytes, read at open time (the zip is closed again at once)."""

    def __init__(self, zip_path: Path, member: str):
        with zipfile.ZipFile(zip_path) as zf:
            super().__init__(zf.read(member))


def _safe_relative(name: str) -> str | None:
    """``name`` as a relative POSIX path inside its folder, or None if it would escape it."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or any(p in ("..", "") for p in parts) or ":" in parts[0]:
        return None
    return "/".join(parts)


def _zip_prefix(zf: zipfile.ZipFile) -> str:
    """The folder inside the zip that holds application.json ("" at the top)."""
    names = [n for n in zf.namelist() if PurePosixPath(n).name == APPLICATION_JSON]
    if not names:
        raise DescriptorError(f"{zf.filename}: no {APPLICATION_JSON} in the zip")
    best = min(names, key=lambda n: n.count("/"))
    return best[: -len(APPLICATION_JSON)]


def _zip_file_members(zf: zipfile.ZipFile) -> list[tuple[str, str]]:
    prefix = _zip_prefix(zf) + FILES_DIR + "/"
    out = []
    for info in zf.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = _safe_relative(info.filename[len(prefix):])
        if rel is None:
            raise DescriptorError(f"{zf.filename}: unsafe file name {info.filename!r}")
        out.append((rel, info.filename))
    return out


# -- loading ---------------------------------------------------------------------------


def from_dict(data: dict[str, Any], *, files_source: str | os.PathLike | None = None,
              source: str | os.PathLike | None = None) -> Application:
    """Build an :class:`Application` from ``application.json`` content.

    Raises :class:`DescriptorError` naming the first problem found: a missing or malformed
    alias, inputs/outputs that are not objects of typed properties, mappings that are not
    ``{param, file}`` objects, or no ``config.command``.
    """
    if not isinstance(data, dict):
        raise DescriptorError("an application description must be a JSON object")
    alias = data.get("alias")
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise DescriptorError(f"alias {alias!r}: letters, digits, '_', '.', '-' (max 100)")
    inputs = _properties(data.get("inputs"), "inputs")
    outputs = _properties(data.get("outputs"), "outputs")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise DescriptorError("config must be an object")
    if not isinstance(config.get("command"), str) or not config["command"].strip():
        raise DescriptorError(f"{alias}: config.command is missing")
    for key in ("inputMappings", "outputMappings"):
        for m in config.get(key) or []:
            if not (isinstance(m, dict) and isinstance(m.get("param"), str)
                    and isinstance(m.get("file"), str) and m["file"]):
                raise DescriptorError(f"{alias}: config.{key} entries need 'param' and 'file'")
            if _safe_relative(m["file"]) is None:
                raise DescriptorError(f"{alias}: config.{key} file {m['file']!r} leaves the "
                                      "work directory")
            try:
                re.compile(m.get("pattern") or "")
            except (re.error, TypeError) as exc:
                raise DescriptorError(f"{alias}: config.{key} pattern {m.get('pattern')!r} "
                                      f"is not a regular expression ({exc})") from exc
    keywords = data.get("keywords") or []
    if not isinstance(keywords, list):
        raise DescriptorError(f"{alias}: keywords must be a list")
    extra = {k: v for k, v in data.items() if k not in _TOP_ORDER}
    return Application(
        alias=alias, name=str(data.get("name") or alias), inputs=inputs, outputs=outputs,
        config=copy.deepcopy(config), annotation=str(data.get("annotation") or ""),
        keywords=[str(k) for k in keywords], description=str(data.get("description") or ""),
        retry_failed_tasks=bool(data.get("retryFailedTasks", False)),
        files=list(data.get("files") or []), version=str(data.get("version") or "1.0.0"),
        extra=extra, files_source=Path(files_source) if files_source else None,
        source=Path(source) if source else None,
    )


def _properties(value: Any, what: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DescriptorError(f"{what} must be an object of properties")
    out = {}
    for name, prop in value.items():
        if not isinstance(prop, dict):
            raise DescriptorError(f"{what}.{name} must be an object")
        kind = prop.get("type", "string")
        if kind not in _KNOWN_TYPES:
            raise DescriptorError(f"{what}.{name}: unknown type {kind!r}")
        if kind == "enum" and not isinstance(prop.get("enum"), list):
            raise DescriptorError(f"{what}.{name}: type enum needs an 'enum' list")
        out[name] = copy.deepcopy(prop)
    return out


def load(path: str | os.PathLike) -> Application:
    """Load an application from ``application.json``, a folder holding it, or an export zip.

    For a folder (or a JSON file) the sibling ``ApplicationFiles/`` folder, when present,
    holds the application files. Raises :class:`DescriptorError` for anything unreadable
    and ``FileNotFoundError`` when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no application at {path}")
    if path.is_dir():
        path = path / APPLICATION_JSON
        if not path.is_file():
            raise DescriptorError(f"{path.parent}: no {APPLICATION_JSON} in the folder")
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DescriptorError(f"{path}: not a readable application.json ({exc})") from exc
    files_dir = path.parent / FILES_DIR
    return from_dict(data, files_source=files_dir if files_dir.is_dir() else None,
                     source=path.parent)


def _load_zip(path: Path) -> Application:
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _zip_prefix(zf)
            data = json.loads(zf.read(prefix + APPLICATION_JSON).decode("utf-8"))
            has_files = bool(_zip_file_members(zf))
    except (zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DescriptorError(f"{path}: not a readable Everest export ({exc})") from exc
    return from_dict(data, files_source=path if has_files else None, source=path)


# -- export ------------------------------------------------------------------------------


def export_zip(app: Application, path: str | os.PathLike) -> Path:
    """Write ``app`` as the zip Everest imports (``application.json`` + ``ApplicationFiles/``).

    The zip is written to a temporary name and renamed, so a failure leaves nothing half
    written. Returns the path written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(zipfile.ZipInfo(FILES_DIR + "/", _ZIP_DATE), b"")
            body = json.dumps(app.to_dict(), indent=2, ensure_ascii=False) + "\n"
            _write_member(zf, APPLICATION_JSON, body.encode("utf-8"), 0o644)
            for name, opener in sorted(app._iter_files()):
                with opener() as src:
                    mode = 0o755 if app._source_mode(name) & 0o111 else 0o644
                    _write_member(zf, f"{FILES_DIR}/{name}", src.read(), mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_member(zf: zipfile.ZipFile, name: str, data: bytes, mode: int) -> None:
    info = zipfile.ZipInfo(name, _ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16
    zf.writestr(info, data)


# -- input validation ----------------------------------------------------------------------


def validate_inputs(app: Application, inputs: Any) -> dict[str, Any]:
    """Check a job's ``inputs`` against ``app`` and return them with defaults filled in.

    Declared inputs are type-checked; missing ones take their ``default`` or, when
    ``required``, are an error; ``null`` counts as missing. Unknown names are kept.
    Raises :class:`~everest_app.errors.BadRequestError` whose message names the input.
    File inputs are only checked to be URI strings here; whether the file exists and
    belongs to the caller is the server's business.
    """
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise BadRequestError("inputs must be a JSON object of input names to values",
                              status=400)
    out = dict(inputs)
    for name, prop in app.inputs.items():
        value = inputs.get(name)
        if value is None:
            out.pop(name, None)
            if "default" in prop and prop["default"] is not None:
                out[name] = copy.deepcopy(prop["default"])
            elif prop.get("required"):
                raise BadRequestError(f"input '{name}'{_title(prop)} is required", status=400)
            continue
        out[name] = _check_value(name, prop, value)
    return out


def _title(prop: dict[str, Any]) -> str:
    title = prop.get("title")
    return f" ({title})" if title else ""


def is_file_input(prop: dict[str, Any]) -> bool:
    """True for a ``string`` property with ``format: uri`` (a file)."""
    return prop.get("type", "string") == "string" and prop.get("format") == "uri"


def file_kind(prop: dict[str, Any]) -> str | None:
    """``"file"`` for a file property, ``"files"`` for an array of files, else None."""
    if is_file_input(prop):
        return "file"
    if prop.get("type") == "array" and is_file_input(prop.get("items") or {}):
        return "files"
    return None


def _check_value(name: str, prop: dict[str, Any], value: Any) -> Any:
    kind = prop.get("type", "string")
    if kind == "array":
        if not isinstance(value, list):
            raise _wrong(name, "an array", value)
        items = prop.get("items") or {"type": "string"}
        for bound, ok in (("minItems", len(value) >= prop.get("minItems", 0)),
                          ("maxItems", len(value) <= prop.get("maxItems", len(value)))):
            if not ok:
                raise BadRequestError(f"input '{name}' has {len(value)} items, "
                                      f"{bound} is {prop[bound]}", status=400)
        return [_check_scalar(f"{name}[{i}]", items, v) for i, v in enumerate(value)]
    return _check_scalar(name, prop, value)


def _check_scalar(name: str, prop: dict[str, Any], value: Any) -> Any:
    kind = prop.get("type", "string")
    if kind in ("number", "integer"):
        value = _check_number(name, kind, value)
        for bound, ok in (("minimum", lambda b: value >= b), ("maximum", lambda b: value <= b)):
            if isinstance(prop.get(bound), int | float) and not ok(prop[bound]):
                raise BadRequestError(f"input '{name}' is {value}, {bound} is {prop[bound]}",
                                      status=400)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _wrong(name, "true or false", value)
    elif not isinstance(value, str):
        raise _wrong(name, "a file URI" if is_file_input(prop) else "a string", value)
    elif is_file_input(prop) and not _looks_like_uri(value):
        raise BadRequestError(f"input '{name}' must be a file URI (upload the file to "
                              f"/api/files/temp first), got {value[:80]!r}", status=400)
    choices = prop.get("enum")
    if isinstance(choices, list) and value not in choices:
        raise BadRequestError(f"input '{name}' must be one of {choices}, got {value!r}",
                              status=400)
    return value


def _check_number(name: str, kind: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(name, "an integer" if kind == "integer" else "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequestError(f"input '{name}' must be a finite number", status=400)
    if kind == "integer":
        if isinstance(value, float):
            if not value.is_integer():
                raise _wrong(name, "an integer", value)
            return int(value)
    return value


def _looks_like_uri(value: str) -> bool:
    return value.startswith(("/api/files/", "http://", "https://"))


def _wrong(name: str, expected: str, value: Any) -> BadRequestError:
    got = "null" if value is None else type(value).__name__
    if isinstance(value, bool):
        got = "boolean"
    elif isinstance(value, str):
        got = "string"
    elif isinstance(value, list):
        got = "array"
    elif isinstance(value, dict):
        got = "object"
    elif isinstance(value, int | float):
        got = "number"
    return BadRequestError(f"input '{name}' must be {expected}, got {got}", status=400)
