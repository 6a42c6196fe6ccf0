"""What the CLI prints: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Print ``data`` as indented JSON (Enums and Paths as their string values)."""
    json.dump(data, out or sys.stdout, indent=2, default=str)
    (out or sys.stdout).write("\n")


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str],
                out: TextIO | None = None) -> None:
    """Print ``rows`` under ``headers`` in left-aligned columns; ``None`` shows as ``-``."""
    out = out or sys.stdout
    text_rows = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *text_rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    if not text_rows:
        out.write("(none)\n")


def print_fields(fields: Iterable[tuple[str, Any]], out: TextIO | None = None) -> None:
    """Print ``name: value`` lines, names aligned; nested values as compact JSON."""
    out = out or sys.stdout
    items = list(fields)
    width = max((len(name) for name, _ in items), default=0)
    for name, value in items:
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        out.write(f"{name + ':':<{width + 1}} {'-' if value is None else value}\n")


def duration_text(seconds: float | None) -> str | None:
    """``2h 05m``, ``4m 10s``, ``42s``; ``None`` for ``None``."""
    if seconds is None:
        return None
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
