"""Templet-style actors over Everest jobs.

An actor is an object whose handlers run one at a time: :meth:`Actor.start` when the run
begins, :meth:`Actor.receive` for each message another actor sends it, and a job handler
when a job it submitted ends. :meth:`Actor.submit` *suspends* the actor: messages sent to it
wait in its mailbox until its jobs have ended and their results were delivered (as calls of
``then(future)``, by default :meth:`Actor.on_job`). A bounded set of worker actors therefore
bounds the jobs in flight, as in the Templet SDK's task-bag pattern.

:meth:`Orchestrator.run <orchestrator.engine.Orchestrator.run>` runs every handler on the
calling thread, so handlers never run at once (across all actors, not only within one), and
returns when no message is queued and no job is out. Unlike Templet's engine, a failed job
does not stop the run: its future carries the failure to the actor, which decides. An
exception raised *by a handler* does stop it (it is a bug), after cancelling the run's jobs.

    class Worker(Actor):
        def receive(self, params, sender):
            self.master = sender
            self.submit("lorenz-lyapunov", params)      # suspends until the job ends
        def on_job(self, future):
            self.send(self.master, future.result())     # a message back to the master
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from typing import Any

from orchestrator.futures import JobFuture, Submitter
from orchestrator.progress import progress_bar


class Actor:
    """Subclass and override :meth:`start`, :meth:`receive` and :meth:`on_job` as needed."""

    _run: ActorRun | None = None

    def start(self) -> None:
        """Called once at the beginning of the run; send first messages or submit here."""

    def receive(self, message: Any, sender: Actor | None) -> None:
        """Handle a message from ``sender``. The default refuses: override it to accept."""
        raise NotImplementedError(f"{type(self).__name__} got a message but defines no receive()")

    def on_job(self, future: JobFuture) -> None:
        """Handle the end of a job submitted without ``then``. ``future`` is done."""
        raise NotImplementedError(f"{type(self).__name__} submitted a job but defines no on_job()")

    @property
    def suspended(self) -> bool:
        """True while a job this actor submitted has not been delivered back to it."""
        return bool(self._run and self._run.outstanding(self))

    def send(self, target: Actor, message: Any = None) -> None:
        """Queue ``message`` for ``target.receive(message, sender=self)``."""
        self._engine().post(target, message, self)

    def submit(self, app: str, inputs: dict[str, Any] | None = None, *,
               then: Callable[[JobFuture], None] | None = None, **options: Any) -> JobFuture:
        """Submit a job and suspend this actor until it ends; then call ``then(future)``
        (default :meth:`on_job`). ``options`` are those of ``Orchestrator.submit``."""
        return self._engine().submit(self, app, inputs, then or self.on_job, options)

    def stop(self) -> None:
        """End the whole run after this handler; jobs still out are cancelled."""
        self._engine().stop()

    def _engine(self) -> ActorRun:
        if self._run is None:
            raise RuntimeError(f"{self!r} is not part of a running orch.run([...])")
        return self._run


class ActorRun:
    """One execution of a set of actors. Created by ``Orchestrator.run``."""

    def __init__(self, orchestrator: Submitter, actors: list[Actor], progress: bool):
        self.orchestrator = orchestrator
        self.actors = actors
        self.progress = progress
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._outstanding: dict[int, int] = {}
        self._mailboxes: dict[int, deque] = {}
        self._jobs_out = 0
        self._futures: set[JobFuture] = set()
        self._stopped = False
        self._bar: Any = None

    def outstanding(self, actor: Actor) -> int:
        return self._outstanding.get(id(actor), 0)

    def post(self, target: Actor, message: Any, sender: Actor | None) -> None:
        if not isinstance(target, Actor) or target._run is not self:
            raise ValueError(f"{target!r} is not an actor of this run; pass it to orch.run()")
        self._events.put(("message", target, message, sender))

    def submit(self, actor: Actor, app: str, inputs: dict[str, Any] | None,
               handler: Callable[[JobFuture], None], options: dict[str, Any]) -> JobFuture:
        future = self.orchestrator.submit(app, inputs, **options)
        self._outstanding[id(actor)] = self.outstanding(actor) + 1
        self._jobs_out += 1
        self._futures.add(future)
        if self._bar is not None:
            self._bar.total = (self._bar.total or 0) + 1
            self._bar.refresh()
        future.add_done_callback(lambda f: self._events.put(("job", actor, handler, f)))
        return future

    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        """Start every actor, then deliver events until none is left or one actor stops."""
        for actor in self.actors:
            if actor._run is not None:
                raise RuntimeError(f"{actor!r} is already part of another run")
        for actor in self.actors:
            actor._run = self
            self._mailboxes[id(actor)] = deque()
        self._bar = progress_bar(self.progress, total=0, desc="actors")
        try:
            for actor in self.actors:
                actor.start()
            # one consumer (this thread): empty() cannot turn false behind our back
            while not self._stopped and (self._jobs_out or not self._events.empty()):
                try:
                    event = self._events.get(timeout=0.5)  # wakes for Ctrl-C
                except queue.Empty:
                    continue
                self._dispatch(event)
        finally:
            for future in self._futures:
                future.cancel()  # only those still out: stop(), a handler's bug, Ctrl-C
            for actor in self.actors:
                actor._run = None
            self._bar.close()

    def _dispatch(self, event: tuple) -> None:
        if event[0] == "message":
            _, target, message, sender = event
            if self.outstanding(target):
                self._mailboxes[id(target)].append((message, sender))
            else:
                target.receive(message, sender)
            return
        _, actor, handler, future = event
        self._futures.discard(future)
        self._jobs_out -= 1
        self._outstanding[id(actor)] -= 1
        self._bar.update(1)
        handler(future)
        mailbox = self._mailboxes[id(actor)]
        while mailbox and not self.outstanding(actor) and not self._stopped:
            message, sender = mailbox.popleft()
            actor.receive(message, sender)
