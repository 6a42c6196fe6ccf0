"""Fixtures of the kernel tests: a local server hosting the relay, and a JupyterLab whose
Everest kernelspecs point at it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.waiting import wait_for
from tests.harness.server import ServerProcess, start_server
from tests.kernels.lab import Lab


def serve_with_relay(data_dir: Path, extra_args: list[str] = (), **opts) -> ServerProcess:
    """A local server with the relay plugin (as ``everest-jupyter server`` runs it)."""
    server = start_server(data_dir, extra_args=["--plugin", "launcher.relay.plugin",
                                                *extra_args], **opts)
    relay_json = Path(data_dir) / "relay.json"
    wait_for(relay_json.exists, 60, "the relay to start")
    server.relay_url = json.loads(relay_json.read_text())["url"]
    return server


@pytest.fixture(scope="module")
def kernel_server(real_components: None,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = serve_with_relay(tmp_path_factory.mktemp("kernels") / "data")
    yield server
    server.close()


@pytest.fixture
def make_lab(real_components: None, tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """``make_lab(server, name="lab")``: a JupyterLab signed in to ``server`` as alice (her
    token in ``EVEREST_TOKEN``), not started yet; stopped at the end."""
    labs: list[Lab] = []

    def make(server: ServerProcess, name: str = "lab", **env: str) -> Lab:
        lab = Lab(tmp_path / name, {"EVEREST_TOKEN": server.token_for("alice"),
                                    "EVEREST_URL": server.url,
                                    "EVEREST_RELAY_URL": getattr(server, "relay_url", ""),
                                    **env})
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.stop()


def running_jobs(server: ServerProcess) -> list[str]:
    """Alice's jobs that have not ended."""
    return [j.id for j in server.client().jobs() if not j.is_done]
