"""Model cards: what a checkpoint is, how it was trained, how well it does and when it is unsure.

A checkpoint made by ``make bundled-model`` carries its card in its metadata (``"card"``); for any
other checkpoint :func:`model_card` derives the same fields from the training metadata.
"""

from __future__ import annotations

from pathlib import Path

from mnistkit.checkpoint import Checkpoint, load_tensors, resolve_checkpoint_path
from mnistkit.novelty import PREFIX
from mnistkit.runs import CHECKPOINT_FILE
from mnistkit.unsure import model_min_confidence

#: Keys every model card has (``None`` where a value is unknown, with a note saying why).
CARD_KEYS = (
    "name",
    "architecture",
    "model_options",
    "parameters",
    "command",
    "data",
    "seed",
    "config",
    "test_accuracy",
    "val_accuracy",
    "temperature",
    "ece",
    "ece_bins",
    "unsure",
    "photo_benchmark",
    "train_seconds",
    "versions",
    "created",
    "notes",
)


def model_card(checkpoint=None) -> dict:
    """The model card of ``checkpoint``: a loaded :class:`~mnistkit.checkpoint.Checkpoint`, a path to
    a checkpoint or run directory, or None for the bundled model.

    A checkpoint trained by ``make bundled-model`` carries its card; for any other checkpoint the
    same fields are derived from its training metadata (config, metrics, calibration), with a note.

    Examples
    --------
    >>> from mnistkit.card import model_card
    >>> model_card()["command"]                      # doctest: +SKIP
    'mnistkit train --preset digits-bundled'
    """
    if isinstance(checkpoint, Checkpoint):
        meta, path = checkpoint.meta, checkpoint.path
        params = sum(p.numel() for p in checkpoint.model.parameters())
    else:
        path = resolve_checkpoint_path(checkpoint)
        tensors, meta = load_tensors(path)  # verifies the digest; no model is built
        params = parameter_count(tensors)
    card = meta.get("card")
    if isinstance(card, dict):
        return dict(card)
    name = (
        Path(path).parent.name
        if path is not None and Path(path).name == CHECKPOINT_FILE
        else (Path(path).stem if path is not None else str(meta.get("model")))
    )
    return card_from_metadata(
        meta,
        params,
        name,
        command=None,
        notes=["this checkpoint has no model card: the fields come from its training metadata"],
    )


def card_from_metadata(
    meta: dict,
    parameters: int,
    name: str,
    command: str | None,
    *,
    photo_benchmark: dict | None = None,
    notes: list[str] | None = None,
) -> dict:
    """A model card from a checkpoint's metadata (what :func:`mnistkit.training.fit` stores)."""
    config = meta.get("config") or {}
    metrics = meta.get("metrics") or {}
    cal = metrics.get("calibration") or {}
    n_val = config.get("val_size") or 0
    data = {
        "dataset": meta.get("dataset"),
        "train": "the dataset's training split"
        + (f" less {n_val} images held out for validation (seed {config.get('seed')})" if n_val else ""),
        "test": "the dataset's test split (scored once, after training)",
        "norm": meta.get("norm"),
        "classes": meta.get("class_names"),
    }
    if photo_benchmark is None:
        photo_benchmark = {"accuracy": None, "note": "not measured: run bench/photos.py on this checkpoint"}
    return {
        "name": name,
        "architecture": meta.get("model"),
        "model_options": meta.get("model_options"),
        "parameters": int(parameters),
        "command": command,
        "data": data,
        "seed": config.get("seed"),
        "config": config,
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "temperature": meta.get("temperature"),
        "ece": cal.get("ece"),
        "ece_bins": cal.get("ece_bins"),
        "unsure": unsure_summary(meta),
        "photo_benchmark": photo_benchmark,
        "train_seconds": metrics.get("train_seconds"),
        "versions": meta.get("versions"),
        "created": meta.get("created"),
        "notes": list(notes or []),
    }


def unsure_summary(meta: dict) -> dict:
    """The card's view of when the model says "unsure": its own ``--min-confidence`` default (and how
    it was chosen), and whether it carries a novelty model."""
    own = meta.get("min_confidence")
    return {
        "min_confidence": model_min_confidence(meta),
        "chosen": meta.get("min_confidence_chosen") or ("the package's default" if own is None else None),
        "novelty_model": meta.get("novelty") is not None,
    }


def parameter_count(tensors: dict) -> int:
    """Learned numbers in a state dict; BatchNorm's running statistics are state, not parameters,
    and a novelty model's tensors (``novelty.*``) are fitted statistics, not the network's."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(t.numel() for name, t in tensors.items() if not name.endswith(buffers) and not name.startswith(PREFIX))
