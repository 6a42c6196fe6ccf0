"""Make sure the runner has JupyterLab and asyncssh, creating a cached virtualenv if not.

A resource may lack JupyterLab (a bare Windows VM, a cluster node). The runner then creates a
virtual environment in a cache folder keyed by what it must hold, installs JupyterLab,
asyncssh and the session's extra packages there with pip, and runs itself again inside it.
The next session with the same needs reuses it. When the current interpreter already has
JupyterLab and asyncssh and only extra packages are wanted, the environment is created with
``--system-site-packages`` so it stays small.

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
REEXEC_MARK = "EVEREST_JUPYTER_BOOTSTRAPPED"
PYTHON_HINT = "EVEREST_JUPYTER_PYTHON"
LOCK_STALE_SECONDS = 1800


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


def venv_key(base_python: str, requirements: Sequence[str], system_site: bool) -> str:
    """A short stable name for an environment holding ``requirements`` on ``base_python``."""
    spec = json.dumps([os.path.realpath(base_python), sys.version_info[:2],
                       sorted(requirements), system_site])
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:16]


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
        log.warning("pip failed (exit %d): %s", proc.returncode, proc.stderr.strip()[-2000:])
        if attempt < attempts:
            time.sleep(delay)
            delay *= 2
    names = " ".join(requirements)
    raise BootstrapError(f"pip could not install {names}; see the log above")


def ensure_venv(cache_dir: str, requirements: Sequence[str], system_site: bool,
                base_python: str | None = None) -> str:
    """Return the interpreter of a cached environment holding ``requirements``.

    Creates it (``python -m venv`` + pip) when absent or incomplete; concurrent runners on
    one machine wait for each other. Raises :class:`BootstrapError` when creation fails.
    """
    base = base_python or sys.executable
    venv_dir = os.path.join(cache_dir, "venv-" + venv_key(base, requirements, system_site))
    ready = os.path.join(venv_dir, ".everest-jupyter-ready")
    if os.path.isfile(ready):
        return venv_python(venv_dir)
    os.makedirs(cache_dir, exist_ok=True)
    with _DirLock(venv_dir + ".lock"):
        if os.path.isfile(ready):
            return venv_python(venv_dir)
        shutil.rmtree(venv_dir, ignore_errors=True)  # an earlier attempt died half-way
        cmd = [base, "-m", "venv"] + (["--system-site-packages"] if system_site else [])
        log.info("creating the environment %s", venv_dir)
        proc = subprocess.run(cmd + [venv_dir], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BootstrapError(f"python -m venv failed: {proc.stderr.strip()[-2000:]}")
        if requirements:
            _run_pip(venv_python(venv_dir), requirements)
        with open(ready, "w", encoding="utf-8") as handle:
            json.dump({"requirements": list(requirements), "system_site": system_site}, handle)
    return venv_python(venv_dir)


def choose_python(packages: Sequence[str], cache_dir: str,
                  required: Sequence[str] = REQUIRED) -> str | None:
    """Decide which interpreter should run the session.

    Returns ``None`` when this interpreter will do, else the path of one to run again in:
    the interpreter named by ``EVEREST_JUPYTER_PYTHON`` when it has what is required and no
    extra packages are wanted, or a cached environment (created as needed).
    """
    missing = missing_modules(required=required)
    hint = os.environ.get(PYTHON_HINT, "")
    if missing and not packages and hint and os.path.realpath(hint) != os.path.realpath(
            sys.executable) and os.path.isfile(hint) and not missing_modules(hint, required):
        log.info("using %s (from %s), which has JupyterLab", hint, PYTHON_HINT)
        return hint
    if not missing and not packages:
        return None
    base = sys.executable
    if missing and hint and os.path.isfile(hint) and not missing_modules(hint, required):
        base, missing = hint, []
    requirements = list(missing) + list(packages)
    return ensure_venv(cache_dir, requirements, system_site=not missing, base_python=base)


def reexec(python: str, argv: Sequence[str]) -> int:
    """Run this script again under ``python``; marks the environment so it happens once.

    On POSIX the process is replaced (signals reach the new interpreter directly); on
    Windows a child runs and its exit code is returned.
    """
    env = dict(os.environ)
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
