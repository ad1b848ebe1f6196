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
