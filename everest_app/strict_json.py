"""JSON as our APIs take it in and give it out: RFC 8259 and nothing more.

Python's :mod:`json` accepts ``NaN``, ``Infinity`` and numbers too large for a float (which
become ``inf``), parses nesting until the interpreter's recursion limit breaks, and lets
``"\\ud800"`` (a lone surrogate, which no UTF-8 text can hold) through as a string that
later fails to encode. Each of those, stored and given back, breaks the next reader: a
browser's ``JSON.parse`` rejects ``NaN``; SQLite refuses the surrogate. :func:`loads` refuses
them all with a :class:`JSONInputError` whose message names the problem (the APIs answer it
as a 400); :func:`dumps` never writes anything but valid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted. Every document our APIs take is a few
levels deep; this leaves room for users' own input values."""


class JSONInputError(ValueError):
    """The text is not JSON our APIs accept; the message says why, for the caller."""


def _no_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON number (JSON numbers are finite)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONInputError(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` (UTF-8 bytes or text) strictly; raises :class:`JSONInputError`."""
    if isinstance(data, bytes | bytearray):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except JSONInputError:
        raise
    except RecursionError:
        raise JSONInputError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONInputError(f"not valid JSON: {exc}") from None
    check(value, max_depth)
    return value


def check(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JSONInputError` if ``value`` nests deeper than ``max_depth`` or holds a
    string (or key) that is not valid Unicode. Iterative: depth cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise JSONInputError(f"JSON nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, sub in item.items():
                    _check_text(key)
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise JSONInputError("JSON numbers must be finite")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise JSONInputError(f"invalid Unicode: a lone surrogate (\\u{ord(bad):04x}) at "
                             f"character {exc.start} of a string") from None


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes only valid JSON: a non-finite float (stored before input
    was strict) is written as ``null`` instead of ``NaN``/``Infinity``."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_finite_only(value), allow_nan=False, **kwargs)


def _finite_only(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_only(v) for v in value]
    return value
