"""JupyterHub of the everest-jupyter image: users sign in with their Everest accounts and
each server runs as an Everest job, reached through the relay. Settings come from the
environment (compose.yaml sets them); secrets too (JUPYTERHUB_CRYPT_KEY), never the image.
A file /srv/jupyterhub/jupyterhub_config_local.py (in the hub's volume), if present, is
loaded last for anything else.
"""

import json
import os
from pathlib import Path

c = get_config()  # noqa: F821
env = os.environ
data = Path(env.get("HUB_DATA", "/srv/jupyterhub"))

c.JupyterHub.bind_url = f"http://{env.get('HUB_IP', '0.0.0.0')}:{env.get('HUB_PORT', '8000')}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env.get('HUB_API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data / "cookie_secret")
c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = False  # servers are Everest jobs: they outlive hub restarts

c.JupyterHub.authenticator_class = "everest"
c.EverestAuthenticator.everest_url = env["EVEREST_URL"]
if env.get("HUB_ADMINS"):
    c.Authenticator.admin_users = set(env["HUB_ADMINS"].split(","))

c.JupyterHub.spawner_class = "everest"
c.EverestSpawner.everest_url = env["EVEREST_URL"]
c.EverestSpawner.relay_url = env["RELAY_URL"]
c.EverestSpawner.hub_id = env.get("HUB_ID", "docker")
if env.get("EVEREST_APP"):
    c.EverestSpawner.app = env["EVEREST_APP"]
if env.get("EVEREST_PROFILES"):
    c.EverestSpawner.profiles = json.loads(env["EVEREST_PROFILES"])

local = data / "jupyterhub_config_local.py"
if local.exists():
    load_subconfig(str(local))  # noqa: F821
