"""The line reader trains through the project's own machinery: fit, checkpoints, resume, refusals."""

from __future__ import annotations

import pytest
import torch

from mnistkit.checkpoint import load_checkpoint
from mnistkit.errors import ConfigError
from mnistkit.training import fit, loop

pytestmark = pytest.mark.slow  # trains line models (about a minute)

LINES = "digit-lines-sample"


@pytest.fixture(scope="module")
def lines_cache(tmp_path_factory):
    """One cache folder for the module, so the sample lines are made once."""
    return tmp_path_factory.mktemp("lines-cache")


@pytest.fixture(autouse=True)
def _shared_cache(lines_cache, monkeypatch):
    monkeypatch.setenv("MNISTKIT_CACHE_DIR", str(lines_cache))


def _fit(out, **kw):
    base = dict(model="crnn", dataset=LINES, val_size=200, dry_run=True, out=str(out), echo=False, plots=False)
    return fit(**{**base, **kw})


def test_a_line_model_trains_scores_and_reads(tmp_path):
    result = _fit(tmp_path / "run", epochs=1)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.task == "sequence" and ckpt.class_names == [str(d) for d in range(10)]
    assert 0.0 <= result.test_accuracy <= 100.0
    assert result.metrics[-1]["val_loss"] is not None
    from mnistkit.reading.model import load_line_reader

    reader = load_line_reader(result.run_dir)
    page = torch.full((60, 160), 230, dtype=torch.uint8).numpy()
    page[20:40, 30:34] = 20  # a stroke: whatever it reads, the answer is well formed
    reading = reader.read(page)
    assert isinstance(reading.text, str) and 0.0 <= reading.confidence <= 1.0
    assert reading.unsure == (reading.reason is not None)


def test_resume_after_interruption_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    kw = dict(epochs=2, deterministic=True, seed=3)
    full = _fit(tmp_path / "full", **kw)
    real_epoch = loop.train_one_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if args[1] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", **kw)
    monkeypatch.undo()
    resumed = fit(resume=tmp_path / "cut", echo=False, plots=False)
    a = load_checkpoint(full.checkpoint).model.state_dict()
    b = load_checkpoint(resumed.checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]


def test_the_bundled_readers_preset_dry_runs(tmp_path):
    result = _fit(tmp_path / "run", preset="lines-bundled", epochs=1)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.meta["config"]["preset"] == "lines-bundled" and ckpt.meta["config"]["dataset"] == LINES


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(model="crnn", dataset="mnist-sample"), "reads lines of digits"),
        (dict(model="mlp", dataset=LINES), "holds lines of digits"),
        (dict(model="crnn", augment=True), "drop --augment"),
        (dict(model="crnn", positive=3), "--positive and --classes"),
    ],
)
def test_line_models_and_line_data_go_together(options, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        _fit(tmp_path / "run", **{"dataset": LINES, **options})
