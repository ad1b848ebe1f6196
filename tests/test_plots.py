"""Run plots, sample grids and the TensorBoard logger: files exist, are real PNGs, are not blank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistkit import plots
from mnistkit.errors import ConfigError

Image = pytest.importorskip("PIL.Image")

CLASS_NAMES = [str(i) for i in range(10)]


def assert_png(path: Path, min_width: int = 200, min_height: int = 150) -> None:
    """``path`` is a decodable PNG at least this big, and not a single flat colour."""
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_width and im.height >= min_height, im.size
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > 0, f"{path} is blank"


def fake_metrics(epochs: int = 3, with_val: bool = True) -> list[dict]:
    """Metrics rows shaped like the trainer's metrics.jsonl."""
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_accuracy": 85.0 + e,
            "val_loss": 1.1 / e if with_val else None,
            "val_accuracy": 84.0 + e if with_val else None,
            "lr": 0.1,
            "seconds": 1.5,
            "elapsed": 1.5 * e,
        }
        for e in range(1, epochs + 1)
    ]


def fake_confusion(c: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cm = rng.integers(0, 6, (c, c))
    np.fill_diagonal(cm, 950)
    return cm


def fake_mistakes(k: int = 12, seed: int = 0) -> dict:
    """K synthetic 'digits' (a bright bar on black) with wrong predictions."""
    rng = np.random.default_rng(seed)
    images = np.zeros((k, 28, 28), np.uint8)
    images[:, 6:22, 12:16] = 255
    true = rng.integers(0, 10, k)
    return {"images": images, "true": true, "pred": (true + 1) % 10, "prob": rng.uniform(0.5, 1.0, k)}


def test_save_run_plots_writes_every_plot(tmp_path):
    weights = np.random.default_rng(0).normal(size=(10, 784))
    written = plots.save_run_plots(
        tmp_path,
        metrics=fake_metrics(),
        confusion=fake_confusion(),
        class_names=CLASS_NAMES,
        mistakes=fake_mistakes(),
        weights=weights,
    )
    assert [p.name for p in written] == ["curves.png", "confusion.png", "mistakes.png", "weights.png"]
    for path in written:
        assert path.parent == tmp_path / "plots"
        assert_png(path, min_width=400, min_height=250)


def test_one_epoch_without_validation_still_plots(tmp_path):
    written = plots.save_run_plots(
        tmp_path,
        metrics=fake_metrics(1, with_val=False),
        confusion=fake_confusion(2).tolist(),
        class_names=["not 3", "3"],
        mistakes=None,
        weights=None,
    )
    assert [p.name for p in written] == ["curves.png", "confusion.png"]
    for path in written:
        assert_png(path)


def test_binary_weights_and_long_class_names(tmp_path):
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    plots.save_figure(plots.plot_weights(np.ones((1, 784)), ["not 3", "3"]), tmp_path / "w.png")
    plots.save_figure(plots.plot_confusion(fake_confusion(), names), tmp_path / "c.png")
    assert_png(tmp_path / "w.png")
    assert_png(tmp_path / "c.png", min_width=500, min_height=500)


def test_bad_shapes_are_config_errors():
    with pytest.raises(ConfigError, match=r"weights must have shape \[C, 784\], got \(10, 100\)"):
        plots.plot_weights(np.zeros((10, 100)), CLASS_NAMES)
    with pytest.raises(ConfigError, match="confusion matrix must be square"):
        plots.plot_confusion(np.zeros((3, 4)), CLASS_NAMES)
    with pytest.raises(ConfigError, match=r"1\.\.400 images, got 0"):
        plots.plot_sample_grid(np.zeros((0, 28, 28), np.uint8), [], CLASS_NAMES)


def test_sample_grid_and_comparison(tmp_path):
    images = fake_mistakes(16)["images"]
    path = plots.save_sample_grid(images, np.arange(16) % 10, CLASS_NAMES, tmp_path / "g.png", title="t")
    assert_png(path)
    fig = plots.plot_compare_curves({"a": fake_metrics(3), "b": fake_metrics(5, with_val=False)})
    assert_png(plots.save_figure(fig, tmp_path / "cmp.png"), min_width=800)


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ConfigError, match=r"pip install 'mnistkit\[plots\]'"):
        plots.plot_curves(fake_metrics())


def test_importing_mnistkit_does_not_import_matplotlib():
    code = (
        "import sys, mnistkit, mnistkit.cli, mnistkit.plots, mnistkit.report, mnistkit.tb; "
        "import mnistkit.cli.show, mnistkit.cli.report; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; "
        "assert 'torch.utils.tensorboard' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_logger_writes_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    from mnistkit.tb import TensorBoardLogger

    with TensorBoardLogger(tmp_path / "tb") as logger:
        for row in fake_metrics(2, with_val=False):
            logger.log_epoch(row)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_tensorboard_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    from mnistkit.tb import TensorBoardLogger

    with pytest.raises(ConfigError, match=r"pip install 'mnistkit\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)


def test_compare_curves_panels_are_validated():
    fig = plots.plot_compare_curves({"a": fake_metrics(2)}, panels=("accuracy",))
    assert len(fig.axes) == 1
    with pytest.raises(ConfigError, match="panels must be 'loss' and/or 'accuracy'"):
        plots.plot_compare_curves({"a": fake_metrics(2)}, panels=("f1",))
