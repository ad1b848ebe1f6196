"""Epochs of shuffled minibatches with scikit-learn's stopping rule (the estimators' loop).

``mnistkit train`` has its own loop (schedules, augmentation, run directories, DDP);
this one is the estimators': data of any kind (numpy, scipy sparse), a penalty term, and
scikit-learn's stopping rule, with the optimisers of :mod:`mnistkit.training.optim`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mnistkit.losses import classification_loss
from mnistkit.solvers.sparse import as_tensor, issparse, rows


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


@dataclass
class MinibatchResult:
    epochs: int
    converged: bool  # stopped by the patience rule rather than max_epochs
    loss_curve: list[float] = field(default_factory=list)  # mean training loss per epoch
    validation_scores: list[float] = field(default_factory=list)  # accuracy per epoch, with a validation split


def make_optimizer(model: torch.nn.Module, opts: MinibatchOptions, device: torch.device) -> torch.optim.Optimizer:
    """The training package's optimiser factory, with the estimators' settings (no weight decay:
    the penalty term is scikit-learn's)."""
    from mnistkit.config import TrainConfig
    from mnistkit.training.optim import make_optimizer as build

    cfg = TrainConfig(optimizer=opts.optimizer, lr=opts.lr, momentum=0.9, weight_decay=0.0)
    return build(model.parameters(), cfg, device)


def minibatch_train(model, X, target: np.ndarray, opts: MinibatchOptions, X_val=None, y_val=None) -> MinibatchResult:
    """Train ``model`` in place; with ``X_val``/``y_val`` keep the weights of the best validation accuracy.

    Stops when the epoch loss (or, with a validation split, its accuracy) has not improved by
    ``opts.tol`` for ``opts.patience`` epochs, or after ``opts.max_epochs``.
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, opts, device)
    n = X.shape[0]
    gen = np.random.default_rng(opts.seed)
    y_all = torch.from_numpy(target).to(device)
    x_all = None if issparse(X) else as_tensor(X, opts.dtype, device)  # dense data lives on the device once
    result = MinibatchResult(epochs=0, converged=False)
    best, best_state, stall = np.inf, None, 0
    model.train()  # the only mode switch during training; predictions use coefficients / eval mode
    while result.epochs < opts.max_epochs and stall < opts.patience:
        result.epochs += 1
        result.loss_curve.append(_one_epoch(model, optimizer, X, x_all, y_all, gen.permutation(n), opts))
        if X_val is not None:
            result.validation_scores.append(_accuracy(model, X_val, y_val, opts.dtype, device))
            current = -result.validation_scores[-1]
        else:
            current = result.loss_curve[-1]
        if current < best - opts.tol:  # scikit-learn's MLP rule
            best, stall = current, 0
            if X_val is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stall += 1
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.converged = stall >= opts.patience
    return result


def _one_epoch(model, optimizer, X, x_all, y_all, order: np.ndarray, opts: MinibatchOptions) -> float:
    """One pass in shuffled batches; returns the mean per-sample loss (penalty included)."""
    device = y_all.device
    total = 0.0
    for start in range(0, len(order), opts.batch_size):
        idx = order[start : start + opts.batch_size]
        picked = torch.from_numpy(idx).to(device)
        xb = rows(X, idx, opts.dtype, device) if x_all is None else x_all[picked]
        loss = classification_loss(model(xb), y_all[picked], opts.task)
        if opts.penalty is not None:
            loss = loss + opts.penalty(model, len(idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(order)


def _accuracy(model, X_val, y_val, dtype, device) -> float:
    model.eval()
    with torch.inference_mode():
        pred = model(rows(X_val, slice(None), dtype, device)).argmax(1).cpu().numpy()
    model.train()
    return float(np.mean(pred == y_val))
