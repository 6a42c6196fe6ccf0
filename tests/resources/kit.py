"""What every resource kind must do, as checks the per-kind test modules call.

Each check drives a real local server (started with ``--resources``) through its REST
API with the ``probe`` app (``apps/probe``), whose ``report`` output says where it ran.
"""

from __future__ import annotations

import io
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess, start_server

APPS = Path(__file__).resolve().parent / "apps"
# quotes, a command substitution and a glob: only a shell would make anything of them
PWNED = Path(tempfile.gettempdir()) / f"pwned-{secrets.token_hex(6)}"
TRICKY = f"it's a $(touch {PWNED}) `id` * ; test"


def write_resources(path: Path, resources: list[dict[str, Any]], **extra: Any) -> Path:
    """A resources file with ``resources`` (and ``pools``/``apps`` if given)."""
    path.write_text(yaml.safe_dump({"resources": resources, **extra}))
    return path


def every_kind(path: Path, docker_engine: Any, sshd_server: Any, task_user: Any,
               slurm_workdir: Path) -> Path:
    """A resources file naming one resource of each remote kind on this machine's engines,
    as the session, workspace and kernel tests use them: ``box`` (Docker, which may run the
    engine's session image), ``lab`` (an SSH host) and ``hpc`` (Slurm, as ``task_user``)."""
    return write_resources(path, [
        {"name": "box", "kind": "docker", "image": docker_engine.base_image,
         "images": [docker_engine.session_image], "docker_host": docker_engine.host,
         "network": "host"},
        sshd_server.resource("lab"),
        {"name": "hpc", "kind": "slurm", "run_as": task_user.pw_name, "poll_interval": 0.2,
         "workdir": str(slurm_workdir)},
    ])


def serve_sessions(root: Path, resources_file: Path, slurm_conf: Path) -> ServerProcess:
    """A server with these resources and the session relay as its plugin, as
    ``everest-jupyter server`` runs it; ``.relay_url`` is the relay's address."""
    server = serve(root / "data", resources_file,
                   extra_args_more=["--plugin", "launcher.relay.plugin"],
                   env={"SLURM_CONF": str(slurm_conf)})
    relay_json = root / "data" / "relay.json"
    wait_for(relay_json.exists, 60, "the relay to start")
    server.relay_url = json.loads(relay_json.read_text())["url"]
    return server


def serve(data_dir: Path, resources_file: Path, extra_args_more: list[str] = (),
          **opts: Any) -> ServerProcess:
    """A server with the probe apps and these resources (and more CLI arguments)."""
    return start_server(data_dir, apps=[APPS],
                        extra_args=["--resources", str(resources_file), *extra_args_more],
                        **opts)


def report_of(job: Any) -> dict[str, Any]:
    return json.loads(job.output("report"))


def check_roundtrip(server: ServerProcess, resource: str) -> dict[str, Any]:
    """A job on ``resource``: argument untouched, input file in, output file out; returns
    the probe's report (the caller checks the resource's evidence in it)."""
    client = server.client()
    data = client.upload(io.BytesIO(b"hello resources\n"), filename="in.txt")
    job = client.submit("probe", {"text": TRICKY, "data": data["uri"]},
                        resources=[resource])
    done = client.wait(job.id, timeout=120)
    assert done.state.value == "DONE", (done, client.log(job.id), server.log_text())
    report = report_of(done)
    assert report["argv"] == [TRICKY]
    assert report["uid"] != 0, "tasks must not run as root"
    assert report["has_token"]
    assert client.read(done.output("upper")) == b"HELLO RESOURCES\n"
    assert not PWNED.exists()
    return report


def check_cancel(server: ServerProcess, resource: str, tasks_at: Path,
                 while_running: Any = None) -> str:
    """Cancel a running job: it ends CANCELLED; returns its log.

    ``tasks_at`` is the folder (on this machine) holding the resource's task folders;
    ``while_running(job_id)`` runs once the probe runs (to inspect the task there)."""
    client = server.client()
    job = client.submit("probe", {"text": "cancel me", "seconds": 300}, resources=[resource])
    _let_it_start(client, job.id, tasks_at)
    if while_running is not None:
        while_running(job.id)
    client.cancel(job.id)
    ended = client.wait(job.id, timeout=60)
    assert ended.state.value == "CANCELLED", (ended, client.log(job.id))
    assert report_of(ended).get("interrupted") == "SIGINT", "the task never got SIGINT"
    return client.log(job.id)


def check_time_limit(server: ServerProcess, resource: str) -> None:
    """The app's 2 s time limit stops a 300 s task and fails its job, saying why."""
    client = server.client()
    job = client.submit("probe-limited", {"text": "too slow", "seconds": 300},
                        resources=[resource])
    ended = client.wait(job.id, timeout=120)
    assert ended.state.value == "FAILED", (ended, client.log(job.id))
    assert "time limit" in (ended.info or ""), ended
    assert report_of(ended).get("interrupted") == "SIGINT", "the task never got SIGINT"


def check_kill9_restart(server: ServerProcess, resource: str,
                        tasks_at: Path) -> tuple[dict[str, Any], str]:
    """``kill -9`` of the server while a task runs there, then a restart: the task is
    re-adopted, its outputs collected, and it ran once (its report predates the restart).
    Returns the report and the job's log."""
    client = server.client()
    job = client.submit("probe", {"text": "survive", "seconds": 4}, resources=[resource])
    _let_it_start(client, job.id, tasks_at)
    server.kill9()
    server.restart()
    restarted_at = time.time()
    client = server.client()
    done = client.wait(job.id, timeout=120)
    log = client.log(job.id)
    assert done.state.value == "DONE", (done, log, server.log_text())
    report = report_of(done)
    # the outputs are those of the run started before the restart (a second run would
    # start after it, and log a second start)
    assert report["started"] < restarted_at, "the task was started again after the restart"
    assert "re-adopted" in log, log
    assert log.count("started on") == 1, log
    return report, log


def _let_it_start(client: Any, job_id: str, tasks_at: Path, timeout: float = 120) -> None:
    """Wait until the probe of the job's first task has started (its ``started`` file)."""
    started = tasks_at / f"{job_id}-0-0" / "work" / "started"
    deadline = time.monotonic() + timeout
    while not started.exists():
        assert not client.job(job_id).is_done, client.log(job_id)
        assert time.monotonic() < deadline, f"the probe of job {job_id} did not start"
        time.sleep(0.1)


def check_links_not_followed(server: ServerProcess, resource: str, tmp: Path) -> None:
    """A task that replaces its work folder with a link to a root-only folder on this
    machine, or makes its outputs links to a root-only file, gets its job FAILED; nothing
    of them is read or moved (issue 20.1: the server brings the folder back, or reads it
    where it is mounted, without following a link)."""
    secret = tmp / "root-only"
    secret.mkdir(mode=0o700)
    for name in ("report.json", "upper.txt"):
        (secret / name).write_text('{"stolen": "root secret"}')
        (secret / name).chmod(0o600)
    client = server.client()
    for mode, target in (("work", secret), ("output", secret / "report.json")):
        job = client.submit("hostile", {"mode": mode, "target": str(target)},
                            resources=[resource])
        ended = client.wait(job.id, timeout=120)
        assert ended.state.value == "FAILED", (mode, ended, client.log(job.id))
        assert "root secret" not in json.dumps(ended.raw), ended.raw
        if mode == "work":
            assert "replaced by a link" in (ended.info or ""), ended.info
    assert sorted(p.name for p in secret.iterdir()) == ["report.json", "upper.txt"]
    assert all(p.read_text() == '{"stolen": "root secret"}' for p in secret.iterdir())
