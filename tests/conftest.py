"""Shared test fixtures. Area-specific fixtures live in their own test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Fixtures shared by several test modules live in these helper modules (test modules never import each other).
pytest_plugins = ("hostile_helpers", "serve_helpers")

REPO = Path(__file__).resolve().parents[1]
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def find_real_mnist_root() -> Path | None:
    """A data root holding full MNIST (``ROOT/MNIST/raw``), from $MNISTKIT_DATA or ../shared/data."""
    candidates = [os.environ.get("MNISTKIT_DATA"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and all((Path(c) / "MNIST" / "raw" / f).is_file() for f in MNIST_FILES):
            return Path(c)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """Root of the real MNIST files; tests needing full MNIST skip (saying why) without it."""
    root = find_real_mnist_root()
    if root is None:
        pytest.skip("full MNIST not found: set MNISTKIT_DATA to a folder holding MNIST/raw/*.gz")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache dir or ./data from tests; never download by accident."""
    monkeypatch.setenv("MNISTKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A flat folder of tiny, learnable MNIST-format IDX files (600 train, 200 test)."""
    from synthetic import write_idx_dataset

    return write_idx_dataset(tmp_path_factory.mktemp("synthetic") / "idx")


@pytest.fixture(scope="session")
def early_stopped_run(synthetic_dataset, tmp_path_factory):
    """One MLP run on the synthetic data that stops early (at most 40 epochs, patience 2): the
    result (``RunResult``) of a run trained once and read by every early-stopping test."""
    from mnistkit.training import fit

    return fit(
        dataset=str(synthetic_dataset),
        out=str(tmp_path_factory.mktemp("early") / "run"),
        model="mlp",
        epochs=40,
        val_size=0.2,
        early_stopping=2,
        lr=0.05,
        batch_size=32,
        echo=False,
        plots=False,
    )
