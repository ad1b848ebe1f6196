"""The end of a run: score the test split once, calibrate, and write the finished run's files.

Writes the checkpoint (``model.safetensors``, with the config, class names, normalisation and
metrics inside), ``eval.json``, ``summary.json`` and, with matplotlib, the plots. The names
come from :class:`mnistkit.runs.RunDir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnistkit.checkpoint import save_checkpoint
from mnistkit.config import TrainConfig
from mnistkit.data.task import TaskData
from mnistkit.evaluation import EvalResult, evaluate
from mnistkit.runs import RunDir
from mnistkit.training.runlog import RunLog
from mnistkit.training.session import Session
from mnistkit.training.state import TrainState

#: the most confident mistakes drawn in plots/mistakes.png (a 6 x 6 grid)
MISTAKES_SHOWN = 36


@dataclass
class RunResult:
    """What a finished run reports; ``summary`` is also written to ``run_dir/summary.json``."""

    run_dir: Path
    checkpoint: Path
    test_accuracy: float
    train_seconds: float
    metrics: list[dict]
    evaluation: EvalResult | None
    config: TrainConfig
    summary: dict = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)


def finish_run(
    cfg: TrainConfig, run: RunDir, data: TaskData, session: Session, state: TrainState, log: RunLog, plots: bool = True
) -> RunResult:
    """Score on the test split, print the tutorial's accuracy line, write checkpoint and reports."""
    model = session.model
    ev = evaluate(
        model,
        data.test.images,
        data.test.labels,
        data.norm,
        data.class_names,
        session.task,
        "test",
        cfg.eval_batch_size,
        session.device,
    )
    cal = calibration_step(model, data, session.task, cfg.eval_batch_size, log)
    log_test_scores(ev, log)
    train_seconds = round(state.train_seconds, 3)
    ckpt = save_checkpoint(run.checkpoint, model, checkpoint_meta(cfg, data, state, ev, cal, train_seconds))
    run.write_eval({**ev.to_dict(), "calibration": cal.to_dict()})
    summary = run_summary(cfg, run, data, ev, cal, train_seconds, ckpt, session.device)
    run.write_summary(summary)
    if plots:
        save_plots(run, state.metrics, ev, data, model, log)
    return RunResult(run.path, ckpt, ev.accuracy, train_seconds, state.metrics, ev, cfg, summary, model)


def log_test_scores(ev: EvalResult, log: RunLog) -> None:
    """The tutorial's last line (the test accuracy), and for a binary task what accuracy hides."""
    log.line(f"Accuracy of the model on the {ev.n} test images: {ev.accuracy:.2f} %")
    if ev.binary:
        b = ev.binary
        log.line(f"Precision: {b['precision']:.2f} %, Recall: {b['recall']:.2f} %, ROC AUC: {b['roc_auc']:.4f}")


def checkpoint_meta(cfg: TrainConfig, data: TaskData, state: TrainState, ev: EvalResult, cal, train_seconds) -> dict:
    """The checkpoint's metadata: what rebuilds the model and reads its inputs (config, classes,
    normalisation, temperature) and how it scored, so a checkpoint alone explains itself."""
    metrics = {
        "test_accuracy": ev.accuracy,
        "test_loss": ev.loss,
        "train_seconds": train_seconds,
        "epochs_run": len(state.metrics),
        "val_accuracy": state.last_row.get("val_accuracy"),
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
    return meta


def run_summary(
    cfg: TrainConfig, run: RunDir, data: TaskData, ev: EvalResult, cal, train_seconds, ckpt, device
) -> dict:
    """``summary.json``: the run at a glance, flat, for scripts, reports and ``mnistkit show``."""
    return {
        "dataset": data.dataset_name,
        "model": cfg.model,
        "preset": cfg.preset,
        "epochs": cfg.epochs,
        "test_accuracy": ev.accuracy,
        "train_seconds": train_seconds,
        "checkpoint": str(ckpt),
        "run_dir": str(run.path),
        "device": str(device),
        "n_train": len(data.train),
        "n_test": ev.n,
        "binary": ev.binary,
        **cal.to_dict(),
    }


def calibration_step(model, data: TaskData, task: str, batch_size: int, log: RunLog):
    """After training: fit the softmax temperature on the validation split (when there is one) and
    measure the expected calibration error before and after it on validation and test."""
    from mnistkit.calibration import Calibration, calibrate
    from mnistkit.inference import predict_logits

    if task == "sequence":  # a line's confidence is judged by the unsure threshold chosen when packaged
        return Calibration(None)

    def logits_and_labels(split):
        return predict_logits(model, split.images, data.norm, batch_size), split.labels.long().cpu()

    val = logits_and_labels(data.val) if data.val is not None and len(data.val) else None
    cal = calibrate(task, val, {"test": logits_and_labels(data.test)})
    if cal.temperature is not None:  # without a split the tutorial's output stays as it was (ECE: eval.json)
        log.line(cal.describe())
    return cal


def confident_mistakes(ev: EvalResult, data: TaskData, limit: int = MISTAKES_SHOWN) -> dict:
    """The test images the model got wrong with the highest probability, most confident first."""
    assert ev.probabilities is not None and ev.predictions is not None
    probs, pred = ev.probabilities, ev.predictions
    true = data.test.labels.long()
    wrong = (pred != true).nonzero().flatten()
    order = probs[wrong, pred[wrong]].argsort(descending=True)[:limit]
    sel = wrong[order]
    return {
        "images": data.test.images[sel].numpy(),
        "true": true[sel].numpy(),
        "pred": pred[sel].numpy(),
        "prob": probs[sel, pred[sel]].numpy(),
    }


def save_plots(run: RunDir, metrics: list[dict], ev: EvalResult, data: TaskData, model, log: RunLog) -> None:
    """Curves, confusion matrix, worst mistakes and (logreg) weight images, when matplotlib is installed."""
    try:
        import matplotlib  # noqa: F401

        from mnistkit.plots import save_run_plots
    except ImportError:
        log.line("(plots skipped: install mnistkit[plots] for curves, confusion matrix and mistakes)")
        return
    weights = None
    mistakes = confident_mistakes(ev, data) if ev.probabilities is not None else None
    if getattr(model, "mnistkit_name", "") == "logreg":
        weights = model.linear.weight.detach().float().cpu().numpy()
    save_run_plots(
        run.path,
        metrics=metrics,
        confusion=ev.confusion,
        class_names=data.class_names,
        mistakes=mistakes,
        weights=weights,
    )
