"""Both examples, end to end, inside a session launched with ``everest-jupyter launch``.

The launch uses the embedded default (a local server with its relay, under this test's
HOME). The notebooks and example modules are uploaded into the session through Jupyter's
contents API and run in a kernel of the session: ``orchestrator.connect()`` there finds
``EVEREST_URL`` and ``EVEREST_TASK_TOKEN`` in the session job's environment, and submits
the example jobs as jobs nested in the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .remote_notebook import RemoteJupyter
from .test_examples import SMALL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


@pytest.fixture
def session(real_components: None, home):
    launched = cli("--json", "launch", "--detach", "--timeout", "180", "--time-limit", "900")
    try:
        assert launched.returncode == 0, launched.stderr
        info = json.loads(launched.stdout)
        yield RemoteJupyter(info["url"])
    finally:
        if launched.returncode == 0:
            cli("stop", json.loads(launched.stdout)["session_id"], timeout=120)
        cli("server", "stop", timeout=120)


def test_both_examples_run_inside_a_launched_session(session):
    for module in EXAMPLES.glob("*.py"):
        session.upload(module, f"examples/{module.name}")
    for name in SMALL:
        session.upload(EXAMPLES / name, f"examples/{name}")

    env = session.run_notebook("examples/lorenz_sweep.ipynb", "import os\n"
                               "print(os.environ['EVEREST_URL'], 'EVEREST_TASK_TOKEN' in "
                               "os.environ)\n" + SMALL["lorenz_sweep.ipynb"])
    assert "True" in env[0]
    lorenz = "\n".join(env)
    assert "L1 = 0.9" in lorenz and "6 results, at most 2 jobs in flight" in lorenz

    words = "\n".join(session.run_notebook("examples/wordcount.ipynb",
                                           SMALL["wordcount.ipynb"]))
    assert "OK: " in words
