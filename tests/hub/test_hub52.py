"""EverestSpawner on JupyterHub 5.2 (the Littlest JupyterHub's pin), with a focused subset
of the spawner tests: spawn through REST with progress, the proxied server and a kernel,
stop; SIGKILL with one server running and one pending; stop while pending. Its runners
tunnel with asyncssh (the other modules' with OpenSSH's ssh).

The 5.2 hub runs from a small environment made once and kept in pytest's cache folder: a
venv holding only ``jupyterhub==5.2.1`` (installed with ``--no-deps``) that layers on the
test environment's site directories for everything else, so it takes seconds and the
suite runs the same code against both hubs without a second full environment. Its local
server runs with that interpreter too, so the sessions' ``jupyterhub-singleuser`` is 5.2.1.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from everest_app.states import QUEUED_STATES
from tests.fixtures.task_accounts import ensure_passable
from tests.hub.helpers import HubStack, hub_jobs, wait_job_state
from tests.session.helpers import run_in_kernel, wait_for

VERSION = "5.2.1"


def hub52_python(folder: Path) -> str:
    """The interpreter of the JupyterHub 5.2 environment in ``folder`` (made if missing or
    made for another test environment)."""
    stamp = {"jupyterhub": VERSION, "parents": site.getsitepackages(),
             "python": sys.version}
    python = folder / "bin" / "python"
    marker = folder / "everest-jupyter-stamp.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return str(python)
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    own = subprocess.run([str(python), "-c", "import sysconfig; "
                          "print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    # after its own site-packages: the test environment's (their .pth files included)
    Path(own, "_everest_jupyter_parent.pth").write_text("".join(
        f"import site; site.addsitedir({p!r})\n" for p in stamp["parents"]))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--ignore-installed", "--prefix", str(folder), f"jupyterhub=={VERSION}"],
                   check=True)
    got = subprocess.run([str(python), "-c", "import jupyterhub; print(jupyterhub.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert got == VERSION, got
    marker.write_text(json.dumps(stamp))
    return str(python)


@pytest.fixture(scope="module")
def stack(real_components: None,
          request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[HubStack]:
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("jupyterhub-" + VERSION)) if cache is not None else \
        tmp_path_factory.mktemp("jupyterhub-" + VERSION)
    # the runners' tunnel through asyncssh here (OpenSSH's ssh in the other modules), so
    # both carry the forward to the hub's API
    ensure_passable(folder / "venv")  # a root server's tasks run it as another account
    stack = HubStack(tmp_path_factory.mktemp("hub52"), python=hub52_python(folder / "venv"),
                     service_slots=1, server_env={"EVEREST_JUPYTER_TUNNEL": "asyncssh"})
    try:
        yield stack.start()
    finally:
        stack.close()


def test_the_hub_is_5_2(stack: HubStack) -> None:
    assert requests.get(stack.hub.url + "/hub/api/", timeout=10).json()["version"] == VERSION


def test_spawn_use_kill_restart_and_stop_on_jupyterhub_5_2(stack: HubStack) -> None:
    api = stack.api
    assert api.spawn("erin").status_code == 202
    events = list(api.progress("erin"))
    assert events[-1].get("ready")
    assert any(e["message"].startswith("Submitted to Everest as job") for e in events)
    (running,) = hub_jobs(stack.everest, "erin")
    auth = {"Authorization": f"token {stack.hub.driver_token}"}
    status = requests.get(api.proxied("/user/erin/api/status"), headers=auth, timeout=30)
    assert status.status_code == 200
    assert run_in_kernel(api.proxied("/user/erin/"), stack.hub.driver_token,
                         "import jupyterhub; print(jupyterhub.__version__)") == VERSION + "\n"

    # SIGKILL with frank's server pending (queued behind erin's): cancelled after restart
    assert api.spawn("frank").status_code == 202
    (queued,) = wait_for(lambda: hub_jobs(stack.everest, "frank"), 60, "frank's job")
    assert str(queued.state) in {str(s) for s in QUEUED_STATES}
    stack.hub.kill9()
    stack.hub.start()
    wait_job_state(stack.everest, queued.id, {"CANCELLED"})
    assert api.wait_ready("erin")
    assert requests.get(api.proxied("/user/erin/api/status"), headers=auth,
                        timeout=30).status_code == 200
    assert {j.id for j in stack.live_jobs()} == {running.id}

    # stop while pending cancels the job
    assert api.spawn("frank").status_code == 202
    pending = wait_for(lambda: [j for j in hub_jobs(stack.everest, "frank") if not j.is_done],
                       60, "frank's new job")[0]
    api.stop("frank")
    wait_job_state(stack.everest, pending.id, {"CANCELLED"})

    api.stop("erin")
    wait_job_state(stack.everest, running.id, {"CANCELLED"})
    assert not stack.live_jobs()
