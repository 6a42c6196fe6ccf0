"""A job's inputs as the user gives them: plain values, futures, output references, files.

Three walks over the same nested structure (dicts, lists, tuples):

- :func:`prepare` copies it, turning local files (``pathlib.Path``) and open file objects
  into :class:`FileInput` values (file objects are read once, here);
- :func:`dependencies` lists the futures it waits for;
- :func:`fingerprint` gives a JSON-able form that identifies the task without running
  anything: futures by their keys, files by their content hash. The journal keys tasks by it;
- :func:`resolve` gives the values to send: futures' results, files' URIs.

Strings are sent as they are (a string may already be an Everest file URI), with one
exception made by :func:`paths_for_file_inputs` before :func:`prepare`: a plain string
given for an input the application declares a file, naming an existing local file and
carrying no URI scheme, is uploaded like a ``Path``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from everest_app.descriptor import file_kind
from orchestrator.futures import JobFuture, OutputRef

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileInput:
    """A local file to upload: from a path (read when uploaded) or bytes read already."""

    filename: str
    sha256: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: Path) -> FileInput:
        """Hash the file at ``path``; raises ``FileNotFoundError`` when it is missing."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return cls(path.name, digest.hexdigest(), path=path)

    @classmethod
    def from_fileobj(cls, fileobj: Any) -> FileInput:
        """Read an open file object whole (text is encoded as UTF-8)."""
        data = fileobj.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        name = os.path.basename(str(getattr(fileobj, "name", "") or "")) or "upload"
        return cls(name, hashlib.sha256(data).hexdigest(), data=data)


def _is_fileobj(value: Any) -> bool:
    return hasattr(value, "read") and callable(value.read)


def _local_path(value: Any) -> Path | None:
    """``value`` as a local path when it is a string without a URI scheme that names an
    existing file (an upload URI such as ``/api/files/temp/..`` names none here)."""
    if isinstance(value, str) and value and "://" not in value and os.path.isfile(value):
        return Path(value)
    return None


def may_be_local_path(value: Any) -> bool:
    """True for a string (or a list holding one) that looks like a local file path rather
    than a URI or a plain word: worth checking against the application's description."""
    if isinstance(value, list):
        return any(map(may_be_local_path, value))
    return isinstance(value, str) and "://" not in value and not value.startswith("/api/") \
        and (os.sep in value or "/" in value or os.path.isfile(value))


def paths_for_file_inputs(inputs: dict[str, Any], specs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with plain-string local paths turned into ``Path`` (so they are uploaded)
    where ``specs`` (the application's ``inputs`` description) declares a file, or an array
    of files. Other values are left as they are.

    Raises ``FileNotFoundError`` for a string given for a file input that is neither a URI
    (``scheme://`` or a server path under ``/api/``) nor an existing local file.
    """
    out = dict(inputs)
    for name, value in inputs.items():
        prop = specs.get(name)
        if not isinstance(prop, dict):
            continue
        kind = file_kind(prop)
        if kind == "file":
            out[name] = _file_value(name, value)
        elif kind == "files" and isinstance(value, list):
            out[name] = [_file_value(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return out


def _file_value(name: str, value: Any) -> Any:
    if not isinstance(value, str) or "://" in value or value.startswith("/api/"):
        return value
    path = _local_path(value)
    if path is None:
        raise FileNotFoundError(
            f"input '{name}': {value!r} is neither a local file nor a file URI; pass "
            "pathlib.Path(...) of an existing file to upload it, or a file URI")
    return path


def prepare(value: Any) -> Any:
    """Copy ``value`` with paths and file objects replaced by :class:`FileInput`.

    Raises ``FileNotFoundError`` for a path that does not exist, at submission time rather
    than later in a background thread.
    """
    if isinstance(value, Path):
        return FileInput.from_path(value)
    if _is_fileobj(value):
        return FileInput.from_fileobj(value)
    if isinstance(value, dict):
        return {str(k): prepare(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [prepare(v) for v in value]
    return value


def dependencies(value: Any) -> list[JobFuture]:
    """The distinct futures ``value`` refers to, in first-seen order."""
    found: dict[int, JobFuture] = {}

    def visit(v: Any) -> None:
        if isinstance(v, JobFuture):
            found.setdefault(id(v), v)
        elif isinstance(v, OutputRef):
            found.setdefault(id(v.future), v.future)
        elif isinstance(v, dict):
            for item in v.values():
                visit(item)
        elif isinstance(v, (list, tuple)):
            for item in v:
                visit(item)

    visit(value)
    return list(found.values())


def fingerprint(value: Any) -> Any:
    """A JSON-able stand-in for ``value`` that names futures and files by stable keys."""
    if isinstance(value, JobFuture):
        return {"$future": value.key}
    if isinstance(value, OutputRef):
        ref = {"$future": value.future.key, "$output": value.name}
        return {**ref, "$index": list(value.index)} if value.index else ref
    if isinstance(value, FileInput):
        return {"$file": value.sha256, "name": value.filename}
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    return value


def future_value(future: JobFuture) -> Any:
    """What a bare future stands for as an input: its only output.

    Raises ``ValueError`` when the job has no output or several (then name one with
    ``future.output(name)``).
    """
    result = future.result() or {}
    if len(result) != 1:
        raise ValueError(f"job {future.job_id} ({future.label}) has {len(result)} outputs "
                         f"{sorted(result)}; pass future.output(name) to choose one")
    return next(iter(result.values()))


def resolve(value: Any, upload: Callable[[FileInput], str]) -> Any:
    """The value to send: futures and references by their results, files by their URIs.

    Every future in ``value`` must be done and successful.
    """
    if isinstance(value, JobFuture):
        return future_value(value)
    if isinstance(value, OutputRef):
        return value.value()
    if isinstance(value, FileInput):
        return upload(value)
    if isinstance(value, dict):
        return {k: resolve(v, upload) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve(v, upload) for v in value]
    return value
