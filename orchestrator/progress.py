"""Progress bars for ``map`` and ``run``: tqdm's notebook-aware bar, or nothing."""

from __future__ import annotations

from typing import Any


class _NoBar:
    """Stands in for a bar when progress is off; accepts the calls the orchestrator makes."""

    total: int | None = None
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def refresh(self) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, *, total: int | None, desc: str) -> Any:
    """A tqdm.auto bar (a widget in Jupyter, text elsewhere) when enabled, else a no-op bar."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="job", dynamic_ncols=True)
