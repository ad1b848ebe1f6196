"""What one training run works with, built once from the config: model, optimiser, schedule,
batches, loss, validation (:func:`make_session`) and callbacks (:func:`make_callbacks`).

The epoch loop (:mod:`mnistkit.training.loop`) reads the :class:`EpochParts` of a :class:`Session`
instead of the whole config; the estimators hand it the same parts built over their arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from mnistkit.config import TrainConfig
from mnistkit.data.dataset import Split
from mnistkit.data.task import TaskData, make_task
from mnistkit.errors import ConfigError
from mnistkit.evaluation import validation_scores
from mnistkit.losses import classification_loss
from mnistkit.models import build_model, get_model_spec
from mnistkit.precision import autocast as _autocast
from mnistkit.preprocess import Normalization, normalize
from mnistkit.runs import RunDir
from mnistkit.training.augment import Augmentation
from mnistkit.training.batches import EpochBatches
from mnistkit.training.callbacks import (
    CallbackList,
    Checkpointing,
    EarlyStopping,
    EpochHooks,
    ProgressLog,
    TensorBoard,
)
from mnistkit.training.distributed import DistContext, wrap_model
from mnistkit.training.faults import faults_from_env
from mnistkit.training.negatives import Negatives
from mnistkit.training.optim import make_optimizer, make_scheduler
from mnistkit.training.runlog import RunLog

#: --dry-run: optimiser steps per epoch, and the rows of data it keeps (train: batches of it)
DRY_RUN_STEPS = 2
DRY_RUN_TRAIN_BATCHES = 4
DRY_RUN_EVAL_ROWS = 512


class Batches(Protocol):
    """An epoch's batches: ``batches(epoch)`` yields ``(inputs, labels)`` on the training device;
    ``steps`` is the batches per epoch and ``seen`` the samples they hold (over all ranks)."""

    steps: int
    seen: int

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class EpochParts:
    """What the one epoch loop (:func:`mnistkit.training.loop.run_epochs`) steps and scores, whoever
    trains: ``mnistkit train`` builds a :class:`Session`, the estimators build these parts over
    their arrays (:mod:`mnistkit.training.arrays`). ``model`` is the bare module (saved, validated,
    scored); ``train_model`` the one stepped (DDP-wrapped under torchrun, compiled with ``--compile``)."""

    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    batches: Batches
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> the mean loss a step lowers
    task: str  # "multiclass", "binary" or "sequence"
    negative_weight: float  # the loss weight of generated non-digits (--negatives); 0 = none in the batches
    autocast: Callable  # a factory of autocast contexts (a no-op one in fp32)
    device: torch.device
    dist: DistContext | None
    epochs: int  # planned epochs
    validate: Callable[[torch.nn.Module], dict]  # the model -> the epoch's validation scores (a row's fields)

    @property
    def is_main(self) -> bool:
        """Only the main process prints and writes files."""
        return self.dist is None or self.dist.is_main


@dataclass
class Session(EpochParts):
    """What one ``mnistkit train`` run works with: the loop's parts over the normalised training
    split (``batches.x`` / ``.y``, which a full-batch solver reads whole) and its normalisation."""

    batches: EpochBatches
    norm: Normalization


def training_loss(task: str, label_smoothing: float = 0.0, negative_weight: float = 0.0) -> Callable:
    """The loss ``mnistkit train`` steps on: :func:`classification_loss` of the logits in fp32
    (under bf16 autocast the model returns bf16 logits, too coarse for a loss)."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return classification_loss(logits.float(), labels, task, label_smoothing, negative_weight=negative_weight)

    return loss


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile``: the same module, its forward compiled on first call."""
    return torch.compile(model)  # type: ignore[return-value]  # an OptimizedModule, typed as a callable


def make_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """Build the configured model, sizing its output to the task's classes when it has the option."""
    spec = get_model_spec(cfg.model)
    options = dict(cfg.model_options)
    if spec.task == "multiclass" and num_classes != 10:
        if "num_classes" not in spec.defaults:
            raise ConfigError(
                f"model {cfg.model!r} always has 10 outputs; with {num_classes} classes use --model mlp, logreg or cnn"
            )
        options.setdefault("num_classes", num_classes)
    return build_model(cfg.model, **options)


