"""Kernelspecs that name the ``everest`` provisioner: install, list, remove.

A kernelspec is a folder ``kernels/<name>/`` with ``kernel.json`` in one of Jupyter's data
folders (the user's by default, ``--prefix``'s or ``--sys-prefix``'s otherwise). Ours runs
``python -m ipykernel_launcher`` — on the resource, by the runner; the ``argv`` is there for
Jupyter's tools — and its metadata carries the provisioner's settings.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_data_dir

PROVISIONER = "everest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def kernels_dir(prefix: str | None = None) -> Path:
    """Where kernelspecs go: ``<prefix>/share/jupyter/kernels``, else the user's."""
    if prefix:
        return Path(prefix) / "share" / "jupyter" / "kernels"
    return Path(jupyter_data_dir()) / "kernels"


def default_name(resource: str | None) -> str:
    """``everest-<resource>`` made a valid kernel name."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "-", resource or "any").strip("-.") or "any"
    return f"everest-{tail}"[:64].lower()


def install(config: dict[str, Any], *, name: str | None = None,
            display_name: str | None = None, prefix: str | None = None) -> Path:
    """Write a kernelspec for the provisioner with ``config`` (settings of
    :class:`~launcher.kernels.settings.KernelSettings`, ``None`` values left out); returns
    its folder. Raises ``ValueError`` for a bad name or setting."""
    from launcher.kernels.settings import KernelSettings

    unknown = set(config) - set(KernelSettings.class_trait_names(config=True))
    if unknown:
        raise ValueError(f"unknown kernel settings: {', '.join(sorted(unknown))}")
    name = name or default_name(config.get("resource"))
    if not _NAME.match(name):
        raise ValueError(f"kernel name {name!r}: letters, digits, '.', '_' and '-' only "
                         "(64 at most), starting with a letter or digit")
    settings = {k: v for k, v in config.items() if v not in (None, [], "")}
    where = settings.get("resource") or "Everest"
    spec = {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name or f"Python 3 on {where} (Everest)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": PROVISIONER,
                                            "config": settings},
                     "debugger": False},
    }
    folder = kernels_dir(prefix) / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "kernel.json.tmp"
    tmp.write_text(json.dumps(spec, indent=2) + "\n")
    tmp.replace(folder / "kernel.json")
    _copy_logos(folder)
    return folder


def _copy_logos(folder: Path) -> None:
    """The Python logos of the local ipykernel, when it has them (the launcher's icons)."""
    try:
        import ipykernel

        resources = Path(ipykernel.__file__).parent / "resources"
    except ImportError:
        return
    for logo in resources.glob("logo-*.png") if resources.is_dir() else []:
        shutil.copyfile(logo, folder / logo.name)


def listing() -> list[dict[str, Any]]:
    """Every installed kernelspec that uses the provisioner: ``name``, ``display_name``,
    ``resource_dir`` and ``config`` (read from the files: jupyter_client itself hides a
    kernelspec whose provisioner is not installed, which is worth seeing here)."""
    found = []
    for name, folder in sorted(KernelSpecManager().find_kernel_specs().items()):
        try:
            spec = json.loads((Path(folder) / "kernel.json").read_text())
        except (OSError, ValueError):
            continue
        prov = (spec.get("metadata") or {}).get("kernel_provisioner") or {}
        if prov.get("provisioner_name") == PROVISIONER:
            found.append({"name": name, "display_name": spec.get("display_name"),
                          "resource_dir": folder, "config": prov.get("config") or {}})
    return found


def remove(name: str) -> Path:
    """Remove the provisioner's kernelspec ``name``; returns the folder removed. Raises
    ``KeyError`` when no such kernelspec uses the provisioner."""
    for entry in listing():
        if entry["name"] == name:
            folder = Path(entry["resource_dir"])
            shutil.rmtree(folder)
            return folder
    if name not in KernelSpecManager().find_kernel_specs():
        raise KeyError(f"no kernelspec {name!r}")
    raise KeyError(f"kernelspec {name!r} is not an Everest kernel; not removed")
