"""Which kernel jobs the labs of this machine started, so none outlives its lab.

Each live kernel has a small file in ``<jupyter runtime dir>/everest-kernels/`` naming the
lab's process, the job, the relay session and whom to ask. A lab that exits cleanly shuts
its kernels down (and their files go); a lab that was killed leaves files whose process is
gone, and the next lab on this machine to start an Everest kernel ends those jobs
(:func:`sweep`). The runner's lease ends them too, even if no lab ever starts again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from everest_app.config import write_private

log = logging.getLogger(__name__)


def folder() -> Path:
    return Path(jupyter_runtime_dir()) / "everest-kernels"


def record(kernel_id: str, entry: dict[str, Any]) -> None:
    """Note a live kernel of this process (``job_id``, ``session_id``, ``everest_url``,
    ``relay_url``, ``profile``)."""
    path = folder() / f"{kernel_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps({**entry, "pid": os.getpid(), "kernel_id": kernel_id}))


def forget(kernel_id: str) -> None:
    with contextlib.suppress(OSError):
        (folder() / f"{kernel_id}.json").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphans() -> list[dict[str, Any]]:
    """Entries whose lab process is gone."""
    found = []
    for path in sorted(folder().glob("*.json")) if folder().is_dir() else []:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and not _alive(int(entry.get("pid") or 0)):
            found.append(entry)
    return found


def sweep() -> list[str]:
    """End the jobs of kernels whose lab is gone; returns their job ids."""
    from launcher.kernels.job import KernelJob, KernelJobOptions, credentials

    ended = []
    for entry in orphans():
        try:
            # never start the embedded server just to end a job of one that is down
            creds = credentials(entry.get("everest_url"), entry.get("relay_url"),
                                entry.get("profile"), start=False)
            job = KernelJob(creds, KernelJobOptions())
            job.job_id, job.session_id = entry.get("job_id"), entry.get("session_id")
            job.end(wait=0)
            ended.append(str(entry.get("job_id")))
            log.info("ended job %s of kernel %s: its lab (pid %s) is gone",
                     entry.get("job_id"), entry.get("kernel_id"), entry.get("pid"))
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the sweep
            log.warning("could not end the job of kernel %s: %s", entry.get("kernel_id"), exc)
            continue
        forget(str(entry.get("kernel_id")))
    return ended
