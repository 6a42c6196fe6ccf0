"""The server object in-process: server.json, the data-dir lock."""

from __future__ import annotations

import asyncio

import pytest
import requests

from everest_local.app import LocalServer, ServerBusyError, read_server_json
from everest_local.settings import ServerSettings
from tests.fixtures.loops import run_coroutine


def test_in_process_server_writes_and_removes_server_json(tmp_path):
    settings = ServerSettings(data_dir=tmp_path / "d", port=0)

    async def scenario():
        server = LocalServer(settings)
        await server.start()
        info = read_server_json(settings.data_dir)
        assert info["url"] == server.url and isinstance(info["pid"], int)
        with pytest.raises(ServerBusyError, match="another local server"):
            await LocalServer(settings).start()
        loop = asyncio.get_running_loop()
        stats = await loop.run_in_executor(
            None, lambda: requests.get(server.url + "/_local/stats", timeout=5).json())
        assert "requests" in stats
        await server.stop()
        assert read_server_json(settings.data_dir) is None

    run_coroutine(scenario())


def test_an_internal_error_fails_the_job_and_frees_its_slot(tmp_path, monkeypatch):
    from everest_local import outcome

    def broken(*args, **kwargs):
        raise RuntimeError("collector exploded")

    monkeypatch.setattr(outcome, "collect", broken)
    settings = ServerSettings(data_dir=tmp_path / "d", port=0, slots=1)

    async def scenario():
        server = LocalServer(settings)
        await server.start()
        try:
            first = await server.core.submit("alice", "hostname", {"inputs": {}})
            second = await server.core.submit("alice", "sleep", {"inputs": {"duration": 0}})
            for _ in range(400):
                jobs = [server.core.store.job(j["id"]) for j in (first, second)]
                if all(j.state in ("DONE", "FAILED") for j in jobs):
                    break
                await asyncio.sleep(0.025)
            assert jobs[0].state == "FAILED" and "collector exploded" in jobs[0].info
            assert jobs[1].state == "FAILED"  # the slot was released: the next job ran
            assert not any(server.core.executor.busy.values())
        finally:
            await server.stop()

    run_coroutine(scenario())
