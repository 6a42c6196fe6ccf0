"""Fixtures of the session tests: a relay process (against the shared local server, whose
tokens it checks) and API clients of its users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.local_server import ServerProcess
from tests.session.helpers import Api, FakeRunner, RelayProcess


@pytest.fixture(scope="module")
def relay(local_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RelayProcess]:
    """``python -m launcher.relay`` for this module, checking tokens with the local server."""
    proc = RelayProcess(tmp_path_factory.mktemp("relay") / "state", local_server.url)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def alice(relay: RelayProcess, local_server: ServerProcess) -> Api:
    return Api(relay.url, local_server.token_for("alice"))


@pytest.fixture
def bob(relay: RelayProcess, local_server: ServerProcess) -> Api:
    return Api(relay.url, local_server.token_for("bob"))


@pytest.fixture(scope="module")
def ssh_peer() -> Iterator[FakeRunner]:
    peer = FakeRunner()
    try:
        yield peer
    finally:
        peer.stop()
