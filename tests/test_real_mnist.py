"""Real-data accuracy floors (needs full MNIST; skips, saying why, without it)."""

from pathlib import Path

import pytest
from helpers import require_or_skip

from mnistkit.training import fit

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.parametrize("model, floor", [("logreg", 91.0), ("seed-mlp", 94.0)])
def test_one_epoch_reaches_the_floor(mnist_root, tmp_path, model, floor):
    r = fit(
        model=model,
        epochs=1,
        data_dir=str(mnist_root),
        download=False,
        out=str(tmp_path / model),
        echo=False,
        plots=False,
    )
    assert r.evaluation.n == 10000
    assert r.test_accuracy >= floor, f"{model}: {r.test_accuracy} % after 1 epoch"


@pytest.mark.slow
def test_fashion_mnist_from_debian_files(tmp_path, monkeypatch):
    if not (FASHION / "t10k-labels-idx1-ubyte.gz").exists():
        require_or_skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.delenv("MNISTKIT_DATA", raising=False)
    r = fit(
        dataset="fashion-mnist",
        model="logreg",
        epochs=1,
        download=False,
        out=str(tmp_path / "f"),
        echo=False,
        plots=False,
    )
    assert r.evaluation.class_names[9] == "Ankle boot"
    assert r.test_accuracy >= 80.0
