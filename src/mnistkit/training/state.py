"""Resumable training state: weights, optimiser, schedule and progress in one safetensors file.

Nothing is pickled. Tensors go in as tensors; everything else (step counts,
hyperparameters, scheduler fields, metrics so far) goes in the JSON metadata.
Randomness needs no saved state: every epoch re-seeds from ``(seed, epoch)``,
so a run resumed at an epoch boundary replays exactly what an uninterrupted
run would have done.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnistkit.checkpoint import _unwrap, load_tensors, save_tensors
from mnistkit.errors import CheckpointError

STATE_FILE = "last.safetensors"


def save_state(run_dir: Path, model, optimizer, scheduler, progress: dict, best_state: dict | None) -> Path:
    """Write ``run_dir/last.safetensors`` atomically (the previous one survives any failure)."""
    tensors = {f"model.{k}": v for k, v in _unwrap(model).state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    opt = optimizer.state_dict()
    opt_meta: dict = {"param_groups": opt["param_groups"], "state": {}}
    for pid, st in opt["state"].items():
        scalars = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[key] = value
        opt_meta["state"][str(pid)] = scalars
    meta = {"kind": "training-state", "progress": progress, "optimizer": opt_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None}
    return save_tensors(run_dir / STATE_FILE, tensors, meta)


def load_state(run_dir: Path, model, optimizer, scheduler) -> tuple[dict, dict | None]:
    """Restore model, optimiser and scheduler in place; return ``(progress, best_state)``."""
    path = Path(run_dir) / STATE_FILE
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "training-state":
        raise CheckpointError(f"{path} is not a training-state file")
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        _unwrap(model).load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this run's model: {str(exc).splitlines()[0]}") from None
    opt_state: dict = {}
    for pid, scalars in meta["optimizer"]["state"].items():
        opt_state[int(pid)] = dict(scalars)
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return meta["progress"], best
