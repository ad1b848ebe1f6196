"""The named training recipes (``--preset``): plain dicts of :class:`~mnistkit.config.TrainConfig`
fields, each with a comment on what it is for. :func:`mnistkit.config.resolve_config` merges them
(defaults < model defaults < preset < flags); this module only holds them.

Every recipe is chosen on a validation split, never on the test set, and measured by ``make bench``;
the measurements that chose each one are in bench/README.md ("How the presets and thresholds are
chosen").
"""

from __future__ import annotations

from typing import Any

#: Named recipes. ``tutorial`` is the default; the others are tuned and measured by ``bench/``.
#: The CNN presets' shared training recipe (cnn, fast-cnn, fashion-cnn, digits-bundled): AdamW 4e-3 at
#: batch 128 with a one-cycle schedule, light weight decay and label smoothing, as bench/ chose it.
_CNN_RECIPE: dict[str, Any] = dict(
    batch_size=128,
    lr=4e-3,
    optimizer="adamw",
    weight_decay=5e-4,
    schedule="onecycle",
    label_smoothing=0.1,
)

PRESETS: dict[str, dict[str, Any]] = {
    "tutorial": {},
    # fast: the quickest MLP to about 98 %: one 384-wide ReLU layer, 2 epochs of one-cycle Adam with label
    # smoothing (worth half a point at this budget) at batch 256.
    "fast": dict(
        model="mlp",
        model_options={"hidden": [384], "activation": "relu"},
        epochs=2,
        batch_size=256,
        lr=6e-3,
        schedule="onecycle",
        label_smoothing=0.1,
        norm="dataset",
        log_every=0,
    ),
    # best-mlp: the most accurate plain MLP, without augmentation: two 1024-wide layers with dropout and
    # label smoothing as the regularisers.
    "best-mlp": dict(
        model="mlp",
        model_options={"hidden": [1024, 1024], "activation": "relu", "dropout": 0.2},
        epochs=12,
        batch_size=256,
        lr=2e-3,
        optimizer="adamw",
        weight_decay=0.05,
        schedule="onecycle",
        label_smoothing=0.1,
        norm="dataset",
        log_every=0,
    ),
    # cnn: the default 3-stage SmallCNN (32-64-128) with +-2 px shifts, 8 epochs: the accurate CNN.
    "cnn": dict(
        model="cnn",
        epochs=8,
        **_CNN_RECIPE,
        augment=True,
        norm="dataset",
        log_every=0,
    ),
    # fast-cnn: 99 % in seconds on a CPU: one epoch of a two-stage CNN with valid 5x5 convolutions
    # (28 -> 24 -> 12 -> 8 -> 4) and a 256-wide hidden head, pooling before ReLU.
    "fast-cnn": dict(
        model="cnn",
        model_options={"widths": [24, 32], "kernel": 5, "padding": "valid", "head_hidden": 256},
        epochs=1,
        **_CNN_RECIPE,
        norm="dataset",
        log_every=0,
    ),
    # fashion-cnn: for `--dataset fashion-mnist --preset fashion-cnn`: the cnn recipe, longer (12 epochs),
    # with +-2 px shifts and more dropout (0.3).
    "fashion-cnn": dict(
        model="cnn",
        model_options={"widths": [32, 64, 128], "dropout": 0.3},
        epochs=12,
        **_CNN_RECIPE,
        augment=True,
        norm="dataset",
        log_every=0,
    ),
    # digits-bundled: the model shipped inside the package (mnistkit.bundled; `make bundled-model`). The cnn
    # recipe twice as wide, with augmentation for real handwriting (slant, size, wobble, pen width), generated
    # non-digits (--negatives 0.15) so that it is unsure of letters and scribbles by itself, and a 5,000-image
    # validation split that fits the temperature and the unsure threshold; fp32 (amp off) so that CPU and GPU
    # runs train alike.
    "digits-bundled": dict(
        model="cnn",
        model_options={"widths": [64, 128, 256]},
        epochs=20,
        negatives=0.15,
        amp=False,
        **_CNN_RECIPE,
        augment=True,
        aug_shift=2,
        aug_rotate=6.0,
        aug_scale=0.06,
        aug_elastic=20.0,
        aug_elastic_sigma=4.0,
        aug_thickness=0.3,
        norm="dataset",
        val_size=5000,
        seed=0,
        log_every=0,
    ),
    # lines-bundled: the line reader shipped inside the package (mnistkit.bundled; `make bundled-reader`):
    # the crnn model's own training defaults on the synthetic digit lines, fp32 so CPU and GPU runs train
    # alike. How its recipe was chosen on real development numbers: bench/README.md, "The line reader".
    "lines-bundled": dict(model="crnn", dataset="digit-lines", epochs=8, amp=False, seed=0, log_every=100),
}
