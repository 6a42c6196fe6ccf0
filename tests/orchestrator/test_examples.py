"""The example notebooks, executed end to end in a real kernel against the local server.

Each notebook runs in a fresh folder holding a copy of it and of the example modules, with
its ``parameters`` cell replaced by a smaller problem, and with the server and token in
``EVEREST_URL`` / ``EVEREST_TOKEN`` as a session would have them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SMALL = {
    "lorenz_sweep.ipynb": "RHO = [5.0, 15.0, 25.0, 28.0, 35.0, 45.0]\n"
                          "SIGMA, BETA = 10.0, 8 / 3\nT = 20\nWORKERS = 2\n",
    "wordcount.ipynb": 'FILES = 4\nPOSTS = 200\nDATA = "data"\nRESULTS = "results"\n'
                       "MAP_RESOURCES = []\n",
}


def execute(name: str, work: Path, params: str = "") -> nbformat.NotebookNode:
    """Run example ``name`` in ``work`` with its small parameters (plus ``params``)."""
    for module in EXAMPLES.glob("*.py"):
        shutil.copy(module, work)
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "each example has one parameters cell"
    cells[0].source = SMALL[name] + params
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    return notebook


def text_of(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))


@pytest.fixture
def session_env(real_components: None, server, monkeypatch):
    monkeypatch.setenv("EVEREST_URL", server.url)
    monkeypatch.setenv("EVEREST_TOKEN", server.token)


def test_lorenz_sweep_notebook(session_env, tmp_path):
    notebook = execute("lorenz_sweep.ipynb", tmp_path)
    out = text_of(notebook)
    assert "L1 = 0.9" in out and "chaotic (L1 > 0.05) from rho = 25.0" in out
    assert "6 results, at most 2 jobs in flight" in out
    assert (tmp_path / "lorenz.journal").exists()


def test_wordcount_notebook(session_env, tmp_path):
    notebook = execute("wordcount.ipynb", tmp_path)
    assert "OK: " in text_of(notebook)
    parts = sorted((tmp_path / "results").glob("part-*.txt"))
    assert len(parts) == 4 and all(p.stat().st_size > 0 for p in parts)
