"""The Binder example: ``binder/start`` brings up the embedded server, the kernelspec
``binder/postBuild`` installs runs ``examples/everest_kernel.ipynb`` as a job of that
server's local resource (the notebook executed by nbclient, as JupyterLab's kernel manager
would run it)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from tests.deploy.test_binder import SHOW_ENV, START, fresh_env  # noqa: F401 - fixture
from tests.harness.processes import REPO, cli_command
from tests.kernels.lab import entry_point_dir

POST_BUILD = REPO / "binder" / "postBuild"
NOTEBOOK = REPO / "examples" / "everest_kernel.ipynb"
EXECUTE = ("import sys, nbformat, nbclient\n"
           "nb = nbformat.read(sys.argv[1], as_version=4)\n"
           "nbclient.NotebookClient(nb, timeout=300,"
           " kernel_name=nb.metadata.kernelspec.name).execute()\n"
           "nbformat.write(nb, sys.argv[2])\n")


def _install_command(prefix: Path) -> list[str]:
    """postBuild's ``everest-jupyter kernels install`` line, into ``prefix`` instead of the
    image's Python."""
    text = POST_BUILD.read_text().replace("\\\n", " ")
    [line] = [ln for ln in text.splitlines() if ln.strip().startswith("everest-jupyter kernels")]
    args = shlex.split(line.split(">", 1)[0])[1:]
    args[args.index("--sys-prefix")] = f"--prefix={prefix}"
    return [*cli_command(), *args]


def test_the_binder_example_runs_its_kernel_as_a_job(fresh_env, tmp_path: Path) -> None:  # noqa: F811
    out = subprocess.run([str(START), *SHOW_ENV], env=fresh_env, cwd=REPO,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    env = {**fresh_env, **json.loads(out.stdout)}
    done = subprocess.run(_install_command(tmp_path / "prefix"), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    env["JUPYTER_PATH"] = str(tmp_path / "prefix" / "share" / "jupyter")
    env["PYTHONPATH"] = f"{entry_point_dir(tmp_path / 'eps')}:{REPO}"
    result = tmp_path / "executed.ipynb"
    ran = subprocess.run([sys.executable, "-c", EXECUTE, str(NOTEBOOK), str(result)], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    texts = ["".join(o.get("text", "")) or json.dumps(o.get("data", {}))
             for c in json.loads(result.read_text())["cells"] if c["cell_type"] == "code"
             for o in c["outputs"]]
    job_line = next(t for t in texts if "Everest job" in t)
    assert "Everest job None" not in job_line, job_line  # it ran inside a job's task
    assert any("'task': True" in t or '"task": true' in t for t in texts), texts
