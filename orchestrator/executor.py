"""One application as a :class:`concurrent.futures.Executor`.

    >>> with orch.executor("sleep") as pool:
    ...     futures = [pool.submit({"duration": d}) for d in (1, 2, 3)]
    ...     results = list(pool.map({"duration": d} for d in (1, 2)))

``submit`` takes the job's inputs (a dict, keywords, or both) instead of a function.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from orchestrator.futures import JobFuture, Submitter


class AppExecutor(concurrent.futures.Executor):
    """Runs jobs of one application through an :class:`~orchestrator.engine.Orchestrator`."""

    def __init__(self, orchestrator: Submitter, app: str, *, name: str | None = None,
                 resources: list[str] | None = None, retries: int = 0):
        self.orchestrator = orchestrator
        self.app = app
        self.name = name
        self.resources = resources
        self.retries = retries
        self._futures: set[JobFuture] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, inputs: dict[str, Any] | None = None, /, **more: Any) -> JobFuture:
        """Submit one job; ``inputs`` and keyword inputs are merged (keywords win).

        Raises ``RuntimeError`` after :meth:`shutdown`.
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
        future = self.orchestrator.submit(self.app, {**(inputs or {}), **more}, name=self.name,
                                          resources=self.resources, retries=self.retries)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def map(self, inputs_iterable: Iterable[dict[str, Any]], *iterables: Any,
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """Submit a job per inputs dict now; yield the results in order.

        Like ``Executor.map``, a failed job raises when its result is reached and
        ``timeout`` bounds the whole wait (``TimeoutError``).
        """
        if iterables:
            raise TypeError("AppExecutor.map takes one iterable of inputs dicts")
        futures = [self.submit(inputs) for inputs in inputs_iterable]
        return _results(futures, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; cancel pending ones if asked; wait for the rest if ``wait``."""
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()
        if wait:
            concurrent.futures.wait(futures)


def _results(futures: list[JobFuture], timeout: float | None) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for future in futures:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield future.result(left)
    finally:
        for future in futures:
            future.cancel()  # no-op for finished ones; the rest were abandoned by the caller
