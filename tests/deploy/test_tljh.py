"""The Littlest JupyterHub plugin (deploy/tljh): it installs with its ``tljh`` entry point,
its hooks fit TLJH's hook specifications, the ``everest:`` section of config.yaml is
checked, and the config its hooks give — loaded through pluggy the way TLJH's
jupyterhub_config.py does — starts a real jupyterhub that spawns a server as an Everest job.
(TLJH itself is not on PyPI and needs a whole machine with systemd; TLJH's own proxy,
traefik, is replaced by configurable-http-proxy here.)"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest
import requests
import yaml

from everest_app.client import EverestClient
from everest_local.auth import add_user
from tests.harness.processes import free_port
from tests.harness.relay import RelayProcess
from tests.harness.server import ServerProcess, password_for
from tests.hub.helpers import HubApi, HubProcess, wait_job_state

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "deploy" / "tljh"
hookspec = pluggy.HookspecMarker("tljh")


class TljhSpecs:
    """TLJH's hook specifications (the-littlest-jupyterhub, tljh/hooks.py), as signatures."""

    @hookspec
    def tljh_extra_user_conda_packages(self): ...
    @hookspec
    def tljh_extra_user_conda_channels(self): ...
    @hookspec
    def tljh_extra_user_pip_packages(self): ...
    @hookspec
    def tljh_extra_hub_pip_packages(self): ...
    @hookspec
    def tljh_extra_apt_packages(self): ...
    @hookspec
    def tljh_custom_jupyterhub_config(self, c): ...
    @hookspec
    def tljh_config_post_install(self, config): ...
    @hookspec
    def tljh_post_install(self): ...
    @hookspec
    def tljh_new_user_create(self, username): ...


@pytest.fixture(scope="module")
def plugin_site(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The plugin package pip-installed into a folder of its own, put on ``sys.path``."""
    site = tmp_path_factory.mktemp("tljh-site")
    source = shutil.copytree(PLUGIN, tmp_path_factory.mktemp("tljh-src") / "tljh")  # pip
    # builds in the folder it is given: not in the checkout
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(site))
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("tljh_everest", None)


def plugin_manager() -> pluggy.PluginManager:
    """What TLJH does (tljh/utils.py get_plugin_manager): the specs, then every plugin
    installed under the ``tljh`` entry point."""
    pm = pluggy.PluginManager("tljh")
    pm.add_hookspecs(TljhSpecs)
    pm.load_setuptools_entrypoints("tljh")
    return pm


def write_tljh_config(prefix: Path, section: dict) -> None:
    (prefix / "config").mkdir(parents=True, exist_ok=True)
    (prefix / "config" / "config.yaml").write_text(yaml.safe_dump({
        "users": {"admin": ["admin"]}, "everest": section}))


def test_the_hooks_install_and_fit_tljh(plugin_site: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pm = plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()] == ["everest"]
    pm.check_pending()  # every hook it implements is one TLJH specifies, same arguments
    monkeypatch.setenv("TLJH_INSTALL_PREFIX", str(tmp_path))
    assert pm.hook.tljh_extra_hub_pip_packages() == [["everest-jupyter"]]
    write_tljh_config(tmp_path, {"url": "https://e", "relay": "https://r",
                                 "package": "/srv/everest-jupyter"})
    assert pm.hook.tljh_extra_hub_pip_packages() == [["/srv/everest-jupyter"]]
    assert pm.hook.tljh_extra_user_pip_packages() == [["/srv/everest-jupyter"]]
    config: dict = {"everest": {"app": "alice/jupyter-session"}}
    pm.hook.tljh_config_post_install(config=config)
    assert config["everest"] == {"app": "alice/jupyter-session", "authenticator": True,
                                 "package": "everest-jupyter"}


@pytest.mark.parametrize(("section", "message"), [
    ({"relay": "https://r"}, "everest.url is not set"),
    ({"url": "https://e", "relay": "https://r", "profile": []}, "unknown everest.profile"),
    ({"url": "https://e", "relay": "https://r", "time_limit": "2h"},
     "everest.time_limit (seconds a server may run) must be a int"),
    ({"url": "https://e", "relay": "https://r", "authenticator": "yes"},
     "everest.authenticator"),
])
def test_a_wrong_section_stops_the_hub_with_a_message(plugin_site: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      section: dict, message: str) -> None:
    from traitlets.config import Config

    monkeypatch.setenv("TLJH_INSTALL_PREFIX", str(tmp_path))
    write_tljh_config(tmp_path, section)
    errors = importlib.import_module("tljh_everest").EverestConfigError
    with pytest.raises(errors, match=message.replace("(", r"\(").replace(")", r"\)")):
        plugin_manager().hook.tljh_custom_jupyterhub_config(c=Config())


# After the hub's own settings (tests.hub.helpers.HUB_BASE_CONFIG), as TLJH's
# jupyterhub_config.py does after applying tljh-config: the plugins' hook.
_TLJH_CONFIG = """
import sys
sys.path.insert(0, s["plugin_site"])
c.EverestSpawner.status_interval = 1.0

sys.path.insert(0, s["tests"])
from tests.deploy.test_tljh import plugin_manager
plugin_manager().hook.tljh_custom_jupyterhub_config(c=c)
"""


class TljhHub(HubProcess):
    """``jupyterhub`` configured by the TLJH plugin's hook from ``<prefix>/config``."""

    def __init__(self, folder: Path, prefix: Path, plugin_site: Path, hub_port: int):
        super().__init__(folder, "", "", "", hub_port)
        self.write_config(_TLJH_CONFIG, plugin_site=str(plugin_site), tests=str(REPO))
        self.env["TLJH_INSTALL_PREFIX"] = str(prefix)


def test_the_hooks_config_spawns_a_server_as_an_everest_job(plugin_site: Path,
                                                            tmp_path: Path) -> None:
    service = "tljhservice"
    server = ServerProcess(tmp_path / "everest")
    add_user(server.data_dir, service, password_for(service))
    hub_port = free_port()
    relay = hub = None
    try:
        server.start()
        relay = RelayProcess(tmp_path / "relay", server.url, "--hub-api",
                             f"127.0.0.1:{hub_port}", "--hub-service-account", service).start()
        token = EverestClient.login(server.url, service, password_for(service))
        write_tljh_config(tmp_path / "tljh", {
            "url": server.url, "relay": relay.url, "token": token, "hub_id": "tljhtest",
            "profiles": [{"display_name": "This machine, 10 minutes", "slug": "short",
                          "time_limit": 600, "default": True}]})
        hub = TljhHub(tmp_path / "hub", tmp_path / "tljh", plugin_site, hub_port).start()
        api = HubApi(hub)
        assert api.spawn("dora").status_code in (201, 202)
        api.wait_ready("dora")
        everest = EverestClient(server.url, token)
        (job,) = [j for j in everest.jobs() if j.name == "jupyterhub:tljhtest/dora/"]
        assert str(job.state) == "RUNNING" and job.inputs["mode"] == "hub"
        status = requests.get(api.proxied("/user/dora/api/status"), timeout=30,
                              headers={"Authorization": f"token {hub.driver_token}"})
        assert status.status_code == 200, status.text
        api.stop("dora")
        wait_job_state(everest, job.id, {"CANCELLED"})
    except BaseException:
        if hub:
            print(hub.log())
        raise
    finally:
        if hub:
            hub.stop()
        if relay:
            relay.stop()
        server.close()
