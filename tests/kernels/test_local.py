"""Everest kernels on the local resource, in a real JupyterLab: the kernel runs in the job's
task (its ``EVEREST_JOB_ID``), interrupts, restarts in the same job, and its shutdown ends
the job; a job that fails says why; the WebSocket route carries a kernel too; a lab that was
killed leaves no job running."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.kernels.conftest import running_jobs, serve_with_relay
from tests.kernels.lab import EVIDENCE
from tests.session.helpers import pids_with_cwd_under, wait_for

pytestmark = pytest.mark.timeout(600)


def _evidence(kernel) -> dict:
    return json.loads(kernel.run(EVIDENCE))


def test_a_kernel_on_the_local_resource_runs_interrupts_restarts_and_shuts_down(
        kernel_server, make_lab) -> None:
    lab = make_lab(kernel_server)
    name = lab.install("--resource", "local", "--display-name", "Python on local")
    lab.start()
    assert running_jobs(kernel_server) == []
    kernel = lab.start_kernel(name)
    first = _evidence(kernel)
    [job_id] = running_jobs(kernel_server)
    assert first["job"] == job_id  # the kernel runs inside the job's task
    task_dir = Path(first["cwd"]).parent
    assert pids_with_cwd_under(task_dir)

    busy = kernel.send("while True: pass")
    kernel.wait_busy(busy)
    kernel.interrupt()
    stopped = kernel.result(busy, timeout=60)
    assert (stopped["status"], stopped["ename"]) == ("error", "KeyboardInterrupt")
    assert kernel.run("print(6*7)") == "42\n"

    kernel.restart()
    kernel.reconnect()
    again = _evidence(kernel)
    assert again["pid"] != first["pid"], "the restart did not start a new kernel process"
    assert again["job"] == job_id and running_jobs(kernel_server) == [job_id]

    kernel.shutdown()
    wait_for(lambda: not running_jobs(kernel_server), 60, "the kernel's job to end")
    assert kernel_server.client().job(job_id).state.value in ("DONE", "CANCELLED")
    wait_for(lambda: not pids_with_cwd_under(task_dir), 30, "the kernel's processes to end")
    log = lab.log_path.read_text()
    assert "everest kernel" in log and "tunnel up" in log  # progress in the server's log


def test_a_kernel_whose_job_fails_says_why(kernel_server, make_lab) -> None:
    lab = make_lab(kernel_server)
    name = lab.install("--resource", "local", "--name", "broken", "--packages=--bad")
    lab.start()
    resp = lab.api("POST", "api/kernels", json={"name": name})
    assert resp.status_code == 502, resp.text
    message = resp.json()["message"]
    assert "FAILED" in message  # Everest's state ...
    assert "'--bad' is an option" in message  # ... and the runner's own last lines
    assert running_jobs(kernel_server) == []


def test_an_unknown_resource_is_refused_clearly(kernel_server, make_lab) -> None:
    lab = make_lab(kernel_server)
    name = lab.install("--resource", "no-such-resource")
    lab.start()
    resp = lab.api("POST", "api/kernels", json={"name": name})
    assert resp.status_code == 502, resp.text
    assert "no-such-resource" in resp.json()["message"]
    assert running_jobs(kernel_server) == []


def test_a_kernel_over_the_websocket_route(tmp_path_factory, make_lab) -> None:
    server = serve_with_relay(tmp_path_factory.mktemp("ws") / "data",
                              env={"EVEREST_JUPYTER_ROUTE": "websocket"})
    try:
        lab = make_lab(server)
        name = lab.install("--resource", "local")
        lab.start()
        kernel = lab.start_kernel(name)
        seen = _evidence(kernel)
        [job_id] = running_jobs(server)
        assert seen["job"] == job_id
        busy = kernel.send("while True: pass")
        kernel.wait_busy(busy)
        kernel.interrupt()
        assert kernel.result(busy, timeout=60)["ename"] == "KeyboardInterrupt"
        kernel.shutdown()
        wait_for(lambda: not running_jobs(server), 60, "the kernel's job to end")
        client = server.client()
        log = client.read(client.job(job_id).output("log")).decode()
        assert "goes through the WebSocket" in log, log
    finally:
        server.close()


def test_a_killed_lab_leaves_no_job_running(kernel_server, make_lab) -> None:
    """kill -9 of the lab: the next lab of this machine to start an Everest kernel ends the
    orphaned job (its ledger entry names a process that is gone)."""
    first = make_lab(kernel_server, "first")
    name = first.install("--resource", "local")
    first.start()
    orphan = _evidence(first.start_kernel(name))["job"]
    first.stop(signal.SIGKILL)
    assert orphan in running_jobs(kernel_server)

    second = make_lab(kernel_server, "second")
    second.root = first.root  # the same machine and user: the same Jupyter runtime folder
    second.env["JUPYTER_RUNTIME_DIR"] = first.env["JUPYTER_RUNTIME_DIR"]
    second.env["JUPYTER_DATA_DIR"] = first.env["JUPYTER_DATA_DIR"]
    second.start()
    kernel = second.start_kernel(name)
    wait_for(lambda: orphan not in running_jobs(kernel_server), 60,
             "the orphaned job to be ended")
    assert "labs that are gone" in second.log()
    kernel.shutdown()
    wait_for(lambda: not running_jobs(kernel_server), 60, "the kernel's job to end")


def test_a_kernel_works_in_the_users_workspace(kernel_server, make_lab) -> None:
    """With ``--workspace``, the kernel's working folder is the user's workspace: what one
    kernel writes, the next one (another job) finds."""
    lab = make_lab(kernel_server)
    name = lab.install("--resource", "local", "--workspace", "kernel-files")
    lab.start()
    first = lab.start_kernel(name)
    job = _evidence(first)["job"]
    first.run("open('kept.txt', 'w').write('written by a kernel')")
    first.shutdown()
    wait_for(lambda: job not in running_jobs(kernel_server), 60, "the first job to end")

    second = lab.start_kernel(name)
    assert _evidence(second)["job"] != job
    assert second.run("print(open('kept.txt').read())") == "written by a kernel\n"
    second.shutdown()
    wait_for(lambda: not running_jobs(kernel_server), 60, "the second job to end")


def test_the_labs_culling_ends_an_idle_kernels_job(kernel_server, make_lab) -> None:
    lab = make_lab(kernel_server)
    name = lab.install("--resource", "local")
    lab.start("--MappingKernelManager.cull_idle_timeout=4",
              "--MappingKernelManager.cull_interval=1")
    kernel = lab.start_kernel(name)
    job = _evidence(kernel)["job"]
    kernel.ws.close()  # no connection left: an idle kernel may be culled
    wait_for(lambda: lab.api("GET", "api/kernels").json() == [], 60, "the lab to cull it")
    wait_for(lambda: job not in running_jobs(kernel_server), 60, "the culled kernel's job")
    culled = [ln for ln in lab.log_path.read_text().splitlines() if "inactivity" in ln]
    assert culled and kernel.id in culled[0], culled
