"""Make sure the runner has JupyterLab and asyncssh, creating a cached virtualenv if not.

A resource may lack JupyterLab (a bare Windows VM, a cluster node). The runner then creates a
virtual environment in a cache folder keyed by what it must hold, installs JupyterLab,
asyncssh and the session's extra packages there with pip, and runs itself again inside it.
The next session with the same needs reuses it.

The new environment *layers* on the one the runner was started from, whatever that is (a
venv, conda, the system Python): a ``.pth`` file in its site-packages adds the parent's
site directories after its own, so its own packages win and everything the parent had stays
importable. (``--system-site-packages`` would not do: made from a venv's interpreter it
exposes the *base* interpreter's packages, not the venv's.) Jupyter's data and config
folders of the parent are passed on through ``JUPYTER_PATH``/``JUPYTER_CONFIG_PATH`` so
JupyterLab's assets and server extensions installed there are found too.

Python >= 3.8, standard library only (this module runs before asyncssh may exist).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

log = logging.getLogger("session_runner.bootstrap")

REQUIRED = ("jupyterlab", "asyncssh")
HUB_REQUIRED = REQUIRED + ("jupyterhub",)
"""What hub mode needs in addition: ``jupyterhub`` brings ``jupyterhub-singleuser``."""
KERNEL_REQUIRED = ("ipykernel", "asyncssh")
"""What kernel mode needs: a kernel, not JupyterLab (the lab is elsewhere)."""
REEXEC_MARK = "EVEREST_JUPYTER_BOOTSTRAPPED"
PYTHON_HINT = "EVEREST_JUPYTER_PYTHON"
LOCK_STALE_SECONDS = 1800
LAYER_PTH = "everest-jupyter-parent.pth"

# Run by the parent interpreter: its prefix and the folders its packages come from, in order
_DESCRIBE = """
import json, os, site, sys, sysconfig
dirs = [p for p in sys.path
        if os.path.basename(os.path.normpath(p)) in ("site-packages", "dist-packages")]
dirs += [sysconfig.get_paths()[k] for k in ("purelib", "platlib")]
dirs += getattr(site, "getsitepackages", lambda: [])()
if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
print(json.dumps({"prefix": sys.prefix, "version": list(sys.version_info[:2]),
                  "site_dirs": list(dict.fromkeys(dirs))}))
"""


class BootstrapError(RuntimeError):
    """The environment could not be prepared; the message says what failed."""


def missing_modules(python: str | None = None,
                    required: Sequence[str] = REQUIRED) -> list[str]:
    """Names in ``required`` that ``python`` (default: this interpreter) cannot import."""
    if python is None:
        return [name for name in required if importlib.util.find_spec(name) is None]
    code = ("import importlib.util,sys;"
            "print(','.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))")
    try:
        out = subprocess.run([python, "-c", code] + list(required), capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return list(required)
    return [name for name in out.split(",") if name]


def venv_python(venv_dir: str) -> str:
    """The interpreter inside a virtual environment, on Windows or elsewhere."""
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def describe(python: str) -> dict:
    """``python``'s prefix, version and site directories (existing ones, in import order).

    Raises :class:`BootstrapError` when the interpreter cannot be run.
    """
    try:
        proc = subprocess.run([python, "-c", _DESCRIBE], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BootstrapError(f"could not run {python}: {exc}") from exc
    if proc.returncode != 0:
        raise BootstrapError(f"could not inspect {python}: {proc.stderr.strip()[-2000:]}")
    info = json.loads(proc.stdout)
    info["site_dirs"] = [d for d in info["site_dirs"] if os.path.isdir(d)]
    return info


def venv_key(parent: dict, requirements: Sequence[str]) -> str:
    """A short stable name for an environment holding ``requirements`` on ``parent`` (an
    answer of :func:`describe`): another parent environment gets another cached venv."""
    spec = json.dumps([parent["prefix"], parent["version"], parent["site_dirs"],
                       sorted(requirements)])
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:16]


def jupyter_env(parent: dict, env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the parent's Jupyter data and config folders after any already set, so
    a layered environment finds the JupyterLab assets, kernels and server extensions that
    were installed with the parent's packages."""
    env = dict(env)
    for var, sub in (("JUPYTER_PATH", ("share", "jupyter")),
                     ("JUPYTER_CONFIG_PATH", ("etc", "jupyter"))):
        folder = os.path.join(parent["prefix"], *sub)
        parts = [p for p in env.get(var, "").split(os.pathsep) if p]
        if os.path.isdir(folder) and folder not in parts:
            env[var] = os.pathsep.join(parts + [folder])
    lab = os.path.join(parent["prefix"], "share", "jupyter", "lab")
    if "JUPYTERLAB_DIR" not in env and os.path.isdir(os.path.join(lab, "static")):
        env["JUPYTERLAB_DIR"] = lab  # JupyterLab looks for its assets under sys.prefix only
    return env