def load_initial_weights(model: torch.nn.Module, source: str, data: TaskData) -> None:
    """``--init-from``: copy a checkpoint's weights into ``model``, which must be the same network for
    the same classes and pixel scale (anything else would start from weights meant for other inputs)."""
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path

    start = load_checkpoint(resolve_checkpoint_path(source))
    if list(start.class_names) != list(data.class_names):
        raise ConfigError(
            f"--init-from {source}: its classes {start.class_names} are not this run's {data.class_names}"
        )
    if start.norm != data.norm:
        raise ConfigError(
            f"--init-from {source}: it was trained on pixels normalised as {start.norm}, this run uses {data.norm}"
        )
    theirs, ours = start.model.state_dict(), model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in theirs.items()}
    if shapes != {k: tuple(v.shape) for k, v in ours.items()}:
        raise ConfigError(
            f"--init-from {source}: its network ({start.meta.get('model')} {start.meta.get('model_options')}) "
            "is not this run's model; give the same --model and --model-option values"
        )
    model.load_state_dict(theirs)


def load_training_data(cfg: TrainConfig) -> TaskData:
    """The task's splits for ``cfg`` (``--dry-run``: the first few batches of each)."""
    from mnistkit.data import load_dataset

    data = make_task(
        load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download),
        val_size=cfg.val_size,
        seed=cfg.seed,
        positive=cfg.positive,
        classes=cfg.classes,
        binary=get_model_spec(cfg.model).task == "binary",
        model=cfg.model,
        norm=cfg.norm,
        sequence=get_model_spec(cfg.model).task == "sequence",
    )
    return data.head(DRY_RUN_TRAIN_BATCHES * cfg.batch_size, DRY_RUN_EVAL_ROWS) if cfg.dry_run else data


def make_session(cfg: TrainConfig, data: TaskData, device: torch.device, dist: DistContext | None) -> Session:
    """Model on ``device``, the training split normalised once on it, optimiser and per-step schedule."""
    model = make_model(cfg, len(data.class_names))
    if cfg.init_from:
        load_initial_weights(model, cfg.init_from, data)
    model = model.to(device)
    task = get_model_spec(cfg.model).task
    if task == "sequence" and cfg.augment:
        raise ConfigError(
            "--augment moves 28x28 digits; the line datasets are varied as they are made (drop --augment)"
        )
    batches = EpochBatches(
        normalize(data.train.images.to(device), data.norm),
        data.train.labels.to(device),
        cfg.batch_size,
        cfg.seed,
        dist=dist,
        augment=Augmentation.from_config(cfg),  # None when --augment is off
        fill=-data.norm.mean / data.norm.std,  # a blank pixel after normalisation
        step_limit=DRY_RUN_STEPS if cfg.dry_run else None,
        negatives=make_negatives(cfg, data, task, device),
    )
    optimizer = make_optimizer(model.parameters(), cfg, device)
    train_model = wrap_model(model, dist)  # DDP under torchrun, else the model itself
    val = Split(data.val.images.to(device), data.val.labels.to(device)) if data.val is not None else None
    return Session(
        model=model,
        train_model=_compiled(train_model) if cfg.compile else train_model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, cfg.epochs * batches.steps),
        batches=batches,
        loss=training_loss(task, cfg.label_smoothing, cfg.negatives),
        task=task,
        negative_weight=cfg.negatives,
        autocast=_autocast(device, cfg.amp),
        device=device,
        dist=dist,
        epochs=cfg.epochs,
        validate=functools.partial(
            validation_scores, split=val, norm=data.norm, task=task, batch_size=cfg.eval_batch_size
        ),
        norm=data.norm,
    )


def make_negatives(cfg: TrainConfig, data: TaskData, task: str, device: torch.device) -> Negatives | None:
    """The generated non-digits of ``--negatives`` (None when off); a multiclass digit task only."""
    if not cfg.negatives:
        return None
    if task != "multiclass":
        raise ConfigError(f"--negatives needs a multiclass model; {cfg.model!r} is {task}")
    normalise = functools.partial(normalize, norm=data.norm)
    return Negatives.for_task(cfg.negatives, data.class_names, normalise, cfg.seed, device, len(data.train.images))


def make_callbacks(
    cfg: TrainConfig,
    run: RunDir,
    session: Session,
    *,
    echo: bool = True,
    progress: bool | None = None,
    board: str | None = None,
    hooks: Sequence = (),
) -> CallbackList:
    """The callbacks of ``mnistkit train``; only the main process writes files and prints.

    ``board``: a TensorBoard log directory (``--tensorboard``); ``hooks``: ``fit(hooks=...)``.
    """
    main = session.is_main
    board_cb = [TensorBoard(board)] if main and board else []  # first: it may refuse (no package)
    log = RunLog(run.log if main else None, echo=echo and main, progress=progress)
    return CallbackList(
        [
            EarlyStopping(cfg.early_stopping, cfg.epochs, session.model, session.dist),
            ProgressLog(log, cfg.epochs, cfg.log_every, run),
            *([Checkpointing(run, session.model, session.optimizer, session.scheduler)] if main else []),
            *board_cb,
            EpochHooks(hooks),
            *faults_from_env(session.dist),
        ],
        log,
    )
