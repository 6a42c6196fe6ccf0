"""``everest-jupyter kernels install/list/remove``: the kernelspec names the ``everest``
provisioner with the settings given; the provisioner's entry point resolves to it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from tests.harness.processes import child_env
from tests.kernels.lab import entry_point_dir


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_install_list_remove(tmp_path: Path) -> None:
    env = child_env(JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_PATH="")
    done = _cli(env, "--json", "--everest", "https://everest.example.org", "kernels",
                "install", "--resource", "hpc", "--packages", "numpy", "scipy",
                "--time-limit", "600", "--relay", "https://relay.example.org")
    assert done.returncode == 0, done.stderr
    name = json.loads(done.stdout)["name"]
    assert name == "everest-hpc"
    spec = json.loads((tmp_path / "data" / "kernels" / name / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "everest",
        "config": {"resource": "hpc", "packages": ["numpy", "scipy"], "time_limit": 600,
                   "relay_url": "https://relay.example.org",
                   "everest_url": "https://everest.example.org"}}
    assert spec["interrupt_mode"] == "signal"

    (tmp_path / "data" / "kernels" / "plain").mkdir()
    (tmp_path / "data" / "kernels" / "plain" / "kernel.json").write_text(json.dumps(
        {"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "plain", "language": "python"}))
    listed = json.loads(_cli(env, "--json", "kernels", "list").stdout)
    assert [k["name"] for k in listed] == [name]  # only Everest kernels
    assert listed[0]["config"]["resource"] == "hpc"

    refused = _cli(env, "kernels", "remove", "plain")
    assert refused.returncode == 5 and "not an Everest kernel" in refused.stderr
    assert _cli(env, "kernels", "remove", name).returncode == 0
    assert json.loads(_cli(env, "--json", "kernels", "list").stdout) == []
    assert (tmp_path / "data" / "kernels" / "plain").is_dir()


def test_a_bad_name_or_setting_is_refused(tmp_path: Path) -> None:
    env = child_env(JUPYTER_DATA_DIR=str(tmp_path / "data"))
    done = _cli(env, "kernels", "install", "--name", "../escape")
    assert done.returncode == 1 and "kernel name" in done.stderr
    assert not (tmp_path / "escape").exists()
    done = _cli(env, "kernels", "install", "--lease", "soon")
    assert done.returncode == 2


def test_the_entry_point_names_the_provisioner(tmp_path: Path, monkeypatch) -> None:
    from jupyter_client.provisioning.factory import KernelProvisionerFactory

    from launcher.kernels.provisioner import EverestProvisioner

    monkeypatch.syspath_prepend(str(entry_point_dir(tmp_path)))
    factory = KernelProvisionerFactory()
    assert factory._get_provisioner("everest").load() is EverestProvisioner
    assert KernelSpecManager  # the kernelspec side is jupyter_client's own
