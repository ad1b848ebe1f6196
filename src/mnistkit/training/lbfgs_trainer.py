"""``--solver lbfgs``: the trainer that fits logistic regression in one call by full-batch L-BFGS.

``mnistkit train --model logreg`` and :class:`mnistkit.estimators.LogisticRegression` share
:func:`mnistkit.solvers.lbfgs.fit_logistic` (preconditioned, CSR matmuls for mostly-zero
pixels), so the CLI gives the estimator's model in the estimator's time: MNIST in about a
second instead of ten epochs of minibatch Adam. :func:`train` is a trainer of the shape
:func:`mnistkit.training.loop.trainer_for` chooses: the fit is recorded as one "epoch" (its
metrics row carries the iterations) and the callbacks and final artifacts are those of any run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from mnistkit.config import LBFGS_MODELS, TrainConfig
from mnistkit.evaluation import loss_and_accuracy
from mnistkit.inference import switched_mode
from mnistkit.losses import logits_to_probabilities
from mnistkit.preprocess import Normalization, normalize
from mnistkit.solvers.lbfgs import fit_logistic
from mnistkit.training.callbacks import CallbackList
from mnistkit.training.session import Session
from mnistkit.training.state import TrainState

MAX_ITER = 100  # L-BFGS iterations, scikit-learn's default (MNIST converges in about 40)
DRY_RUN_ITER = 3  # --dry-run: a smoke test
TOL = 1e-4  # largest absolute gradient entry at the optimum, scikit-learn's default


def wanted(cfg: TrainConfig) -> bool:
    """Does the config ask for L-BFGS? ``auto`` does for logistic regression without minibatch-only options."""
    if cfg.solver == "auto":
        return cfg.model in LBFGS_MODELS and not cfg.minibatch_only_options()
    return cfg.solver == "lbfgs"


def train(cfg: TrainConfig, s: Session, state: TrainState, callbacks: CallbackList, fallback: Callable) -> None:
    """The trainer: fit ``s.model`` by L-BFGS in one call (under torchrun: ``fallback``, the epoch loop)."""
    if s.dist is not None:
        callbacks.log.line(
            "Solver: minibatches (L-BFGS fits in one process; under torchrun the ranks share minibatches)"
        )
        fallback(s, state, callbacks)
        return
    callbacks.on_train_begin(state)
    row = fit_linear(s.model, s.batches.x, s.batches.y, cfg, s.norm, callbacks)
    row.update(s.validate(s.model))
    state.metrics.append(row)
    state.train_seconds += row["seconds"]
    state.epoch = s.epochs  # the run is finished: nothing is left to resume
    callbacks.on_epoch_end(state)
    callbacks.on_train_end(state)


def penalty_strength(cfg: TrainConfig, n_train: int) -> float:
    """``lam`` of ``mean CE + lam / 2 * ||W||^2`` (``W`` on pixels in [0, 1]): ``--weight-decay`` when
    set, else scikit-learn's default ``C = 1`` (``lam = 1 / n_train``), finite on separable data too."""
    return cfg.weight_decay if cfg.weight_decay > 0 else 1.0 / n_train


def fit_linear(model, x, y, cfg: TrainConfig, norm: Normalization, callbacks: CallbackList) -> dict:
    """Fit ``model`` (logreg or binary-logreg) in place on normalised ``x``; return its metrics row.

    The solver sees the pixels in [0, 1] (``x`` with the normalisation undone, zero where the
    image is blank, so it takes the CSR path) and the weights are mapped back to ``x``. So the
    problem is scikit-learn's usual MNIST set-up, ``LogisticRegression(C=1).fit(pixels / 255)``,
    whatever ``--norm`` is: the CLI and the estimator give the same model.
    """
    n = len(x)
    max_iter = DRY_RUN_ITER if cfg.dry_run else MAX_ITER
    lam = penalty_strength(cfg, n)
    log = callbacks.log
    log.line(f"Fitting {cfg.model} by full-batch L-BFGS (penalty {lam:.3g}, tol {TOL}, at most {max_iter} iterations)")
    start = time.perf_counter()
    blank = float(normalize(torch.zeros(1, 1, dtype=torch.uint8, device=x.device), norm))  # exactly as in x
    unit = norm.std  # a normalised step per pixel value in [0, 1]
    pixels = (x.reshape(n, -1) - blank).mul_(unit)
    result = fit_logistic(model, pixels, y, lam=lam, tol=TOL, max_iter=max_iter)
    del pixels
    with torch.no_grad():
        weight = result.weight * unit
        model.linear.weight.copy_(weight)
        model.linear.bias.copy_(result.bias - blank * weight.sum(1))
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = round(time.perf_counter() - start, 4)
    row = {"epoch": 1, **_train_scores(model, x, y, cfg.eval_batch_size), "lr": None, "seconds": seconds}
    row.update(elapsed=seconds, iterations=result.n_iter, converged=result.converged)
    status = "converged" if result.converged else f"stopped at max_iter={max_iter} before tol={TOL}"
    log.line(
        f"L-BFGS: {result.n_iter} iterations in {seconds:.2f} s ({status}), "
        f"train loss {row['train_loss']:.4f}, train accuracy {row['train_accuracy']:.2f} %"
    )
    return row


@torch.inference_mode()
def _train_scores(model, x, y, batch_size: int) -> dict:
    """Mean loss and accuracy (percent) on the normalised training split, by the rule evaluation and
    validation use (:func:`mnistkit.evaluation.loss_and_accuracy`); only the batching is here, since
    the inputs are already normalised tensors rather than uint8 images."""
    task = model.mnistkit_task
    with switched_mode(model, training=False):
        logits = torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])
    predictions = logits_to_probabilities(logits, task).argmax(1)
    loss, accuracy = loss_and_accuracy(logits, y.long(), task, predictions)
    return {"train_loss": loss, "train_accuracy": accuracy}
