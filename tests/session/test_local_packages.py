"""Local packages travel as files: what the launcher sends for ``--packages ./x.whl`` and
``-r requirements.txt`` (:mod:`launcher.packages`), and what the runner makes of the staged
copies (``agent_scripts/runner_packages.py``) — checked by a real ``pip install`` from the
staged folder alone, with the user's folder out of reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from launcher.packages import PLACEHOLDER, LocalPackageError, LocalPackages
from tests.harness.processes import REPO
from tests.session.helpers import tiny_wheel

sys.path.insert(0, str(REPO / "agent_scripts"))
import runner_packages  # noqa: E402


def stage(local: LocalPackages, task: Path) -> dict:
    """Do what the upload and Everest's staging do: the files into ``task`` under the names
    the inputs give them (``package_files/NAME``, ``requirements.txt``)."""
    uploaded: dict[str, Path] = {}

    def upload(path: Path, name: str) -> str:
        uri = f"/api/files/temp/{len(uploaded)}/{name}"
        uploaded[uri] = Path(path)
        return uri

    inputs = local.inputs(upload)
    for uri in inputs.get("package_files", []):
        name = uri.rsplit("/", 1)[1]
        (task / "package_files").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(uploaded[uri], task / "package_files" / name)
    if "requirements" in inputs:
        shutil.copyfile(uploaded[inputs["requirements"]], task / "requirements.txt")
    return inputs


def pip_install(args: list[str], target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                           "--disable-pip-version-check", "--target", str(target), *args],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_a_local_wheel_becomes_a_staged_name_and_installs_from_the_copy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    wheel = tiny_wheel(home)
    local = LocalPackages.collect([f"./{wheel.name}", "numpy>=1"], cwd=home)
    task = tmp_path / "task"
    task.mkdir()
    inputs = stage(local, task)
    local.close()
    assert inputs["packages"] == f"{wheel.name} numpy>=1"
    assert [u.rsplit("/", 1)[1] for u in inputs["package_files"]] == [wheel.name]

    shutil.rmtree(home)  # the session never reads the user's folder
    args = runner_packages.resolve([wheel.name], str(task), str(tmp_path / "cache"))
    assert args[0].startswith(str(tmp_path / "cache")) and args[0].endswith(wheel.name)
    done = pip_install(args, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site/tinypkg/__init__.py").read_text() == "ANSWER = 42\n"
    # the same files are kept once: a second session's environment key is the same
    assert runner_packages.resolve([wheel.name], str(task), str(tmp_path / "cache")) == args


def test_a_requirements_file_with_local_paths_and_a_nested_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "wheels").mkdir(parents=True)
    (home / "sub").mkdir()
    first = tiny_wheel(home / "wheels", "firstpkg", 1)
    second = tiny_wheel(home / "sub", "secondpkg", 2)
    (home / "sub" / "requirements.txt").write_text(f"{second.name}  # beside this file\n")
    top = home / "requirements.txt"
    top.write_text("# the project's needs\n"
                   f"./wheels/{first.name} ; python_version >= '3'\n"
                   "-r sub/requirements.txt\n")
    local = LocalPackages.collect([], str(top), cwd=home)
    task = tmp_path / "task"
    task.mkdir()
    inputs = stage(local, task)
    local.close()
    assert "packages" not in inputs
    text = (task / "requirements.txt").read_text()
    assert f"{PLACEHOLDER}/{first.name} ; python_version >= '3'" in text
    assert f"-r {PLACEHOLDER}/requirements.txt" in text
    nested = (task / "package_files" / "requirements.txt").read_text()
    assert nested.strip() == f"{PLACEHOLDER}/{second.name}"

    shutil.rmtree(home)
    saved = os.environ.get(runner_packages.ENV_VAR)
    try:
        args = runner_packages.resolve([], str(task), str(tmp_path / "cache"))
        assert args == ["--requirement=" + str(next((tmp_path / "cache").iterdir())
                                                / "requirements.txt")]
        done = pip_install(args, tmp_path / "site")  # pip expands the variable itself
    finally:
        if saved is None:
            os.environ.pop(runner_packages.ENV_VAR, None)
        else:
            os.environ[runner_packages.ENV_VAR] = saved
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site/firstpkg/__init__.py").read_text() == "ANSWER = 1\n"
    assert (tmp_path / "site/secondpkg/__init__.py").read_text() == "ANSWER = 2\n"


def test_a_project_folder_travels_as_a_zip_without_its_clutter(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "proj").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'proj'\nversion = '1'\n")
    (project / "proj" / "__init__.py").write_text("")
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("secret")
    (project / "proj" / "__pycache__").mkdir()
    local = LocalPackages.collect([str(project)])
    try:
        assert local.packages == ["proj.zip"]
        with zipfile.ZipFile(local.files["proj.zip"]) as zf:
            assert sorted(zf.namelist()) == ["proj/proj/__init__.py", "proj/pyproject.toml"]
    finally:
        local.close()
    assert not local.files["proj.zip"].exists()  # nothing made for the upload stays


@pytest.mark.parametrize("packages, requirements, said", [
    (["./nowhere.whl"], None, "--packages ./nowhere.whl: no such file"),
    ([], "missing.txt", "-r missing.txt: no such file"),
    ([], "req-e.txt", "editable install of a local folder"),
    ([], "req-loop.txt", "includes itself"),
    (["a/tinypkg-1.0-py3-none-any.whl", "b/tinypkg-1.0-py3-none-any.whl"], None,
     "two local packages are named tinypkg-1.0-py3-none-any.whl"),
    (["./plain"], None, "not a Python project"),
])
def test_what_cannot_travel_is_refused_with_its_name(tmp_path: Path, packages, requirements,
                                                     said) -> None:
    for sub in ("a", "b", "plain"):
        (tmp_path / sub).mkdir()
    tiny_wheel(tmp_path / "a")
    tiny_wheel(tmp_path / "b", answer=7)
    (tmp_path / "req-e.txt").write_text("-e ./a\n")
    (tmp_path / "req-loop.txt").write_text("-r req-loop.txt\n")
    with pytest.raises(LocalPackageError, match=said) as caught:
        LocalPackages.collect(packages, requirements, cwd=tmp_path)
    assert caught.value.status == 400


def test_a_bare_name_stays_a_requirement_unless_it_is_a_project_here(tmp_path: Path) -> None:
    (tmp_path / "numpy").mkdir()  # a folder that is not a project: pip would not take it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "setup.py").write_text("")
    local = LocalPackages.collect(["numpy", "mine", "pandas>=2"], cwd=tmp_path)
    try:
        assert local.packages == ["numpy", "mine.zip", "pandas>=2"]
    finally:
        local.close()


def test_the_runner_refuses_a_placeholder_when_no_files_came(tmp_path: Path) -> None:
    with pytest.raises(runner_packages.PackageFilesError, match="the job brought none"):
        runner_packages.resolve([f"{PLACEHOLDER}/x.whl"], str(tmp_path), str(tmp_path / "c"))
    assert runner_packages.resolve(["numpy"], str(tmp_path), str(tmp_path / "c")) == ["numpy"]
