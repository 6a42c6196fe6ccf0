"""A server that keeps its kernels across a restart re-attaches to an Everest kernel through
``get_provisioner_info``/``load_provisioner_info``: the job goes on, the same kernel (its
variables) answers; a kernel whose job ended is not re-attached and reads as dead."""

from __future__ import annotations

import json

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from tests.fixtures.loops import run_coroutine
from tests.kernels.conftest import running_jobs
from tests.kernels.lab import entry_point_dir
from tests.session.helpers import wait_for


async def _run(kc, code: str) -> str:
    reply = await kc.execute_interactive(code, timeout=60, output_hook=_collect(out := []))
    assert reply["content"]["status"] == "ok", reply
    return "".join(out)


def _collect(out: list[str]):
    def hook(msg):
        if msg["header"]["msg_type"] == "stream":
            out.append(msg["content"]["text"])
    return hook


async def _second_manager(info: dict) -> AsyncKernelManager:
    """What a restarted server does with a kernel it kept: a manager whose provisioner
    loads the saved info."""
    km = AsyncKernelManager(kernel_name="ev")
    km.kernel_id = info["kernel_id"]
    km.provisioner = KernelProvisionerFactory.instance().create_provisioner_instance(
        info["kernel_id"], km.kernel_spec, parent=km)
    await km.provisioner.load_provisioner_info(info)
    if km.provisioner.has_process:
        km.load_connection_info(km.provisioner.connection_info)
    return km


def test_a_restarted_server_reattaches_to_its_kernel(kernel_server, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(entry_point_dir(tmp_path / "eps")))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("EVEREST_TOKEN", kernel_server.token_for("alice"))
    from launcher.kernels import spec

    spec.install({"resource": "local", "everest_url": kernel_server.url,
                  "relay_url": kernel_server.relay_url}, name="ev")

    async def scenario() -> tuple[str, str, str]:
        first = AsyncKernelManager(kernel_name="ev")
        await first.start_kernel()
        kc = first.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        await _run(kc, "remembered = 'still here'")
        info = json.loads(json.dumps(await first.provisioner.get_provisioner_info(),
                                     default=lambda b: b.decode()))
        job = info["job_id"]
        # the first server goes away without shutting its kernel down
        kc.stop_channels()
        await first.provisioner.bridge.close()

        second = await _second_manager(info)
        kc2 = second.client()
        kc2.start_channels()
        await kc2.wait_for_ready(timeout=60)
        seen = await _run(kc2, "print(remembered)")
        kc2.stop_channels()
        await second.shutdown_kernel()

        third = await _second_manager(info)  # its job has ended by now
        return seen, job, str(third.provisioner.has_process)

    seen, job, third_alive = run_coroutine(scenario())  # Playwright may hold this thread's loop
    assert seen == "still here\n"
    wait_for(lambda: job not in running_jobs(kernel_server), 60, "the job to end")
    assert third_alive == "False"
