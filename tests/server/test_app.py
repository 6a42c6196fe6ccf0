"""The server object in-process: web UI mounting, server.json, the data-dir lock."""

from __future__ import annotations

import asyncio

import pytest
import requests

from everest_local import app as app_module
from everest_local.app import LocalServer, ServerBusyError, make_app, read_server_json
from everest_local.catalog import Catalog
from everest_local.core import Core
from everest_local.settings import ServerSettings


def test_missing_web_package_is_skipped_but_a_broken_one_raises(tmp_path, monkeypatch):
    core = Core(ServerSettings(data_dir=tmp_path), Catalog.with_builtins())
    monkeypatch.setattr(app_module, "WEB_MODULE", "tests.server.no_such_web_package")
    assert make_app(core).default_router is not None
    monkeypatch.setattr(app_module, "WEB_MODULE", "tests.server.broken_web")
    with pytest.raises(ImportError, match="broken on purpose"):
        make_app(core)


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

    asyncio.run(scenario())
