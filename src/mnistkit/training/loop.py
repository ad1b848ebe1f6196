"""The training loop: fit -> one epoch -> one step, each a small function.

The dataset lives on the training device as one normalised tensor; batches are
index slices of a per-epoch permutation, so there is no DataLoader, no
per-sample Python and no host sync on the hot path except the tutorial's log
line every ``log_every`` steps.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from mnistkit.checkpoint import atomic_write_bytes, save_checkpoint
from mnistkit.config import TrainConfig, read_config_dict, resolve_config, resolve_device
from mnistkit.errors import ConfigError
from mnistkit.fileio import clean_stale_temporaries
from mnistkit.losses import classification_loss
from mnistkit.models import build_model, get_model_spec
from mnistkit.precision import autocast as _autocast
from mnistkit.preprocess import TUTORIAL_NORM, Normalization, normalize
from mnistkit.training import distributed
from mnistkit.training.augment import Augmentation
from mnistkit.training.optim import current_lr, make_optimizer, make_scheduler
from mnistkit.training.reporting import RunLog
from mnistkit.training.state import STATE_FILE, load_state, save_state

METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "elapsed")
CHECKPOINT_FILE = "model.safetensors"


@dataclass
class RunResult:
    """What a finished run reports; ``summary`` is also written to ``run_dir/summary.json``."""

    run_dir: Path
    checkpoint: Path
    test_accuracy: float
    train_seconds: float
    metrics: list[dict]
    evaluation: object
    config: TrainConfig
    summary: dict = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)


@dataclass
class TaskData:
    """Tensors and labels for the chosen task (all classes, a subset, or one-vs-rest)."""

    train_x: torch.Tensor  # uint8 [N, 28, 28]
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    norm: Normalization
    dataset_name: str


class StopTraining(Exception):
    """Raised by an epoch hook to end a run after this epoch, before the test evaluation.

    The epoch's state is already in ``last.safetensors``, so ``fit(resume=run_dir)`` can finish
    the run later (tuning scores the test set that way, for the best trial only).
    """


# ----------------------------------------------------------------------------- setup


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python and torch; with ``deterministic`` also force deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def prepare_data(cfg: TrainConfig, task: str, log=None) -> TaskData:
    """Load the dataset, carve the validation split, and apply ``--classes`` / ``--positive``."""
    from mnistkit.data import load_dataset, split_validation

    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, progress=log is not None)
    train, val = split_validation(ds.train, cfg.val_size, seed=cfg.seed) if cfg.val_size else (ds.train, None)
    names = list(ds.class_names)
    tx, ty, sx, sy = train.images, train.labels, ds.test.images, ds.test.labels
    vx, vy = (val.images, val.labels) if val is not None else (None, None)

    if cfg.positive is not None:
        _check_class("--positive", cfg.positive, names)
        pos = cfg.positive
        ty, sy = (ty == pos).long(), (sy == pos).long()
        vy = (vy == pos).long() if vy is not None else None
        names = [f"not {names[pos]}", names[pos]]
    elif cfg.classes is not None:
        for c in cfg.classes:
            _check_class("--classes", c, names)
        remap = torch.full((len(names),), -1, dtype=torch.long)
        remap[list(cfg.classes)] = torch.arange(len(cfg.classes))
        tx, ty = _subset(tx, ty, remap)
        sx, sy = _subset(sx, sy, remap)
        if vx is not None:
            vx, vy = _subset(vx, vy, remap)
        names = [names[c] for c in cfg.classes]
    elif task == "binary":
        raise ConfigError(
            f"model {cfg.model!r} is binary: choose the task with --positive N (one class "
            "against the rest) or --classes A,B (two classes)"
        )
    if task == "binary" and len(names) != 2:
        raise ConfigError(f"model {cfg.model!r} is binary but --classes names {len(names)} classes; give exactly two")

    if cfg.dry_run:  # a smoke test: a few batches of data
        tx, ty = tx[: 4 * cfg.batch_size], ty[: 4 * cfg.batch_size]
        sx, sy = sx[:512], sy[:512]
        if vx is not None:
            vx, vy = vx[:512], vy[:512]
    norm = TUTORIAL_NORM if cfg.norm == "tutorial" else ds.norm
    return TaskData(tx, ty, vx, vy, sx, sy, names, norm, ds.name)


def _check_class(flag: str, c: int, names: list[str]) -> None:
    if not 0 <= c < len(names):
        raise ConfigError(f"{flag} {c} is not a class index of this dataset (0..{len(names) - 1})")


def _subset(x: torch.Tensor, y: torch.Tensor, remap: torch.Tensor):
    keep = remap[y] >= 0
    return x[keep], remap[y[keep]]


def make_model(cfg: TrainConfig, num_classes: int):
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


def default_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    name = cfg.name or f"{Path(cfg.dataset).stem}-{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path("runs") / name


def prepare_run_dir(run_dir: Path, resuming: bool) -> Path:
    """Create the run directory; refuse to overwrite a finished run unless resuming.

    Temporaries of our atomic writes (``.NAME.*.tmp``) left by a killed run are deleted here.
    """
    if not resuming and (run_dir / CHECKPOINT_FILE).exists():
        raise ConfigError(
            f"run directory {run_dir} already holds a finished run; choose another --out "
            f"or continue it with --resume {run_dir}"
        )
    if not resuming and (run_dir / STATE_FILE).exists():
        raise ConfigError(f"run directory {run_dir} holds an interrupted run; continue it with --resume {run_dir}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {run_dir}: {exc.strerror or exc}") from None
    clean_stale_temporaries(run_dir)  # left by a kill -9 during an atomic write; nothing else writes here now
    return run_dir


# ----------------------------------------------------------------------------- the loop


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG for one epoch's shuffling and augmentation: a pure function of (seed, epoch),
    which is what makes resuming at an epoch boundary bit-identical."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_one_epoch(
    model,
    optimizer,
    scheduler,
    x,
    y,
    cfg: TrainConfig,
    task: str,
    epoch: int,
    log: RunLog,
    autocast,
    fill: float,
    step_limit: int | None = None,
) -> dict:
    """One pass over ``x`` (normalised, on device) in shuffled batches; returns loss/accuracy sums."""
    n = len(x)
    gen = epoch_generator(cfg.seed, epoch)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and other global-RNG users
    perm = torch.randperm(n, generator=gen).to(x.device)
    bs = cfg.batch_size
    dist_ctx = distributed.current()  # None in a single process
    steps = distributed.steps_per_epoch(n, bs, dist_ctx)
    steps = steps if step_limit is None else min(step_limit, steps)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    log.start_epoch(epoch, cfg.epochs, steps)
    augment = Augmentation.from_config(cfg)  # None when --augment is off
    model.train()
    for step in range(1, steps + 1):
        idx = perm[(step - 1) * bs : step * bs]
        if dist_ctx is not None:
            idx = dist_ctx.take_shard(idx)  # this rank's part of the global batch
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if augment is not None:
            xb = augment(xb, fill, gen)
        loss, logits = train_step(model, optimizer, xb, yb, task, cfg.label_smoothing, autocast)
        if scheduler is not None:
            scheduler.step()
        loss_sum.add_(loss.detach(), alpha=len(idx))  # one in-place op, no host sync
        correct += _correct(logits.detach(), yb, task)
        if cfg.log_every and step % cfg.log_every == 0:
            log.line(f"Epoch [{epoch}/{cfg.epochs}], Step [{step}/{steps}], Loss: {loss.item():.4f}")
        if step % 50 == 0 or step == steps:
            log.advance(50 if step % 50 == 0 else step % 50)
    if dist_ctx is not None:
        loss_sum, correct = dist_ctx.sum_across_ranks(loss_sum, correct)
    seen = min(n, steps * bs)
    return {"train_loss": float(loss_sum) / seen, "train_accuracy": 100.0 * int(correct) / seen}


def train_step(model, optimizer, xb, yb, task: str, label_smoothing: float, autocast):
    """Forward, loss, backward, update. Returns the loss and logits (still on device)."""
    with autocast():
        logits = model(xb)
        loss = classification_loss(logits.float(), yb, task, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def _correct(logits, y, task):
    pred = (logits > 0).long() if task == "binary" else logits.argmax(1)
    return (pred == y).sum()


@torch.inference_mode()
def validate(model, x, y, task: str, batch_size: int) -> dict:
    """Loss and accuracy on a normalised on-device split, in eval mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size]).float()
        yb = y[i : i + batch_size]
        loss_sum += float(classification_loss(logits, yb, task, reduction="sum"))
        correct += int(_correct(logits, yb, task))
    model.train()
    return {"val_loss": loss_sum / len(x), "val_accuracy": 100.0 * correct / len(x)}


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

    Parameters
    ----------
    config : TrainConfig, optional
        The full configuration; keyword ``overrides`` (and ``preset=``) build one otherwise.
    resume : path, optional
        A run directory holding ``last.safetensors``: continue that run with its saved config.
    echo : bool
        Print the tutorial-style log to stdout (it always goes to ``log.txt``).
    hooks : sequence of objects with ``on_epoch_end(epoch, row)``
        Called after each epoch is validated and saved, with its metrics row; a hook may raise
        (:class:`StopTraining`, or Optuna's ``TrialPruned``) to end the run there. Keeps
        pruning and similar concerns out of the loop.

    Examples
    --------
    >>> from mnistkit import fit
    >>> result = fit(model="logreg", epochs=1, echo=False)   # doctest: +SKIP
    >>> round(result.test_accuracy)                          # doctest: +SKIP
    92
    """
    cfg, run_dir = _resolve_run(config, resume, overrides)
    device = resolve_device(cfg.device)
    dist_ctx, device = distributed.init_distributed(device)  # (None, device) outside torchrun
    main = dist_ctx is None or dist_ctx.is_main  # only the main process prints and writes files
    distributed.check_batch_size(cfg.batch_size, dist_ctx)
    seed_everything(cfg.seed, cfg.deterministic)
    spec = get_model_spec(cfg.model)
    data = prepare_data(cfg, spec.task)
    model = make_model(cfg, len(data.class_names)).to(device)
    if main:
        run_dir = prepare_run_dir(run_dir, resuming=resume is not None)
        if resume is None:
            atomic_write_bytes(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2).encode())

    x = normalize(data.train_x.to(device), data.norm)
    y = data.train_y.to(device)
    vx = normalize(data.val_x.to(device), data.norm) if data.val_x is not None else None
    vy = data.val_y.to(device) if data.val_y is not None else None
    fill = -data.norm.mean / data.norm.std  # a blank pixel after normalisation

    steps_per_epoch = distributed.steps_per_epoch(len(x), cfg.batch_size, dist_ctx)
    step_limit = 2 if cfg.dry_run else None
    optimizer = make_optimizer(model.parameters(), cfg, device)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * (min(steps_per_epoch, step_limit or steps_per_epoch)))
    autocast = _autocast(device, cfg.amp)

    progress_state = {"epoch": 0, "metrics": [], "train_seconds": 0.0, "best_val_loss": None, "bad_epochs": 0}
    best_state = None
    if resume is not None:  # every rank loads the same state
        progress_state, best_state = load_state(run_dir, model, optimizer, scheduler)
    train_model = distributed.wrap_model(model, dist_ctx)  # DDP under torchrun, else the model itself
    train_model = torch.compile(train_model) if cfg.compile else train_model
    distributed.install_test_hooks(optimizer, dist_ctx.rank if dist_ctx else 0)

    log = RunLog(run_dir / "log.txt" if main else None, echo=echo and main, progress=progress)
    tb = _tensorboard(tensorboard) if main else None
    try:
        if resume is not None:
            log.line(f"Resuming {run_dir} after epoch {progress_state['epoch']}/{cfg.epochs}")
        for epoch in range(progress_state["epoch"] + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            row = {
                "epoch": epoch,
                **train_one_epoch(
                    train_model, optimizer, scheduler, x, y, cfg, spec.task, epoch, log, autocast, fill, step_limit
                ),
            }
            _sync(device)
            row["seconds"] = round(time.perf_counter() - t0, 4)
            progress_state["train_seconds"] += row["seconds"]
            row["elapsed"] = round(progress_state["train_seconds"], 4)
            row["lr"] = current_lr(optimizer)
            row.update(
                validate(model, vx, vy, spec.task, cfg.eval_batch_size)
                if vx is not None
                else {"val_loss": None, "val_accuracy": None}
            )
            progress_state["metrics"].append(row)
            stop, best_state = _early_stopping(cfg, progress_state, row, model, best_state)
            if dist_ctx is not None:
                stop = dist_ctx.agree(stop)  # rank 0 decides, so no rank trains on alone
            progress_state["epoch"] = epoch if not stop else cfg.epochs
            if main:
                _write_metrics(run_dir, progress_state["metrics"])
                save_state(run_dir, model, optimizer, scheduler, progress_state, best_state)
            if tb is not None:
                tb.log_epoch(row)
            for hook in hooks:
                hook.on_epoch_end(epoch, row)
            if stop:
                log.line(
                    f"Early stopping after epoch {epoch}: validation loss has not improved for "
                    f"{cfg.early_stopping} epochs; keeping the best weights"
                )
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        if not main:  # rank 0 evaluates and writes; the others wait for it, then leave
            dist_ctx.barrier()
            return RunResult(
                run_dir,
                run_dir / CHECKPOINT_FILE,
                float("nan"),
                round(progress_state["train_seconds"], 3),
                progress_state["metrics"],
                None,
                cfg,
                {"rank": dist_ctx.rank},
                model,
            )
        result = _finish(cfg, data, model, device, run_dir, progress_state, log, plots)
        if dist_ctx is not None:
            dist_ctx.barrier()
        return result
    finally:
        log.close()
        if tb is not None:
            tb.close()
        distributed.shutdown()


def _resolve_run(config, resume, overrides) -> tuple[TrainConfig, Path]:
    if resume is not None:
        run_dir = Path(resume)
        cfg_path = run_dir / "config.json"
        if not (run_dir / STATE_FILE).exists() or not cfg_path.exists():
            raise ConfigError(f"--resume {run_dir}: no interrupted run there (needs config.json and {STATE_FILE})")
        saved = read_config_dict(cfg_path, f"--resume {run_dir}: config.json")
        allowed = {"device", "data_dir"}
        bad = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
        if config is not None or bad:
            raise ConfigError(
                f"--resume continues a run with its saved config; drop {', '.join('--' + b.replace('_', '-') for b in bad) or 'the config'}"
            )
        saved.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return TrainConfig.from_dict(saved), run_dir
        except ConfigError as exc:
            raise ConfigError(f"--resume {run_dir}: config.json is not a usable config: {exc}") from None
        except (TypeError, ValueError) as exc:  # values of the wrong JSON type for the dataclass
            raise ConfigError(
                f"--resume {run_dir}: config.json is not a usable config ({' '.join(str(exc).split())[:120]})"
            ) from None
    cfg = config if config is not None else resolve_config(**overrides)
    if config is not None and overrides:
        cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    return cfg, default_run_dir(cfg)


def _early_stopping(cfg, st, row, model, best_state):
    """Track the best validation loss; returns (stop?, best weights so far)."""
    if not cfg.early_stopping or row["val_loss"] is None:
        return False, best_state
    if st["best_val_loss"] is None or row["val_loss"] < st["best_val_loss"]:
        st["best_val_loss"], st["bad_epochs"] = row["val_loss"], 0
        return False, {k: v.detach().clone() for k, v in model.state_dict().items()}
    st["bad_epochs"] += 1
    return st["bad_epochs"] >= cfg.early_stopping, best_state


def _finish(cfg, data: TaskData, model, device, run_dir: Path, st: dict, log: RunLog, plots: bool) -> RunResult:
    """Score on the test split, print the tutorial's accuracy line, write checkpoint and reports."""
    from mnistkit.evaluation import evaluate

    spec_task = getattr(model, "mnistkit_task", "multiclass")
    ev = evaluate(
        model, data.test_x, data.test_y, data.norm, data.class_names, spec_task, "test", cfg.eval_batch_size, device
    )
    cal = calibration_step(model, data, spec_task, cfg.eval_batch_size, device, log)
    log.line(f"Accuracy of the model on the {ev.n} test images: {ev.accuracy:.2f} %")  # the tutorial's last line
    if ev.binary:
        b = ev.binary
        log.line(f"Precision: {b['precision']:.2f} %, Recall: {b['recall']:.2f} %, ROC AUC: {b['roc_auc']:.4f}")
    final = st["metrics"][-1] if st["metrics"] else {}
    metrics = {
        "test_accuracy": ev.accuracy,
        "test_loss": ev.loss,
        "train_seconds": round(st["train_seconds"], 3),
        "epochs_run": len(st["metrics"]),
        "val_accuracy": final.get("val_accuracy"),
        "binary": ev.binary,
        "calibration": cal.to_dict(),
    }
    meta = {
        "dataset": data.dataset_name,
        "norm": data.norm.to_dict(),
        "class_names": data.class_names,
        "config": cfg.to_dict(),
        "metrics": metrics,
    }
    if cal.temperature is not None:
        meta["temperature"] = cal.temperature  # Checkpoint.temperature: predict and serve divide logits by it
    ckpt = save_checkpoint(run_dir / CHECKPOINT_FILE, model, meta)
    atomic_write_bytes(
        run_dir / "eval.json", json.dumps({**ev.to_dict(), "calibration": cal.to_dict()}, indent=2).encode()
    )
    summary = {
        "dataset": data.dataset_name,
        "model": cfg.model,
        "preset": cfg.preset,
        "epochs": cfg.epochs,
        "test_accuracy": ev.accuracy,
        "train_seconds": round(st["train_seconds"], 3),
        "checkpoint": str(ckpt),
        "run_dir": str(run_dir),
        "device": str(device),
        "n_train": len(data.train_x),
        "n_test": ev.n,
        "binary": ev.binary,
        **cal.to_dict(),
    }
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    if plots:
        _save_plots(run_dir, st["metrics"], ev, data, model, log)
    return RunResult(run_dir, ckpt, ev.accuracy, round(st["train_seconds"], 3), st["metrics"], ev, cfg, summary, model)


def calibration_step(model, data: TaskData, task: str, batch_size: int, device, log: RunLog):
    """After training: fit the softmax temperature on the validation split (when there is one) and
    measure the expected calibration error before and after it on validation and test."""
    from mnistkit.calibration import calibrate
    from mnistkit.inference import predict_logits

    def logits_and_labels(x, y):
        return predict_logits(model, x, data.norm, batch_size, device), y.long().cpu()

    val = logits_and_labels(data.val_x, data.val_y) if data.val_x is not None and len(data.val_x) else None
    cal = calibrate(task, val, {"test": logits_and_labels(data.test_x, data.test_y)})
    if cal.temperature is not None:  # without a split the tutorial's output stays as it was (ECE: eval.json)
        ece = ", ".join(f"{split} {d['before']:.2f} % -> {d['after']:.2f} %" for split, d in cal.ece.items())
        log.line(
            f"Calibration: temperature {cal.temperature:.3f} fitted on the validation split; "
            f"expected calibration error ({cal.bins} bins): {ece}"
        )
    return cal


def _save_plots(run_dir, metrics, ev, data: TaskData, model, log: RunLog) -> None:
    """Curves, confusion matrix, worst mistakes and (logreg) weight images, when matplotlib is installed."""
    try:
        import matplotlib  # noqa: F401

        from mnistkit.plots import save_run_plots
    except ImportError:
        log.line("(plots skipped: install mnistkit[plots] for curves, confusion matrix and mistakes)")
        return
    probs, pred = ev.probabilities, ev.predictions
    true = data.test_y.long()
    wrong = (pred != true).nonzero().flatten()
    order = probs[wrong, pred[wrong]].argsort(descending=True)[:36]
    sel = wrong[order]
    mistakes = {
        "images": data.test_x[sel].numpy(),
        "true": true[sel].numpy(),
        "pred": pred[sel].numpy(),
        "prob": probs[sel, pred[sel]].numpy(),
    }
    weights = None
    if getattr(model, "mnistkit_name", "") == "logreg":
        weights = model.linear.weight.detach().float().cpu().numpy()
    save_run_plots(
        run_dir,
        metrics=metrics,
        confusion=ev.confusion,
        class_names=data.class_names,
        mistakes=mistakes,
        weights=weights,
    )


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite metrics.jsonl and metrics.csv atomically (small files; crash-safe)."""
    atomic_write_bytes(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(run_dir / "metrics.csv", buf.getvalue().encode())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _tensorboard(log_dir):
    if not log_dir:
        return None
    from mnistkit.tb import TensorBoardLogger

    return TensorBoardLogger(log_dir)
