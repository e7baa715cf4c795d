"""The tutorial notebooks (notebooks/): every py:percent twin is in sync with its .ipynb, and every
notebook runs from top to bottom in its small mode.

The ``.py`` twins are the source (reviewable diffs, linted by ruff); the ``.ipynb`` files are what a
reader opens, committed without outputs. Each notebook's first code cell reads
``DDPMLAB_NOTEBOOK_MODE``: ``small`` shrinks training and sampling so that all five run in about 40 s
of CPU time (1.5 to 2 minutes of wall time on a busy 2-core machine); the full mode is what a reader
runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
TWINS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT_S = 300


def _ids(paths):
    return [path.stem for path in paths]


def test_the_five_notebooks_exist_in_pairs():
    assert [path.stem[:2] for path in TWINS] == ["01", "02", "03", "04", "05"]
    notebooks = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    assert [path.stem for path in notebooks] == [path.stem for path in TWINS]


@pytest.mark.parametrize("twin", TWINS, ids=_ids(TWINS))
def test_notebook_pair_is_in_sync(twin):
    """The .ipynb holds the same cells as its .py twin (regenerate with `jupytext --sync`), and no
    outputs (the repository keeps them small; CI executes them)."""
    text, notebook = jupytext.read(twin), jupytext.read(twin.with_suffix(".ipynb"))
    assert [(cell.cell_type, cell.source) for cell in notebook.cells] == [
        (cell.cell_type, cell.source) for cell in text.cells
    ], f"{twin.name} and its .ipynb differ: run `jupytext --sync {twin.relative_to(ROOT)}`"
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    raw = nbformat.read(twin.with_suffix(".ipynb"), as_version=4)
    code = [cell for cell in raw.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize("twin", TWINS, ids=_ids(TWINS))
def test_notebook_runs_in_small_mode(twin, tmp_path, monkeypatch):
    """Execute the .ipynb with the python3 kernel in small mode (in a temporary working directory),
    and check that it drew pictures inline."""
    # The kernel inherits this environment: it imports this checkout's ddpmlab (installed editable in
    # CI anyway), draws with Agg and runs single-threaded, as the tests do (see conftest.py).
    source = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("DDPMLAB_NOTEBOOK_MODE", "small")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(twin.with_suffix(".ipynb"), as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) >= 3, f"{twin.stem} showed {len(pictures)} pictures"
    print(f"{twin.stem}: {seconds:.1f} s in small mode, {len(pictures)} pictures")


def test_show_displays_figures_and_files(tmp_path, monkeypatch):
    """ddpmlab.plots.show, the notebooks' way to draw inline: a figure or a file becomes a PNG display."""
    import matplotlib.pyplot as plt
    from IPython.display import Image

    from ddpmlab import plots

    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    plots.show(fig)
    path = plots.plot_loss_curve([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], tmp_path / "loss.png")
    plots.show(path)
    assert [type(item) for item in shown] == [Image, Image]
    assert all(item.data[:8] == b"\x89PNG\r\n\x1a\n" for item in shown)
    assert not plt.get_fignums()  # the figure was closed