def _site_packages(python: str) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise BootstrapError(f"could not inspect {python}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


def layer(venv_dir: str, parent: dict) -> None:
    """Make the parent's packages importable in ``venv_dir`` after its own.

    ``site.addsitedir`` (rather than bare folder lines) also runs the ``.pth`` files found
    there, as the parent itself does (editable installs, namespace packages).
    """
    site_packages = _site_packages(venv_python(venv_dir))
    line = "import site; list(map(site.addsitedir, {}))\n".format(
        json.dumps(parent["site_dirs"]))
    with open(os.path.join(site_packages, LAYER_PTH), "w", encoding="utf-8") as handle:
        handle.write(line)


class _DirLock:
    """A lock between runners on one machine: ``mkdir`` is atomic everywhere."""

    def __init__(self, path: str, timeout: float = 1800.0):
        self.path = path
        self.timeout = timeout

    def __enter__(self) -> _DirLock:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                os.mkdir(self.path)
                return self
            except FileExistsError:
                self._break_if_stale()
            if time.monotonic() > deadline:
                raise BootstrapError(f"another session holds {self.path} for too long")
            time.sleep(1.0)

    def _break_if_stale(self) -> None:
        try:
            if time.time() - os.path.getmtime(self.path) > LOCK_STALE_SECONDS:
                os.rmdir(self.path)
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def _tail(text: str, limit: int = 2000) -> str:
    return text.strip()[-limit:]


def _run_pip(python: str, requirements: Sequence[str], attempts: int = 3) -> None:
    """``pip install`` with retries: package indexes fail now and then."""
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    cmd += list(requirements)
    delay = 2.0
    for attempt in range(1, attempts + 1):
        log.info("pip install %s (attempt %d)", " ".join(requirements), attempt)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            return
        said = _tail(proc.stderr or proc.stdout)
        log.warning("pip failed (exit %d): %s", proc.returncode, said)
        if attempt < attempts:
            time.sleep(delay)
            delay *= 2
    raise BootstrapError("pip could not install {} ({} attempts); pip said: {}".format(
        " ".join(requirements), attempts, said[-600:]))


def ensure_venv(cache_dir: str, requirements: Sequence[str],
                base_python: str | None = None) -> tuple[str, dict]:
    """Return the interpreter of a cached environment holding ``requirements``, layered on
    ``base_python``'s environment (default: this interpreter's), and that parent's
    :func:`describe` answer.

    Creates it (``python -m venv`` + pip) when absent or incomplete; concurrent runners on
    one machine wait for each other. Raises :class:`BootstrapError` when creation fails.
    """
    base = base_python or sys.executable
    parent = describe(base)
    venv_dir = os.path.join(cache_dir, "venv-" + venv_key(parent, requirements))
    ready = os.path.join(venv_dir, ".everest-jupyter-ready")
    if os.path.isfile(ready):
        return venv_python(venv_dir), parent
    os.makedirs(cache_dir, exist_ok=True)
    with _DirLock(venv_dir + ".lock"):
        if os.path.isfile(ready):
            return venv_python(venv_dir), parent
        shutil.rmtree(venv_dir, ignore_errors=True)  # an earlier attempt died half-way
        log.info("creating the environment %s on %s", venv_dir, parent["prefix"])
        proc = subprocess.run([base, "-m", "venv", venv_dir], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BootstrapError("python -m venv failed: " + _tail(proc.stderr or proc.stdout))
        layer(venv_dir, parent)
        if requirements:
            _run_pip(venv_python(venv_dir), requirements)
        with open(ready, "w", encoding="utf-8") as handle:
            json.dump({"requirements": list(requirements), "parent": parent}, handle)
    return venv_python(venv_dir), parent


def choose_python(packages: Sequence[str], cache_dir: str,
                  required: Sequence[str] = REQUIRED) -> tuple[str, dict] | None:
    """Decide which interpreter should run the session.

    Returns ``None`` when this interpreter will do, else the path of one to run again in and
    the environment variables to run it with: the interpreter named by
    ``EVEREST_JUPYTER_PYTHON`` when it has what is required and no extra packages are
    wanted, or a cached environment layered on this one (created as needed).
    """
    missing = missing_modules(required=required)
    hint = os.environ.get(PYTHON_HINT, "")
    usable_hint = bool(hint) and os.path.isfile(hint) and os.path.realpath(hint) != \
        os.path.realpath(sys.executable) and not missing_modules(hint, required)
    if missing and not packages and usable_hint:
        log.info("using %s (from %s), which has JupyterLab", hint, PYTHON_HINT)
        return hint, dict(os.environ)
    if not missing and not packages:
        return None
    base = sys.executable
    if missing and usable_hint:
        base, missing = hint, []
    python, parent = ensure_venv(cache_dir, list(missing) + list(packages), base_python=base)
    return python, jupyter_env(parent, dict(os.environ))


def reexec(python: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run this script again under ``python`` (with ``env``, default this environment);
    marks the environment so it happens once.

    On POSIX the process is replaced (signals reach the new interpreter directly); on
    Windows a child runs and its exit code is returned.
    """
    env = dict(os.environ if env is None else env)
    env[REEXEC_MARK] = "1"
    cmd = [python, os.path.abspath(sys.argv[0])] + list(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "nt":
        os.execve(python, cmd, env)
    # Windows: the child gets the console's CTRL_BREAK itself and stops cleanly; this
    # parent must outlive it, or the agent would see the task end while it still runs
    for name in ("SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    return subprocess.call(cmd, env=env)


def already_bootstrapped() -> bool:
    """True inside the interpreter a bootstrap re-ran us in."""
    return os.environ.get(REEXEC_MARK) == "1"
