"""Training on the estimators' arrays: numpy or scipy-sparse rows, a penalty term and
scikit-learn's stopping rule, run by the one epoch loop (:func:`mnistkit.training.loop.run_epochs`).

``mnistkit train`` and the estimators share the loop, its train step, its mode switch and its
optimiser factory; what differs is plugged in: the batches (:class:`ArrayBatches`), the loss
(the penalty added), the validation (accuracy on held-out rows) and the stopping rule
(:class:`ToleranceStopping`, a callback).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from mnistkit.inference import switched_mode
from mnistkit.losses import classification_loss
from mnistkit.solvers.sparse import as_tensor, issparse, rows
from mnistkit.training.callbacks import Callback, CallbackList
from mnistkit.training.loop import run_epochs
from mnistkit.training.optim import make_optimizer
from mnistkit.training.session import EpochParts
from mnistkit.training.state import TrainState


@dataclass
class MinibatchOptions:
    """How to train: batches, the stopping rule, the optimiser. Units in the comments."""

    batch_size: int  # rows per step
    max_epochs: int
    tol: float  # minimum improvement of the epoch loss (or validation accuracy) that resets the patience
    patience: int  # epochs without such an improvement before stopping (scikit-learn's n_iter_no_change)
    seed: int  # shuffling
    optimizer: str = "adam"  # a name of mnistkit.config.OPTIMIZERS
    lr: float = 1e-3
    task: str = "multiclass"  # or "binary"
    dtype: torch.dtype = torch.float32
    #: the regulariser added to each batch's mean loss: ``penalty(model, rows_in_batch)``
    penalty: Callable[[torch.nn.Module, int], torch.Tensor] | None = None
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # none: the penalty term is scikit-learn's


@dataclass
class MinibatchResult:
    epochs: int
    converged: bool  # stopped by the patience rule rather than max_epochs
    loss_curve: list[float] = field(default_factory=list)  # mean training loss per epoch
    validation_scores: list[float] = field(default_factory=list)  # accuracy per epoch, with a validation split


def minibatch_train(model, X, target: np.ndarray, opts: MinibatchOptions, X_val=None, y_val=None) -> MinibatchResult:
    """Train ``model`` in place; with ``X_val``/``y_val`` keep the weights of the best validation accuracy.

    Stops when the epoch loss (or, with a validation split, its accuracy) has not improved by
    ``opts.tol`` for ``opts.patience`` epochs, or after ``opts.max_epochs``. The model's
    train/eval mode is as it was before.
    """
    device = next(model.parameters()).device
    parts = EpochParts(
        model=model,
        train_model=model,
        optimizer=make_optimizer(model.parameters(), opts, device),
        scheduler=None,
        batches=ArrayBatches(X, target, opts.batch_size, opts.seed, opts.dtype, device),
        loss=_penalised_loss(model, opts),
        task=opts.task,
        negative_weight=0.0,
        autocast=contextlib.nullcontext,
        device=device,
        dist=None,
        epochs=opts.max_epochs,
        validate=_no_validation if X_val is None else _accuracy_on(X_val, y_val, opts.dtype, device),
    )
    stopping = ToleranceStopping(opts.tol, opts.patience, model, monitor="val_score" if X_val is not None else None)
    state = TrainState()
    run_epochs(parts, state, CallbackList([stopping]))
    return MinibatchResult(
        epochs=len(state.metrics),
        converged=stopping.stalled >= opts.patience,
        loss_curve=[row["train_loss"] for row in state.metrics],
        validation_scores=[row["val_score"] for row in state.metrics if "val_score" in row],
    )


class ArrayBatches:
    """Shuffled batches of rows of ``X`` (numpy or scipy sparse) and their labels, on ``device``.

    Dense data is copied to the device once and sliced there; sparse rows are densified per batch.
    One numpy generator draws every epoch's order, as scikit-learn's does, so an estimator's
    shuffles depend only on its ``random_state``.
    """

    def __init__(self, X, target: np.ndarray, batch_size: int, seed: int, dtype: torch.dtype, device: torch.device):
        self.X, self.batch_size, self.dtype, self.device = X, batch_size, dtype, device
        self.y = torch.from_numpy(target).to(device)
        self.dense = None if issparse(X) else as_tensor(X, dtype, device)
        self.gen = np.random.default_rng(seed)
        self.seen = X.shape[0]
        self.steps = math.ceil(self.seen / batch_size)

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.gen.permutation(self.seen)
        for start in range(0, self.seen, self.batch_size):
            idx = order[start : start + self.batch_size]
            picked = torch.from_numpy(idx).to(self.device)
            xb = rows(self.X, idx, self.dtype, self.device) if self.dense is None else self.dense[picked]
            yield xb, self.y[picked]


class ToleranceStopping(Callback):
    """scikit-learn's MLP stopping rule: stop once the monitored score has not improved by ``tol`` for
    ``patience`` epochs. It watches the training loss, or with ``monitor`` a validation accuracy
    (higher is better), and then keeps the weights of its best epoch."""

    def __init__(self, tol: float, patience: int, model: torch.nn.Module, monitor: str | None = None):
        self.tol, self.patience, self.model, self.monitor = tol, patience, model, monitor
        self.best, self.stalled = math.inf, 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        row = state.last_row
        current = row["train_loss"] if self.monitor is None else -row[self.monitor]
        if current < self.best - self.tol:
            self.best, self.stalled = current, 0
            if self.monitor is not None:
                self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.stalled += 1
        state.stop = self.stalled >= self.patience

    def on_train_end(self, state: TrainState) -> None:
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


def _penalised_loss(model: torch.nn.Module, opts: MinibatchOptions) -> Callable:
    """The batch's mean loss plus ``opts.penalty`` (scikit-learn's regulariser), in the model's dtype."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = classification_loss(logits, labels, opts.task)
        return value if opts.penalty is None else value + opts.penalty(model, len(labels))

    return loss


def _no_validation(model: torch.nn.Module) -> dict:
    return {}


def _accuracy_on(X_val, y_val, dtype: torch.dtype, device: torch.device) -> Callable[[torch.nn.Module], dict]:
    """The validation of early stopping: ``val_score``, the accuracy (a fraction, as scikit-learn's
    ``validation_scores_``) on the held-out rows, in eval mode."""

    @torch.inference_mode()
    def validate(model: torch.nn.Module) -> dict:
        with switched_mode(model, training=False):
            pred = model(rows(X_val, slice(None), dtype, device)).argmax(1).cpu().numpy()
        return {"val_score": float(np.mean(pred == y_val))}

    return validate
