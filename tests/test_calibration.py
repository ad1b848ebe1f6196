"""Temperature scaling and the expected calibration error, against hand computations and known answers."""

import json

import pytest
import torch

from mnistkit.calibration import ECE_BINS, calibrate, expected_calibration_error, fit_temperature, keeps_fit
from mnistkit.checkpoint import load_checkpoint
from mnistkit.inference import checkpoint_proba


def _sampled(n=8000, classes=10, seed=0):
    """Logits ``z`` and labels drawn from ``softmax(z)``: perfectly calibrated at T = 1."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g) * 3
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at(true_t):
    z, y = _sampled()
    # labels follow softmax(z); a model reporting z * true_t needs T = true_t to be calibrated again
    assert fit_temperature(z * true_t, y) == pytest.approx(true_t, rel=0.08)


def test_fit_temperature_works_for_one_logit_binary_models():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8000, generator=g) * 2
    y = torch.bernoulli(torch.sigmoid(z), generator=g).long()
    assert fit_temperature(z * 2.5, y, "binary") == pytest.approx(2.5, rel=0.08)


def test_ece_by_hand():
    # 4 answers: confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.35 (right) -> bins 15, 15, 9, 6
    probs = torch.tensor([[0.95, 0.05, 0.0], [0.95, 0.05, 0.0], [0.45, 0.55, 0.0], [0.35, 0.33, 0.32]])
    labels = torch.tensor([0, 1, 1, 0])
    # bin (0.933, 1]: 2 answers, conf 0.95, acc 0.5 -> |0.45| * 2/4; the others: |0.45| and |0.65| * 1/4
    expected = 100 * (0.45 * 2 / 4 + 0.45 / 4 + 0.65 / 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-4)
    assert ECE_BINS == 15


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_large():
    z, y = _sampled()
    assert expected_calibration_error(torch.softmax(z, 1), y) < 3.0  # sampling noise of 8,000 answers
    assert expected_calibration_error(torch.softmax(z * 3, 1), y) > 10.0


def test_calibrate_fits_on_validation_and_reports_before_and_after():
    zv, yv = _sampled(seed=2)
    zt, yt = _sampled(seed=3)
    cal = calibrate("multiclass", (zv * 2, yv), {"test": (zt * 2, yt)})
    assert cal.temperature == pytest.approx(2.0, rel=0.08) and cal.kept and cal.fitted == cal.temperature
    for split in ("val", "test"):
        assert cal.ece[split]["after"] < 3.0 < 10.0 < cal.ece[split]["before"]
    d = cal.to_dict()
    assert d["ece_bins"] == 15 and set(d["ece"]) == {"val", "test"}
    none = calibrate("multiclass", None, {"test": (zt, yt)})
    assert none.temperature is None and set(none.ece["test"]) == {"before"}  # never fitted on the test set


def _sure_with_confident_mistakes(n=4000, seed=0):
    """Right answers at about 98 % confidence, except 2 % that are wrong at near-certainty: the
    log-loss asks for a higher temperature to soften those few, which makes every right answer too
    unsure (the logistic regression's case: a fitted T raised its validation ECE 0.84 % -> 1.83 %)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    z = torch.zeros(n, 10)
    z[torch.arange(n), y] = 6.0
    wrong = torch.arange(n) % 50 == 0
    z[wrong] = 0.0
    z[wrong, (y[wrong] + 1) % 10] = 25.0
    return z, y


def test_a_fitted_temperature_that_raises_the_validation_ece_is_refused():
    z, y = _sure_with_confident_mistakes()
    zt, yt = _sure_with_confident_mistakes(seed=1)
    cal = calibrate("multiclass", (z, y), {"test": (zt, yt)})
    assert cal.fitted is not None and cal.fitted > 1.1  # the fit did move...
    assert cal.ece["val"]["after"] > cal.ece["val"]["before"]  # ...and made the confidences worse
    assert cal.temperature == 1.0 and not cal.kept
    d = cal.to_dict()
    assert d["temperature"] == 1.0 and d["fitted_temperature"] == cal.fitted and d["temperature_kept"] is False
    assert "temperature 1 kept" in cal.describe() and f"{cal.fitted:.3f}" in cal.describe()


def test_the_rule_keeps_a_fit_only_when_it_lowers_the_validation_ece():
    assert keeps_fit(1.83, 0.84) and not keeps_fit(0.84, 1.83) and not keeps_fit(1.0, 1.0)


def test_training_with_a_validation_split_stores_the_temperature(synthetic_dataset, tmp_path):
    from mnistkit.training import fit

    r = fit(
        dataset=str(synthetic_dataset),
        out=str(tmp_path / "r"),
        model="mlp",
        epochs=2,
        batch_size=32,
        val_size=150,
        echo=False,
        plots=False,
    )
    ck = load_checkpoint(r.checkpoint)
    t = ck.meta["temperature"]
    assert isinstance(t, float) and 0.05 <= t <= 20 and ck.temperature == t
    cal = json.loads((r.run_dir / "eval.json").read_text())["calibration"]
    assert cal["temperature"] == t and set(cal["ece"]) == {"val", "test"}
    # the rule, whichever way this run went: the fit is kept exactly when it lowered the validation ECE
    kept = cal["ece"]["val"]["after"] < cal["ece"]["val"]["before"]
    assert cal["temperature_kept"] is kept and t == (cal["fitted_temperature"] if kept else 1.0)
    assert set(cal["ece"]["test"]) == {"before", "after"}
    assert r.summary["temperature"] == t and r.summary["ece"] == cal["ece"]
    log = (r.run_dir / "log.txt").read_text().splitlines()
    assert log[-2].startswith("Calibration: temperature") and log[-1].startswith("Accuracy of the model")
    # predict and serve use the calibrated probabilities: softmax(logits / T)
    from mnistkit.data import load_dataset
    from mnistkit.inference import predict_logits

    x = load_dataset(str(synthetic_dataset)).test.images[:16]
    ref = torch.softmax(predict_logits(ck.model, x, ck.norm) / t, 1)
    assert torch.allclose(checkpoint_proba(ck, x), ref, atol=1e-6)


def test_training_without_validation_split_stores_no_temperature(synthetic_dataset, tmp_path):
    from mnistkit.training import fit

    r = fit(dataset=str(synthetic_dataset), out=str(tmp_path / "r"), model="logreg", epochs=1, echo=False, plots=False)
    ck = load_checkpoint(r.checkpoint)
    assert "temperature" not in ck.meta and ck.temperature == 1.0
    assert r.summary["temperature"] is None and set(r.summary["ece"]) == {"test"}
    log = (r.run_dir / "log.txt").read_text()
    assert "Calibration" not in log and log.splitlines()[-1].startswith("Accuracy of the model")  # the tutorial's
