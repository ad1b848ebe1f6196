"""The validated config: defaults, presets, precedence, messages."""

import pytest

from mnistkit.config import PRESETS, TrainConfig, resolve_config, resolve_device
from mnistkit.errors import ConfigError


def test_defaults_are_the_tutorials_recipe():
    c = TrainConfig()
    assert (c.dataset, c.model, c.optimizer, c.lr, c.batch_size, c.epochs, c.norm, c.val_size) == (
        "mnist",
        "seed-mlp",
        "adam",
        1e-3,
        64,
        10,
        "tutorial",
        0,
    )


def test_precedence_defaults_model_preset_overrides():
    assert resolve_config(model="logreg").norm == "dataset"  # the model's own training defaults
    assert resolve_config(model="logreg", norm="tutorial").norm == "tutorial"
    fast = resolve_config(preset="fast")
    assert fast.preset == "fast" and fast.model == PRESETS["fast"]["model"]
    assert resolve_config(preset="fast", epochs=7).epochs == 7
    assert resolve_config(preset="fast", epochs=None).epochs == PRESETS["fast"]["epochs"]


def test_round_trip_through_dict():
    c = resolve_config(model="mlp", classes=(3, 8), model_options={"hidden": [8]})
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(epochs=0), "epochs must be a positive whole number, got 0"),
        (dict(batch_size=2.5), "batch_size must be a positive whole number"),
        (dict(schedule="step"), "unknown schedule 'step'; choose one of: none, onecycle, cosine"),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(val_size=1.5), "val_size must be 0, a fraction in"),
        (dict(val_size=-1), "val_size must be 0"),
        (dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
        (dict(positive=1, classes=(1, 2)), "either --positive"),
        (dict(classes=(4,)), "at least two distinct classes"),
        (dict(nesterov=True), "--nesterov applies to --optimizer sgd only"),
    ],
)
def test_bad_values_are_named(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw)


def test_unknown_preset_and_keys():
    with pytest.raises(ConfigError, match="unknown preset 'turbo'; choose one of: tutorial, fast"):
        resolve_config(preset="turbo")
    with pytest.raises(ConfigError, match="unknown training options: colour"):
        resolve_config(colour="red")
    with pytest.raises(ConfigError, match="unknown config keys: colour"):
        TrainConfig.from_dict({"colour": 1})


def test_device_resolution_on_this_machine():
    import torch

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_device("cuda")


def test_preset_model_options_merge_with_the_callers(synthetic_dataset, tmp_path):
    """``fit(preset="fast", model_options={"dropout": 0.1})`` keeps the preset's hidden layer:
    the merge lives in resolve_config, not in the CLI."""
    from mnistkit import fit
    from mnistkit.checkpoint import load_checkpoint

    result = fit(
        preset="fast",
        model_options={"dropout": 0.1},
        dataset=str(synthetic_dataset),
        epochs=1,
        dry_run=True,
        out=str(tmp_path / "run"),
        echo=False,
        plots=False,
    )
    hidden = list(PRESETS["fast"]["model_options"]["hidden"])
    assert result.config.model_options == {"hidden": hidden, "activation": "relu", "dropout": 0.1}
    options = load_checkpoint(result.checkpoint).meta["model_options"]
    assert list(options["hidden"]) == hidden and options["dropout"] == 0.1


def test_merge_order_model_defaults_preset_then_flags():
    cfg = resolve_config("fast", model_options={"hidden": [64]}, lr=0.5)
    assert cfg.model_options == {"hidden": [64], "activation": "relu"} and cfg.lr == 0.5 and cfg.epochs == 2
    # another model than the preset's: the preset's model options do not carry over
    assert resolve_config("fast", model="cnn").model_options == {}
    # the model's own training defaults sit below the preset and the flags
    assert resolve_config(model="logreg").norm == "dataset"
    assert resolve_config(model="logreg", norm="tutorial").norm == "tutorial"


def test_a_base_config_takes_the_flags_the_same_way():
    base = resolve_config(model="mlp", model_options={"hidden": [32], "dropout": 0.3}, epochs=3)
    cfg = resolve_config(base=base, model_options={"dropout": 0.1}, lr=0.01)
    assert cfg.model_options == {"hidden": [32], "dropout": 0.1} and cfg.epochs == 3 and cfg.lr == 0.01
    with pytest.raises(ConfigError, match="drop --preset"):
        resolve_config("fast", base=base)


def test_an_augmentation_strength_asks_for_augmentation():
    assert resolve_config(aug_rotate=5.0).augment is True
    assert resolve_config(aug_rotate=5.0, augment=False).augment is False
    assert resolve_config().augment is False


def test_defaults_by_model_come_from_the_registry():
    from mnistkit.config import defaults_by_model
    from mnistkit.models import MODELS, list_models

    list_models()  # fills the registry
    assert defaults_by_model("norm") == {"logreg": "dataset", "binary-logreg": "dataset", "crnn": "dataset"}
    assert defaults_by_model("epochs") == {}
    for field in ("schedule", "optimizer", "lr"):  # every model whose own default differs, and only those
        expected = {m: spec.train_defaults[field] for m, spec in MODELS.items() if field in spec.train_defaults}
        assert defaults_by_model(field) == {m: v for m, v in expected.items() if v != getattr(TrainConfig(), field)}
