"""Generated non-digits (``--negatives``): the outlier-exposure loss, the negatives a batch gets,
and a training run with them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli

from mnistkit.errors import ConfigError
from mnistkit.losses import NEGATIVE, classification_loss, outlier_exposure_loss
from mnistkit.training.negatives import (
    LETTERS,
    NEGATIVE_SHARE,
    Negatives,
    hershey_glyphs,
    letter_drawings,
    stroke_drawings,
)

DIGITS = [str(d) for d in range(10)]
FILL = -1.0


def _negatives(bank: int = 64, names=DIGITS) -> Negatives:
    return Negatives.for_task(0.5, names, lambda u8: u8.float() / 127.5 - 1, 0, torch.device("cpu"), bank)


def _digit_batch(labels: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct random 'digits': a bright asymmetric blob per image on the background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(labels), 1, 28, 28), FILL)
    for i in range(len(labels)):
        r, c = torch.randint(4, 14, (2,), generator=g).tolist()
        x[i, 0, r : r + 10, c : c + 4] = 1.0
        x[i, 0, r : r + 3, c : c + 12] = 1.0  # an L-ish shape: mirroring or turning changes it
    return x, torch.tensor(labels)


# ---------------------------------------------------------------------------------------- the loss


def test_without_negatives_the_loss_is_plain_cross_entropy():
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    want = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(outlier_exposure_loss(logits, y, 0.1, 0.5), want)
    assert torch.allclose(classification_loss(logits, y, "multiclass", 0.1), want)


def test_negative_rows_are_pulled_toward_uniform_at_their_weight():
    real, neg = torch.randn(6, 10), torch.randn(3, 10)
    y = torch.cat([torch.randint(0, 10, (6,)), torch.full((3,), NEGATIVE)])
    loss = classification_loss(torch.cat([real, neg]), y, "multiclass", 0.0, negative_weight=0.5)
    to_uniform = -F.log_softmax(neg, 1).mean(1).mean()
    assert torch.allclose(loss, F.cross_entropy(real, y[:6]) + 0.5 * to_uniform)
    # equal logits are the negatives' best answer: log C, the least the term can be
    flat = classification_loss(torch.zeros(1, 10), torch.tensor([NEGATIVE]), "multiclass", negative_weight=1.0)
    assert math.isclose(float(flat), math.log(10), rel_tol=1e-6)
    assert float(-F.log_softmax(neg, 1).mean(1).min()) > math.log(10)


# ---------------------------------------------------------------------------------------- the batch


def test_a_batch_gets_its_share_of_negatives_labelled_negative():
    x, y = _digit_batch([d % 10 for d in range(20)])
    xx, yy = _negatives()(x, y, FILL, torch.Generator().manual_seed(1))
    k = round(20 * NEGATIVE_SHARE)
    assert xx.shape == (20 + k, 1, 28, 28) and torch.equal(xx[:20], x) and torch.equal(yy[:20], y)
    assert (yy[20:] == NEGATIVE).all()
    assert not any(torch.equal(n, img) for n in xx[20:] for img in x)  # every negative is something new
    assert (xx[20:] > FILL).flatten(1).any(1).all()  # and has ink


def test_negatives_follow_the_generator():
    x, y = _digit_batch([d % 10 for d in range(16)])
    neg = _negatives()
    a, _ = neg(x, y, FILL, torch.Generator().manual_seed(5))
    b, _ = neg(x, y, FILL, torch.Generator().manual_seed(5))
    c, _ = neg(x, y, FILL, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_and_eight_are_never_mirrored_or_turned():
    x, y = _digit_batch([0, 8] * 16)
    xx, _ = _negatives()(x, y, FILL, torch.Generator().manual_seed(2))
    mirrored_or_turned = [x.flip(-1), torch.rot90(x, 1, (-2, -1)), torch.rot90(x, -1, (-2, -1))]
    for n in xx[len(x) :]:
        assert not any(torch.equal(n, m) for made in mirrored_or_turned for m in made)


def test_mirrorable_digits_do_get_mirrored():
    x, y = _digit_batch([3] * 64)
    xx, _ = _negatives()(x, y, FILL, torch.Generator().manual_seed(3))
    mirrored = x.flip(-1)
    assert any(torch.equal(n, m) for n in xx[len(x) :] for m in mirrored)


def test_classes_that_are_not_digits_are_refused():
    with pytest.raises(ConfigError, match="classes named 0-9"):
        _negatives(names=["T-shirt", "Trouser"])


def test_letters_that_handwriting_turns_into_digits_are_left_out():
    assert not set(LETTERS) & set("OoQDIilSsZzBbGgq")
    assert {"A", "E", "H", "K", "M", "a", "e", "h", "k", "x"} <= set(LETTERS)
    assert len(hershey_glyphs()) == 3 * len(LETTERS)  # every letter in every font has strokes


@pytest.mark.parametrize("draw", [stroke_drawings, letter_drawings])
def test_drawings_are_framed_ink_and_seeded(draw):
    a = draw(8, np.random.default_rng(0))
    assert a.shape == (8, 28, 28) and a.dtype == np.uint8
    assert (a.reshape(8, -1).max(1) == 255).all()
    for img in a:  # MNIST's framing: the longer side of the ink's box is 20 px
        rows, cols = np.nonzero(img)
        assert 19 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 21
    assert np.array_equal(a, draw(8, np.random.default_rng(0)))
    assert not np.array_equal(a, draw(8, np.random.default_rng(1)))


# ---------------------------------------------------------------------------------------- training


def test_training_with_negatives_learns_the_digits(synthetic_dataset, tmp_path):
    from mnistkit.training import fit

    common = dict(dataset=str(synthetic_dataset), echo=False, plots=False, device="cpu", log_every=0)
    r = fit(out=str(tmp_path / "run"), model="mlp", epochs=3, batch_size=32, lr=3e-3, negatives=0.5, **common)
    assert r.test_accuracy > 80  # the synthetic digits are easy; the negatives must not stop learning them
    assert r.config.negatives == 0.5
    assert all(row["train_loss"] > 0 for row in r.metrics)


def test_negatives_need_a_multiclass_model(synthetic_dataset, tmp_path):
    from mnistkit.training import fit

    with pytest.raises(ConfigError, match="multiclass"):
        fit(
            dataset=str(synthetic_dataset),
            out=str(tmp_path / "run"),
            model="binary-logreg",
            positive=3,
            solver="minibatch",
            negatives=0.5,
            echo=False,
            plots=False,
            device="cpu",
            dry_run=True,
        )


@pytest.mark.parametrize("value", ["-0.5", "11", "nan"])
def test_cli_refuses_a_bad_weight_in_one_line(value, tmp_path, capsys):
    code, _, err = run_cli(["train", "--negatives", value, "--out", tmp_path / "r", "--dry-run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "negatives must be a number in [0, 10]" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------- fine-tuning


def test_init_from_starts_from_a_checkpoint_s_weights(synthetic_dataset, tmp_path):
    from safetensors.torch import load_file

    from mnistkit.training import fit

    common = dict(dataset=str(synthetic_dataset), echo=False, plots=False, device="cpu", log_every=0, model="mlp")
    first = fit(out=str(tmp_path / "first"), epochs=2, batch_size=32, lr=3e-3, **common)
    # one step at a vanishing learning rate: the weights are still the first run's
    again = fit(out=str(tmp_path / "again"), init_from=str(tmp_path / "first"), epochs=1, lr=1e-12, **common)
    a, b = load_file(str(first.checkpoint)), load_file(str(again.checkpoint))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if not k.startswith("novelty"))
    assert again.test_accuracy == pytest.approx(first.test_accuracy, abs=1.0)
    assert again.config.init_from == str(tmp_path / "first")


def test_init_from_refuses_another_network_in_one_line(synthetic_dataset, tmp_path, capsys):
    from mnistkit.training import fit

    common = dict(dataset=str(synthetic_dataset), echo=False, plots=False, device="cpu", log_every=0)
    fit(out=str(tmp_path / "mlp"), model="mlp", epochs=1, dry_run=True, **common)
    with pytest.raises(ConfigError, match="is not this run's model"):
        fit(out=str(tmp_path / "cnn"), model="cnn", init_from=str(tmp_path / "mlp"), dry_run=True, **common)
    with pytest.raises(ConfigError, match="normalised as"):
        fit(
            out=str(tmp_path / "n"),
            model="mlp",
            norm="dataset",
            init_from=str(tmp_path / "mlp"),
            dry_run=True,
            **common,
        )
    code, _, err = run_cli(
        ["train", "--dataset", synthetic_dataset, "--init-from", tmp_path / "nowhere", "--out", tmp_path / "x"], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nowhere" in err, err
