"""The orchestrator: fan work out from a session (or anywhere with a token) as Everest jobs.

    import orchestrator
    with orchestrator.connect(journal="sweep.journal") as orch:
        a = orch.submit("owner/app", {"x": 1})               # a concurrent.futures.Future
        b = orch.submit("owner/app", {"x": a.output("y")})   # waits for a: a DAG edge
        print(b.result())
        results = orch.map("owner/app", [{"x": i} for i in range(100)])

Futures (:mod:`orchestrator.futures`), one background poller for all jobs
(:mod:`orchestrator.poller`, :mod:`orchestrator.cadence`), a journal to re-attach after a
restart (:mod:`orchestrator.journal`), Templet-style actors (:mod:`orchestrator.actors`).
"""

from orchestrator.actors import Actor
from orchestrator.connect import connect
from orchestrator.engine import Orchestrator
from orchestrator.errors import DependencyFailed, JobFailed, OrchestratorClosed
from orchestrator.executor import AppExecutor
from orchestrator.futures import JobFuture, OutputRef, as_completed

__all__ = [
    "Actor",
    "AppExecutor",
    "DependencyFailed",
    "JobFailed",
    "JobFuture",
    "Orchestrator",
    "OrchestratorClosed",
    "OutputRef",
    "as_completed",
    "connect",
]
