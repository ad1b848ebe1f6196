"""High-level functions behind the CLI commands that work on checkpoints."""

from __future__ import annotations

from pathlib import Path

from mnistkit.errors import ConfigError
from mnistkit.runs import checkpoint_path


def resolve_checkpoint_path(path: str | Path | None) -> Path:
    """Accept a checkpoint file or a run directory (then its ``model.safetensors``); ``None`` is the
    bundled pretrained digit model."""
    if path is None:
        from mnistkit.bundled import bundled_model_path

        return bundled_model_path()
    return checkpoint_path(path)


def evaluate_checkpoint(
    checkpoint,
    split: str = "test",
    dataset: str | None = None,
    data_dir=None,
    download: bool = True,
    batch_size: int = 1024,
    device: str = "auto",
    bf16: bool = False,
    other_classes: bool = False,
):
    """Load a checkpoint, rebuild the split it was trained for, and score it.

    A dataset whose class names differ from the checkpoint's (Fashion-MNIST for a digit model)
    is refused: its score would mean nothing. ``other_classes=True`` scores it anyway (a
    relabelled copy of the same classes); the number of classes must still match.
    """
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.config import TrainConfig, resolve_device
    from mnistkit.data import load_dataset
    from mnistkit.data.task import make_task
    from mnistkit.evaluation import evaluate

    dev = resolve_device(device)
    ck = load_checkpoint(resolve_checkpoint_path(checkpoint), device=dev)
    saved = dict(ck.meta.get("config") or {})
    cfg = TrainConfig.from_dict(saved) if saved else TrainConfig(dataset=ck.meta.get("dataset", "mnist"))
    if split == "val" and not cfg.val_size:
        raise ConfigError("--split val: this model was trained without a validation split (--val-size 0)")
    # the checkpoint's own data_dir is never searched: a file from elsewhere must not choose where
    # data is read from or downloaded to; the caller's data_dir, the environment and the standard roots do
    ds = load_dataset(dataset or cfg.dataset, data_dir=data_dir, download=download)
    data = make_task(  # the splits the model was trained for: same validation rows, same task
        ds,
        val_size=cfg.val_size,
        seed=cfg.seed,
        positive=cfg.positive,
        classes=cfg.classes,
        binary=ck.task == "binary",
        model=cfg.model,
        norm=cfg.norm,
    )
    if len(data.class_names) != len(ck.class_names):
        raise ConfigError(
            f"dataset {dataset or cfg.dataset!r} has {len(data.class_names)} classes but the checkpoint "
            f"predicts {len(ck.class_names)}"
        )
    if list(data.class_names) != list(ck.class_names) and not other_classes:
        raise ConfigError(
            f"dataset {dataset or cfg.dataset!r} has the classes {_names(data.class_names)} but the checkpoint "
            f"predicts {_names(ck.class_names)}: its score would mean nothing (pass --other-classes to score it anyway)"
        )
    chosen = data.split(split)
    return evaluate(
        ck.model, chosen.images, chosen.labels, ck.norm, ck.class_names, ck.task, split, batch_size, dev, bf16
    )


def _names(names) -> str:
    """A few class names for a one-line message."""
    shown = ", ".join(map(str, list(names)[:4]))
    return f"{shown}, ..." if len(names) > 4 else shown
