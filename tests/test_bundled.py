"""The pretrained model shipped in the package: it loads, its digest verifies, its card is complete and
true, and it scores >= 99.5 % on MNIST's real test set. Also the card API, `mnistkit models` and the
packaging script."""

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO

from mnistkit.bundled import MAX_BYTES, PRESET, TRAIN_COMMAND, bundled_model_path
from mnistkit.card import CARD_KEYS, model_card
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.config import TrainConfig, resolve_config

SHIPPED = REPO / "src" / "mnistkit" / "bundled" / "digits-cnn.safetensors"


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.is_file():
        pytest.fail(f"{SHIPPED} is missing: rebuild it with `make bundled-model`")
    return load_checkpoint(bundled_model_path())  # verifies the SHA-256 digest over weights and metadata


def test_shipped_file_is_small_and_is_the_bundled_path(shipped):
    assert bundled_model_path() == SHIPPED and SHIPPED.stat().st_size <= MAX_BYTES
    assert shipped.meta["model"] == "cnn" and shipped.class_names == [str(d) for d in range(10)]


def test_card_is_complete_and_matches_the_recipe_and_the_metadata(shipped):
    card = shipped.meta["card"]
    assert set(CARD_KEYS) <= set(card)
    assert card["command"] == TRAIN_COMMAND == f"mnistkit train --preset {PRESET}"
    recipe = resolve_config(PRESET).to_dict()
    place = ("out", "name", "device", "data_dir", "download")
    saved = TrainConfig.from_dict(card["config"]).to_dict()  # read as --config reads it: newer fields take defaults
    assert {k: v for k, v in saved.items() if k not in place} == {
        k: v for k, v in recipe.items() if k not in place
    }  # the recorded command rebuilds this recipe
    assert card["config"]["augment"] and card["config"]["aug_elastic"] > 0 and card["config"]["val_size"] > 0
    assert card["seed"] == recipe["seed"] and card["data"]["dataset"] == "mnist"
    assert card["test_accuracy"] >= 99.5 and card["test_accuracy"] == shipped.meta["metrics"]["test_accuracy"]
    assert card["val_accuracy"] is not None and card["val_accuracy"] > 99
    t = card["temperature"]
    assert isinstance(t, float) and 0.05 <= t <= 20 and t == shipped.temperature == shipped.meta["temperature"]
    assert card["ece_bins"] == 15
    for split in ("val", "test"):
        assert set(card["ece"][split]) == {"before", "after"}
    photo = card["photo_benchmark"]
    lit = [v for k, v in photo["conditions"].items() if k.startswith("photo-")]
    assert photo["accuracy_is"] == "mean over the photo-* lighting conditions" and len(lit) >= 4
    assert photo["accuracy"] == pytest.approx(sum(lit) / len(lit), abs=0.01) and 95 <= photo["accuracy"] <= 100
    assert card["parameters"] == sum(p.numel() for p in shipped.model.parameters())


def test_model_card_api_returns_the_stored_card(shipped):
    assert model_card() == shipped.meta["card"] == model_card(shipped) == model_card(str(SHIPPED))


def test_shipped_model_scores_at_least_99_5_on_real_mnist_test(shipped, mnist_root):
    from mnistkit.data import load_dataset
    from mnistkit.inference import checkpoint_proba

    test = load_dataset("mnist", data_dir=str(mnist_root), download=False).test
    with torch.inference_mode():
        probs = checkpoint_proba(shipped, test.images)
    accuracy = 100.0 * float((probs.argmax(1) == test.labels).double().mean())
    assert len(test.labels) == 10000
    assert accuracy >= 99.5
    assert accuracy == pytest.approx(shipped.meta["card"]["test_accuracy"], abs=0.011)  # the card tells the truth


def test_card_validation_and_calibration_figures_hold_for_the_shipped_weights(shipped, mnist_root):
    """The card's figures recomputed from the weights: validation accuracy on the recipe's own seeded
    split, and the test split's ECE without and with the stored temperature."""
    from mnistkit.calibration import expected_calibration_error
    from mnistkit.data import load_dataset, split_validation
    from mnistkit.inference import checkpoint_proba, class_probabilities

    card = shipped.meta["card"]
    data = load_dataset("mnist", data_dir=str(mnist_root), download=False)
    _, val = split_validation(data.train, card["config"]["val_size"], card["seed"])
    with torch.inference_mode():
        val_probs = checkpoint_proba(shipped, val.images)
        test_probs = checkpoint_proba(shipped, data.test.images)
        plain = class_probabilities(shipped.model, data.test.images, shipped.norm, shipped.task)
    val_accuracy = 100.0 * float((val_probs.argmax(1) == val.labels).double().mean())
    assert val_accuracy == pytest.approx(
        card["val_accuracy"], abs=0.021
    )  # measured on CUDA: one near-tie of 5000 may differ
    bins = card["ece_bins"]
    assert expected_calibration_error(plain, data.test.labels, bins) == pytest.approx(
        card["ece"]["test"]["before"], abs=0.01
    )
    assert expected_calibration_error(test_probs, data.test.labels, bins) == pytest.approx(
        card["ece"]["test"]["after"], abs=0.01
    )


