"""Executor backends: how a task runs on a resource, one kind per module.

The executor stages every task into a local folder ``<task-dir>/work`` (inputs, app files)
and builds its argument list; a backend moves that folder to where the task runs, starts
it, waits for it, signals it and brings the work folder back for the outputs to be read.
Every kind goes through that one contract: :mod:`.local` (this machine's processes, where
nothing moves), :mod:`.docker`, :mod:`.ssh`, :mod:`.slurm`, on the common ground of
:mod:`.base` (what a backend is) and :mod:`.hosts` (where folders live).

Restart safety rests on the **handle**: a small JSON-able dict naming the remote thing (a
container name, a remote folder, a Slurm job name). :meth:`Backend.handle_for` computes it
from the task id alone, the executor stores it *before* :meth:`Backend.launch`, and after a
restart :meth:`Backend.started` tells whether the launch got as far as starting the task —
if so the task is re-adopted (:meth:`Backend.wait` again), if not it is cleaned up and queued
again. So a task is never lost and never started twice.

Every backend runs the same fixed wrapper as local tasks (``processes.WRAPPER``): the task's
arguments travel in a NUL-separated ``argv`` file and reach the program through
``xargs -0``, never through a shell's parser. The wrapper records ``pid`` and ``exit``
in the task folder, which is how an end is seen even by a server that was restarted.
"""

from __future__ import annotations

from everest_local.backends.base import Backend, BackendError, TaskSpec, write_argv
from everest_local.containment import Containment
from everest_local.resources import Resource
from everest_local.task_users import TaskAccounts

__all__ = ["Backend", "BackendError", "TaskSpec", "make_backend", "write_argv"]


def make_backend(resource: Resource, accounts: TaskAccounts,
                 containment: Containment | None = None) -> Backend:
    """The backend for a resource of kind local, docker, ssh or slurm (``accounts``: who
    local tasks run as; ``containment``: what they run in)."""
    if resource.kind == "local":
        from everest_local.backends.local import LocalBackend

        return LocalBackend(resource, accounts, containment)
    if resource.kind == "docker":
        from everest_local.backends.docker import DockerBackend

        return DockerBackend(resource)
    if resource.kind == "ssh":
        from everest_local.backends.ssh import SSHBackend

        return SSHBackend(resource)
    if resource.kind == "slurm":
        from everest_local.backends.slurm import SlurmBackend

        return SlurmBackend(resource)
    raise ValueError(f"no backend for kind {resource.kind!r}")
