"""Fixtures of the spawner tests: one real hub stack per module (see helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.helpers import HubStack


@pytest.fixture(scope="module")
def stack(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStack]:
    """A local server, a relay and a jupyterhub with EverestSpawner, for this module."""
    stack = HubStack(tmp_path_factory.mktemp("hub-stack"))
    try:
        yield stack.start()
    except BaseException:
        if stack.hub:
            print(stack.hub.log())
        raise
    finally:
        stack.close()
