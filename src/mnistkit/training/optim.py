"""The optimiser factory (one, for ``mnistkit train`` and the estimators) and the per-step
learning-rate schedule factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from mnistkit.config import TrainConfig


def param_groups(params, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only (``ndim >= 2``), not on biases or
    normalisation scales and shifts (as nanoGPT's ``configure_optimizers`` and timm's
    ``param_groups_weight_decay`` do): shrinking a bias or a BatchNorm scale towards 0 does not
    limit the function's complexity, it only biases it.

    Without weight decay it is one group, as before, so training states saved then still resume.
    The decayed group comes first; empty groups are left out.
    """
    params = [p for p in params if p.requires_grad]
    if not weight_decay:
        return [{"params": params, "weight_decay": 0.0}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class OptimizerRecipe(Protocol):
    """The fields an optimiser is built from: a :class:`TrainConfig`, or the estimators'
    :class:`~mnistkit.training.arrays.MinibatchOptions`."""

    optimizer: str  # a name of mnistkit.config.OPTIMIZERS
    lr: float
    weight_decay: float
    momentum: float  # sgd only
    nesterov: bool  # sgd only


def make_optimizer(params, cfg: OptimizerRecipe, device: torch.device) -> torch.optim.Optimizer:
    """Build the configured optimiser over :func:`param_groups`, using the fused single-kernel
    implementation when the device supports it (fewer per-step kernel launches and Python overhead)."""
    groups = param_groups(params, cfg.weight_decay)
    kw: dict = {"lr": cfg.lr}
    cls: Callable[..., torch.optim.Optimizer]
    if cfg.optimizer == "adam":
        cls = torch.optim.Adam
    elif cfg.optimizer == "adamw":
        cls = torch.optim.AdamW
    elif cfg.optimizer == "sgd":
        cls = torch.optim.SGD
        kw.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        return torch.optim.Adagrad(groups, **kw)
    try:
        return cls(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # fused not supported for this device/dtype
        return cls(groups, foreach=device.type != "cpu", **kw)


#: The fewest steps a one-cycle schedule is planned over.
MIN_ONECYCLE_STEPS = 8


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """A per-step schedule, or None. OneCycle warms up for 25 % of the steps then anneals; it is
    planned over at least :data:`MIN_ONECYCLE_STEPS` (with 4 steps or fewer its warm-up would end
    at step 0, a division by zero in torch: a ``--dry-run`` of two epochs)."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=max(total_steps, MIN_ONECYCLE_STEPS),
            pct_start=0.25,
            div_factor=25.0,
            final_div_factor=1e3,
            cycle_momentum=cfg.optimizer == "sgd",
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return None


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
