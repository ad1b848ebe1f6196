"""The training loop: fit -> run_epochs -> one epoch -> one step, each a small function.

``fit`` reads as the run's table of contents; what it works with is built in
:mod:`~mnistkit.training.session`, what happens around the epochs (early stopping, saving, the
log, TensorBoard, user hooks) lives in :mod:`~mnistkit.training.callbacks`, and the finished
run's files are written by :mod:`~mnistkit.training.artifacts`. The hot path has no host sync
except the tutorial's log line every ``log_every`` steps.
"""

from __future__ import annotations

import functools
import os
import random
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import mnistkit.training.lbfgs_trainer as lbfgs_trainer  # the module, not the package: training/__init__ imports this one
from mnistkit.config import TrainConfig, resolve_config, resolve_device
from mnistkit.ctc import exact_matches
from mnistkit.errors import ConfigError
from mnistkit.inference import switched_mode
from mnistkit.losses import NEGATIVE
from mnistkit.runs import RunDir, RunLock, default_run_dir
from mnistkit.training.artifacts import RunResult, finish_run
from mnistkit.training.callbacks import Callback, CallbackList, StopTraining
from mnistkit.training.distributed import check_batch_size, init_distributed, shutdown
from mnistkit.training.optim import current_lr
from mnistkit.training.session import EpochParts, Session, load_training_data, make_callbacks, make_session
from mnistkit.training.state import TrainState, load_state

__all__ = ["RunResult", "StopTraining", "fit", "run_epochs", "train_one_epoch", "train_step"]

#: A trainer runs a session's epochs, updating the state and calling the callbacks.
Trainer = Callable[[Session, TrainState, CallbackList], None]


def fit(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    echo: bool = True,
    progress: bool | None = None,
    tensorboard: str | None = None,
    plots: bool = True,
    hooks: Sequence = (),
    **overrides,
) -> RunResult:
    """Train a model and write its run directory; the Python twin of ``mnistkit train``.

    ``config`` (or keyword ``overrides``, ``preset=``) is the recipe; ``resume`` continues the
    interrupted run in that directory; ``echo`` prints the log (``log.txt`` always gets it). Each
    of ``hooks`` has ``on_epoch_end(epoch, row)``, called once the epoch is saved; it may raise
    :class:`StopTraining` (or Optuna's ``TrialPruned``) to end the run there.
    """
    cfg, run = resolve_run(config, resume, overrides)
    dist, device = init_distributed(resolve_device(cfg.device))  # (None, device) outside torchrun
    callbacks = CallbackList()
    lock: RunLock | None = None  # held by the main process from the run's first file to its last
    try:
        # what to learn, and what with
        check_batch_size(cfg.batch_size, dist)
        seed_everything(cfg.seed, cfg.deterministic)
        data = load_training_data(cfg)
        session = make_session(cfg, data, device, dist)
        # where it goes, and where it starts
        if session.is_main:
            lock = start_run_dir(run, cfg, resuming=resume is not None)
        state = TrainState() if resume is None else resumed_state(run, session)
        callbacks = make_callbacks(cfg, run, session, echo=echo, progress=progress, board=tensorboard, hooks=hooks)
        # train, then score once on the test split
        trainer_for(cfg)(session, state, callbacks)
        return conclude(cfg, run, data, session, state, callbacks, plots)
    except BaseException as exc:
        if lock is not None and is_interrupt(exc):
            note_resume(exc, run)
        raise
    finally:
        callbacks.close()
        if lock is not None:
            lock.release()
        shutdown(dist)


# ----------------------------------------------------------------------------- setup


def resolve_run(config: TrainConfig | None, resume, overrides: dict) -> tuple[TrainConfig, RunDir]:
    """The run's config and directory: a new run's from ``config``/``overrides``, a resumed run's from disk."""
    if resume is None:
        cfg = resolve_config(base=config, **overrides)
        return cfg, default_run_dir(cfg)
    run = RunDir(resume)
    if not run.config.exists() or (run.is_finished() and not run.is_interrupted()):
        raise ConfigError(
            f"--resume {run}: no interrupted run there (needs config.json, and {run.state.name} once finished)"
        )
    saved = run.read_config(f"--resume {run}: config.json")
    allowed = {"device", "data_dir"}
    bad = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
    if config is not None or bad:
        drop = ", ".join("--" + b.replace("_", "-") for b in bad) or "the config"
        raise ConfigError(f"--resume continues a run with its saved config; drop {drop}")
    saved.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.from_dict(saved), run
    except ConfigError as exc:
        raise ConfigError(f"--resume {run}: config.json is not a usable config: {exc}") from None
    except (TypeError, ValueError) as exc:  # values of the wrong JSON type for the dataclass
        why = " ".join(str(exc).split())[:120]
        raise ConfigError(f"--resume {run}: config.json is not a usable config ({why})") from None


def start_run_dir(run: RunDir, cfg: TrainConfig, resuming: bool) -> RunLock:
    """Create and lock the run directory (refusing to overwrite a run) and, for a new run, write its
    config; returns the lock, which the caller releases when the run's files are written."""
    lock = run.prepare(resuming=resuming)
    if not resuming:
        try:
            run.write_config(cfg.to_dict())
        except BaseException:
            lock.release()
            raise
    return lock


def is_interrupt(exc: BaseException) -> bool:
    """Stopped from outside (Ctrl-C, or the CLI's SIGINT / SIGTERM, which unwind as a BaseException
    that is not an Exception): the run can go on later, unlike after an error."""
    return not isinstance(exc, (Exception, SystemExit, GeneratorExit))


