"""The two shapes of the Templet SDK's samples, as orchestrator actors.

- :class:`SweepMaster` / :class:`SweepWorker`: a master hands parameter sets to a fixed
  number of workers; each worker runs one job at a time (submitting suspends it) and sends
  the result back, then gets the next set. The number of workers bounds the jobs in flight.
- :func:`diamond`: A feeds B and C, which run side by side; D joins them (Templet's
  ``samples/diamond``: ``D`` submits once it holds the messages of both ``B`` and ``C``).

    orch.run([master, *workers])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator import Actor, JobFuture


class SweepWorker(Actor):
    """Runs one job of ``app`` per parameter set it receives; answers with the future."""

    def __init__(self, app: str, **submit_options: Any):
        self.app = app
        self.options = submit_options
        self.master: Actor | None = None
        self.params: dict[str, Any] | None = None

    def receive(self, params: dict[str, Any], sender: Actor | None) -> None:
        self.master, self.params = sender, params
        self.submit(self.app, params, **self.options)

    def on_job(self, future: JobFuture) -> None:
        self.send(self.master, (self.params, future))


class SweepMaster(Actor):
    """Hands out ``params`` to ``workers`` and collects ``results`` (params, future) pairs.

    ``peak`` records the most workers busy at once; ``on_result`` (optional) is called for
    each result as it arrives, e.g. to update a plot.
    """

    def __init__(self, params: Iterable[dict[str, Any]], workers: list[SweepWorker],
                 on_result: Any = None):
        self.todo = list(params)
        self.workers = workers
        self.results: list[tuple[dict[str, Any], JobFuture]] = []
        self.busy = 0
        self.peak = 0
        self.on_result = on_result

    def start(self) -> None:
        for worker in self.workers:
            self._hand_out(worker)

    def _hand_out(self, worker: Actor) -> None:
        if self.todo:
            self.send(worker, self.todo.pop(0))
            self.busy += 1
            self.peak = max(self.peak, self.busy)

    def receive(self, message: tuple[dict[str, Any], JobFuture], sender: Actor | None) -> None:
        self.busy -= 1
        self.results.append(message)
        if self.on_result is not None:
            self.on_result(*message)
        self._hand_out(sender)


class DiamondNode(Actor):
    """One node of the diamond: waits for a message from each of ``inputs`` (names), then
    submits ``job(messages)`` -> (app, inputs); sends its future to each of ``outputs``.

    ``events`` (shared list) records ``(node, "submit"|"done")`` in the order they happen.
    """

    def __init__(self, name: str, job: Any, events: list[tuple[str, str]]):
        self.name = name
        self.job = job
        self.events = events
        self.waiting_for: set[str] = set()
        self.outputs: list[DiamondNode] = []
        self.messages: dict[str, JobFuture] = {}
        self.future: JobFuture | None = None

    def start(self) -> None:
        if not self.waiting_for:
            self._go()

    def receive(self, message: tuple[str, JobFuture], sender: Actor | None) -> None:
        name, future = message
        self.messages[name] = future
        if set(self.messages) >= self.waiting_for:
            self._go()

    def _go(self) -> None:
        app, inputs = self.job(self.messages)
        self.events.append((self.name, "submit"))
        self.submit(app, inputs)

    def on_job(self, future: JobFuture) -> None:
        self.events.append((self.name, "done"))
        self.future = future
        for node in self.outputs:
            self.send(node, (self.name, future))


def diamond(a: Any, b: Any, c: Any, d: Any) -> tuple[list[DiamondNode], list[tuple[str, str]]]:
    """Wire A -> (B, C) -> D from four ``job(messages) -> (app, inputs)`` functions.

    Returns the four nodes (pass them to ``orch.run``) and the shared event list.
    """
    events: list[tuple[str, str]] = []
    na, nb, nc, nd = (DiamondNode(n, j, events) for n, j in zip("ABCD", (a, b, c, d), strict=True))
    na.outputs = [nb, nc]
    nb.waiting_for = nc.waiting_for = {"A"}
    nb.outputs = nc.outputs = [nd]
    nd.waiting_for = {"B", "C"}
    return [na, nb, nc, nd], events
