"""High-level functions behind the CLI commands that work on checkpoints."""

from __future__ import annotations

from pathlib import Path

from mnistkit.errors import CheckpointError, ConfigError


def resolve_checkpoint_path(path: str | Path | None) -> Path:
    """Accept a checkpoint file or a run directory (then its ``model.safetensors``); ``None`` is the
    bundled pretrained digit model."""
    if path is None:
        from mnistkit.bundled import bundled_model_path

        return bundled_model_path()
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
        if not p.exists():
            raise CheckpointError(f"{path} is a directory without model.safetensors; is the run finished?")
    return p


def evaluate_checkpoint(
    checkpoint,
    split: str = "test",
    dataset: str | None = None,
    data_dir=None,
    download: bool = True,
    batch_size: int = 1024,
    device: str = "auto",
    bf16: bool = False,
):
    """Load a checkpoint, rebuild the split it was trained for, and score it."""
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.config import TrainConfig, resolve_device
    from mnistkit.evaluation import evaluate
    from mnistkit.training.loop import prepare_data

    dev = resolve_device(device)
    ck = load_checkpoint(resolve_checkpoint_path(checkpoint), device=dev)
    saved = dict(ck.meta.get("config") or {})
    cfg = TrainConfig.from_dict(saved) if saved else TrainConfig(dataset=ck.meta.get("dataset", "mnist"))
    cfg = cfg.replace(
        dataset=dataset or cfg.dataset,
        data_dir=data_dir or cfg.data_dir,
        download=download,
        dry_run=False,
        early_stopping=0,
    )
    if split == "val" and not cfg.val_size:
        raise ConfigError("--split val: this model was trained without a validation split (--val-size 0)")
    data = prepare_data(cfg, ck.task)
    if len(data.class_names) != len(ck.class_names):
        raise ConfigError(
            f"dataset {cfg.dataset!r} has {len(data.class_names)} classes but the checkpoint "
            f"predicts {len(ck.class_names)}"
        )
    x, y = {"test": (data.test_x, data.test_y), "val": (data.val_x, data.val_y), "train": (data.train_x, data.train_y)}[
        split
    ]
    return evaluate(ck.model, x, y, ck.norm, ck.class_names, ck.task, split, batch_size, dev, bf16)