def test_card_of_a_checkpoint_without_one_is_derived_from_its_metadata(synthetic_dataset, tmp_path):
    from mnistkit.training import fit

    r = fit(
        dataset=str(synthetic_dataset),
        out=str(tmp_path / "run"),
        model="logreg",
        epochs=1,
        val_size=100,
        echo=False,
        plots=False,
    )
    card = model_card(tmp_path / "run")  # a run directory, as the CLI accepts
    assert set(CARD_KEYS) <= set(card) and card["name"] == "run" and card["command"] is None
    assert card["test_accuracy"] == r.test_accuracy and card["temperature"] == load_checkpoint(r.checkpoint).temperature
    assert card["parameters"] == 7850 and "no model card" in card["notes"][0]


def test_models_command_lists_architectures_and_the_bundled_card(shipped):
    from mnistkit.cli import cli
    from mnistkit.models import list_models

    out = CliRunner().invoke(cli, ["models"]).output
    for name in list_models():
        assert f"  {name} " in out
    assert TRAIN_COMMAND in out and f"{shipped.meta['card']['test_accuracy']:.2f} %" in out
    res = CliRunner().invoke(cli, ["models", "--json"])
    data = json.loads(res.output.strip().splitlines()[-1])
    assert [a["name"] for a in data["architectures"]] == list_models()
    assert data["bundled"]["card"] == shipped.meta["card"] and data["bundled"]["bytes"] == SHIPPED.stat().st_size


def _recipe_checkpoint(path, config, model=None):
    """A checkpoint shaped like a finished run of the recipe: ``model``'s weights, or untrained ones
    (packaging only)."""
    from mnistkit.models import build_model

    model = build_model("cnn") if model is None else model
    meta = {
        "dataset": "mnist",
        "norm": {"mean": 0.1307, "std": 0.3081},
        "class_names": [str(d) for d in range(10)],
        "config": config,
        "temperature": 1.5,
        "metrics": {
            "test_accuracy": 12.3,
            "val_accuracy": 11.0,
            "train_seconds": 1.0,
            "calibration": {"temperature": 1.5, "ece_bins": 15, "ece": {"test": {"before": 9, "after": 1}}},
        },
    }
    save_checkpoint(path / "model.safetensors", model, meta)


