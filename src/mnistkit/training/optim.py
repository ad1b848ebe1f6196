"""Optimiser and per-step learning-rate schedule factories."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnistkit.config import TrainConfig


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Build the configured optimiser, using the fused single-kernel implementation when the
    device supports it (fewer per-step kernel launches and Python overhead)."""
    kw: dict = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    cls: Callable[..., torch.optim.Optimizer]
    if cfg.optimizer == "adam":
        cls = torch.optim.Adam
    elif cfg.optimizer == "adamw":
        cls = torch.optim.AdamW
    elif cfg.optimizer == "sgd":
        cls = torch.optim.SGD
        kw.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        return torch.optim.Adagrad(params, **kw)
    params = list(params)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # fused not supported for this device/dtype
        return cls(params, foreach=device.type != "cpu", **kw)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """A per-step schedule, or None. OneCycle warms up for 25 % of the steps then anneals."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=max(total_steps, 1),
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
