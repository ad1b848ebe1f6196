"""--deterministic with a seed: two CPU runs give bit-identical weights."""

import pytest
import torch
from safetensors.torch import load_file

from mnistkit.training import fit


@pytest.fixture(autouse=True)
def _restore_deterministic_flag():
    """``deterministic=True`` switches a process-wide torch flag; leave it as we found it."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _weights(dataset, out, **kw):
    r = fit(
        dataset=str(dataset),
        out=str(out),
        echo=False,
        plots=False,
        deterministic=True,
        seed=7,
        device="cpu",
        log_every=0,
        **kw,
    )
    return load_file(str(r.checkpoint))


@pytest.mark.parametrize(
    "kw",
    [
        dict(model="seed-mlp", epochs=2, batch_size=32),  # the tutorial's recipe (amp on)
        dict(
            model="mlp",
            model_options={"hidden": [32], "dropout": 0.2},
            epochs=2,
            batch_size=64,
            schedule="onecycle",
            label_smoothing=0.1,
            amp=False,
        ),  # dropout: global RNG, fp32
        dict(
            model="cnn",
            model_options={"widths": [4, 8]},
            epochs=1,
            batch_size=64,
            augment=True,  # BN, and every
            aug_rotate=10.0,
            aug_scale=0.1,
            aug_elastic=34.0,
            aug_thickness=0.5,
            negatives=0.5,
        ),  # augmentation and generated non-digits from the epoch's RNG
    ],
)
def test_two_deterministic_runs_give_identical_weights(synthetic_dataset, tmp_path, kw):
    a = _weights(synthetic_dataset, tmp_path / "a", **kw)
    b = _weights(synthetic_dataset, tmp_path / "b", **kw)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between two deterministic runs"


def test_a_different_seed_gives_different_weights(synthetic_dataset, tmp_path):
    # the minibatch loop's shuffling follows the seed (L-BFGS, logreg's default solver, has no randomness)
    a = _weights(synthetic_dataset, tmp_path / "a", model="logreg", solver="minibatch", epochs=1, batch_size=64)
    r = fit(
        dataset=str(synthetic_dataset),
        out=str(tmp_path / "b"),
        echo=False,
        plots=False,
        deterministic=True,
        seed=8,
        device="cpu",
        model="logreg",
        solver="minibatch",
        epochs=1,
        batch_size=64,
        log_every=0,
    )
    b = load_file(str(r.checkpoint))
    assert not torch.equal(a["linear.weight"], b["linear.weight"])