def _build(*args, data=None):
    """Run the build script; ``data``: the data root it reads MNIST from (``$MNISTKIT_DATA``)."""
    env = None if data is None else {**os.environ, "MNISTKIT_DATA": str(data)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_bundled_model.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_build_script_packages_a_run_of_the_recipe_with_its_card(tmp_path):
    run = tmp_path / "run"
    _recipe_checkpoint(run, {**resolve_config(PRESET).to_dict(), "out": str(run)})
    target = tmp_path / "pkg" / "digits-cnn.safetensors"
    res = _build("--from-run", str(run), "--target", str(target))
    assert res.returncode == 0, res.stderr
    card = load_checkpoint(target).meta["card"]
    assert card["command"] == TRAIN_COMMAND and card["test_accuracy"] == 12.3 and card["temperature"] == 1.5
    assert card["photo_benchmark"]["accuracy"] is None and "bench/photos.py" in card["photo_benchmark"]["note"]
    assert json.loads(res.stdout.split("\n", 1)[1])["name"] == "digits-cnn"
    # the card of the packaged file is refreshed with a photo-benchmark result; the weights stay
    photos = tmp_path / "photos.json"
    photos.write_text(
        json.dumps(
            {
                "n": 200,
                "seed": 0,
                "numbers": {"read_exactly_percent": 96.0},
                "conditions": {
                    "plain-28x28": {"accuracy": 99.0},
                    "clean-scan": {"accuracy": 98.0},
                    "photo-even": {"accuracy": 97.0},
                    "photo-vignette": {"accuracy": 96.0},
                },
            }
        )
    )
    again = tmp_path / "again.safetensors"
    res = _build("--from-run", str(target), "--photo-benchmark", str(photos), "--target", str(again))
    assert res.returncode == 0, res.stderr
    photo = load_checkpoint(again).meta["card"]["photo_benchmark"]
    assert photo["accuracy"] == 96.5 and photo["conditions"]["clean-scan"] == 98.0  # mean of the photo-* rows
    assert photo["numbers_read_exactly_percent"] == 96.0
    assert torch.equal(load_checkpoint(again).model.head[2].weight, load_checkpoint(target).model.head[2].weight)


def test_build_script_refuses_a_run_of_another_recipe_and_keeps_the_old_file(tmp_path):
    run = tmp_path / "run"
    _recipe_checkpoint(run, {**resolve_config(PRESET).to_dict(), "epochs": 1, "aug_elastic": 0.0})
    target = tmp_path / "digits-cnn.safetensors"
    target.write_bytes(b"previous")
    res = _build("--from-run", str(run), "--target", str(target))
    assert res.returncode == 2
    assert "not trained with --preset digits-bundled: it differs in aug_elastic, epochs" in res.stderr
    assert target.read_bytes() == b"previous"


def test_build_script_accepts_a_run_older_than_an_option_that_ran_as_its_default(tmp_path):
    """The shipped model was trained before ``solver`` existed: its config lacks the field, and the
    run did what the default does, so repackaging it (e.g. to refit the novelty model) must work.
    A missing field the recipe sets to something else than the default is still a different recipe."""
    config = resolve_config(PRESET).to_dict()
    assert config["solver"] == resolve_config().to_dict()["solver"]
    older = {k: v for k, v in config.items() if k != "solver"}
    run = tmp_path / "run"
    _recipe_checkpoint(run, older)
    res = _build("--from-run", str(run), "--target", str(tmp_path / "a.safetensors"))
    assert res.returncode == 0, res.stderr
    changed = tmp_path / "changed"
    _recipe_checkpoint(changed, {k: v for k, v in config.items() if k != "aug_elastic"})  # default is 0.0
    res = _build("--from-run", str(changed), "--target", str(tmp_path / "b.safetensors"))
    assert res.returncode == 2 and "it differs in aug_elastic" in res.stderr


def test_build_script_gives_a_model_its_own_min_confidence(shipped, tmp_path, mnist_root, monkeypatch):
    """``--choose-min-confidence``: the highest threshold at which the unsure rule flags at most 1 %
    of the run's photographed validation digits, stored in the checkpoint and shown on the card.
    Checked on the shipped (trained) weights: the unsure rule at the chosen threshold flags at most
    1 % of those digits, and one step (0.001) higher flags more."""
    from mnistkit.prediction import probabilities
    from mnistkit.unsure import UNSURE_FLAG_RATE, unsure_reason

    run = tmp_path / "run"
    _recipe_checkpoint(run, {**resolve_config(PRESET).to_dict(), "out": str(run)}, model=shipped.model)
    target = tmp_path / "own.safetensors"
    res = _build(
        "--from-run",
        str(run),
        "--choose-min-confidence",
        "--novelty-photos",
        "200",
        "--target",
        str(target),
        data=mnist_root,
    )
    assert res.returncode == 0, res.stderr
    ckpt = load_checkpoint(target)
    own = ckpt.meta["min_confidence"]
    assert ckpt.min_confidence == own and ckpt.novelty is None
    unsure = ckpt.meta["card"]["unsure"]
    assert unsure["min_confidence"] == own and f"{UNSURE_FLAG_RATE:.1%}" in unsure["chosen"]

    monkeypatch.setenv("MNISTKIT_DATA", str(mnist_root))
    analyses, digits = _photographed_validation(ckpt, 200)
    proba = probabilities(ckpt, digits)

    def flagged(threshold: float) -> int:
        return sum(unsure_reason(a, p, threshold) is not None for a, p in zip(analyses, proba, strict=True))

    budget = int(UNSURE_FLAG_RATE * len(digits))
    assert flagged(own) <= budget < flagged(own + 0.001), (own, flagged(own), flagged(own + 0.001))
    assert _build("--from-run", str(run), "--novelty", "--choose-min-confidence").returncode == 2


def _photographed_validation(ckpt, photos: int):
    """The script's own photographed validation digits (its seeded split, its photo generator):
    (analyses, 28x28 digits)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_bundled_model", REPO / "scripts" / "build_bundled_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _, analyses, digits, _ = script.photographed_validation(ckpt, photos)
    return analyses, digits