def note_resume(exc: BaseException, run: RunDir) -> None:
    """Attach the command that continues ``run`` to an interrupt (``add_note``; the CLI prints notes
    on its one interrupted line). An interrupt inside an interrupted run keeps the innermost note."""
    if not getattr(exc, "__notes__", None):
        exc.__notes__ = [f"continue it with: mnistkit train --resume {shlex.quote(str(run.path))}"]


def resumed_state(run: RunDir, s: Session) -> TrainState:
    """The saved state of an interrupted run, restored into the session; a run interrupted before its
    first epoch was saved has none and starts again from epoch 0 with its saved config."""
    if not run.is_interrupted():
        return TrainState(resumed=True)
    return load_state(run, s.model, s.optimizer, s.scheduler)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python and torch; with ``deterministic`` also force deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# ----------------------------------------------------------------------------- the loop


def trainer_for(cfg: TrainConfig) -> Trainer:
    """The one place that chooses how a run is trained: :func:`run_epochs`, or full-batch L-BFGS
    (:mod:`~mnistkit.training.lbfgs_trainer`) for logistic regression unless minibatches are asked for.

    A trainer is a function of one shape: it finds the normalised training split in
    ``session.batches.x`` / ``.y``, appends one metrics row per epoch (or solver pass) to ``state``
    and calls the callbacks, so saving, logging, early stopping and the final artifacts stay the same."""
    if lbfgs_trainer.wanted(cfg):  # minibatch epochs under torchrun, where L-BFGS cannot share the work
        return functools.partial(lbfgs_trainer.train, cfg, fallback=run_epochs)
    return run_epochs


def run_epochs(s: EpochParts, state: TrainState, callbacks: Callback) -> None:
    """Epochs from ``state.epoch + 1``: train, time, validate, then the callbacks save, log and may stop.

    The one epoch loop: ``mnistkit train`` runs it over a :class:`Session`, the scikit-learn
    estimators over their arrays (:func:`mnistkit.training.arrays.minibatch_train`)."""
    callbacks.on_train_begin(state)
    for epoch in range(state.epoch + 1, s.epochs + 1):
        t0 = time.perf_counter()
        row = {"epoch": epoch, **train_one_epoch(s, epoch, callbacks)}
        if s.device.type == "cuda":
            torch.cuda.synchronize()  # so the epoch's time is the GPU's, not the launch queue's
        row["seconds"] = round(time.perf_counter() - t0, 4)
        state.train_seconds += row["seconds"]
        row["elapsed"] = round(state.train_seconds, 4)
        row["lr"] = current_lr(s.optimizer)
        row.update(s.validate(s.model))
        state.metrics.append(row)
        state.epoch = epoch
        callbacks.on_epoch_end(state)
        if state.stop:
            break
    callbacks.on_train_end(state)


def train_one_epoch(s: EpochParts, epoch: int, callbacks: Callback) -> dict:
    """One pass over the batches, in train mode; returns the epoch's mean loss and accuracy (percent)."""
    loss_sum = torch.zeros((), device=s.device, dtype=_sum_dtype(s.device))
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    callbacks.on_epoch_begin(epoch, s.batches.steps)
    with switched_mode(s.train_model, training=True):
        for step, (xb, yb) in enumerate(s.batches(epoch), start=1):
            loss, logits = train_step(s.train_model, s.optimizer, xb, yb, s.loss, s.autocast)
            if s.scheduler is not None:
                s.scheduler.step()
            if s.negative_weight:  # weigh the batch by its real images: a tensor, so still no host sync
                loss_sum.add_(loss.detach() * (yb != NEGATIVE).sum())
            else:
                loss_sum.add_(loss.detach(), alpha=len(yb))  # one in-place op, no host sync
            correct += _correct(logits.detach(), yb, s.task)
            callbacks.on_batch_end(epoch, step, loss)
    if s.dist is not None:
        loss_sum, correct = s.dist.sum_across_ranks(loss_sum, correct)
    seen = s.batches.seen
    return {"train_loss": float(loss_sum) / seen, "train_accuracy": 100.0 * int(correct) / seen}


def train_step(model, optimizer, xb, yb, loss_fn: Callable, autocast):
    """Forward, loss, backward, update. Returns the loss and logits (still on device).
    ``loss_fn(logits, labels)``: the mean loss of the batch (:func:`~mnistkit.training.session.training_loss`
    for ``mnistkit train``; the estimators add their penalty term)."""
    with autocast():
        logits = model(xb)
        loss = loss_fn(logits, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def _sum_dtype(device: torch.device) -> torch.dtype:
    """The epoch's loss sum adds hundreds of batch means: in float64, so its rounding stays far below
    the estimators' ``tol``, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _correct(logits, y, task):
    if task == "sequence":
        return exact_matches(logits, y)
    pred = (logits > 0).long() if task == "binary" else logits.argmax(1)
    return (pred == y).sum()


def conclude(cfg, run: RunDir, data, s: Session, state: TrainState, callbacks: CallbackList, plots: bool) -> RunResult:
    """The main process scores and writes the finished run; under torchrun the others wait for it."""
    if not s.is_main:
        assert s.dist is not None
        s.dist.barrier()
        train_seconds = round(state.train_seconds, 3)
        return RunResult(
            run.path,
            run.checkpoint,
            float("nan"),
            train_seconds,
            state.metrics,
            None,
            cfg,
            {"rank": s.dist.rank},
            s.model,
        )
    result = finish_run(cfg, run, data, s, state, callbacks.log, plots)
    if s.dist is not None:
        s.dist.barrier()
    return result
