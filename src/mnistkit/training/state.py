"""The training state: :class:`TrainState` (progress, early-stopping memory, metrics so far) and its
resumable file (``last.safetensors``): weights, optimiser, schedule and progress in one safetensors file.

Nothing is pickled. Tensors go in as tensors; everything else (step counts,
hyperparameters, scheduler fields, metrics so far) goes in the JSON metadata.
Randomness needs no saved state: every epoch re-seeds from ``(seed, epoch)``,
so a run resumed at an epoch boundary replays exactly what an uninterrupted
run would have done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnistkit.checkpoint import _unwrap, check_finite, load_tensors, save_tensors
from mnistkit.errors import CheckpointError
from mnistkit.runs import RunDir


@dataclass
class TrainState:
    """Where a run is: what the epoch loop and its callbacks share, and what ``--resume`` restores.

    ``epoch`` is the last finished epoch (the planned number once early stopping ended the run,
    so a resumed run trains no further); ``bad_epochs`` counts epochs without a better validation
    loss; ``best_weights`` are the model's tensors at ``best_val_loss`` (early stopping only).
    ``stop`` and ``resumed`` live in this process only.
    """

    epoch: int = 0
    metrics: list[dict] = field(default_factory=list)  # one row per finished epoch (metrics.jsonl)
    train_seconds: float = 0.0  # training time so far, validation excluded (s)
    best_val_loss: float | None = None
    bad_epochs: int = 0
    best_weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    stop: bool = False  # a callback asked to end the run after this epoch
    resumed: bool = False

    @property
    def last_row(self) -> dict:
        return self.metrics[-1] if self.metrics else {}

    @property
    def best_epoch(self) -> int | None:
        """The epoch whose weights ``best_weights`` holds (the first with ``best_val_loss``)."""
        if self.best_val_loss is None:
            return None
        return next((r["epoch"] for r in self.metrics if r.get("val_loss") == self.best_val_loss), None)

    def progress(self) -> dict:
        """The JSON part of the saved state (``progress`` in the file's metadata)."""
        return {
            "epoch": self.epoch,
            "metrics": self.metrics,
            "train_seconds": self.train_seconds,
            "best_val_loss": self.best_val_loss,
            "bad_epochs": self.bad_epochs,
        }


def save_state(run: RunDir, model, optimizer, scheduler, state: TrainState) -> Path:
    """Write ``last.safetensors`` atomically (the previous one survives any failure)."""
    tensors = {f"model.{k}": v for k, v in _unwrap(model).state_dict().items()}
    if state.best_weights is not None:
        tensors.update({f"best.{k}": v for k, v in state.best_weights.items()})
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
    meta = {
        "kind": "training-state",
        "progress": state.progress(),
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    return save_tensors(run.state, tensors, meta)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: The progress fields a resumed run reads, each with its check and what it must be.
_PROGRESS_FIELDS = {
    "epoch": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "metrics": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of objects"),
    "train_seconds": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "best_val_loss": (lambda v: v is None or _is_number(v), "null or a number"),
    "bad_epochs": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
}


def check_state_meta(meta: dict, path: Path, n_groups: int) -> None:
    """The state's metadata has the shape :func:`save_state` writes, so resuming cannot crash inside torch."""

    def bad(what: str):
        return CheckpointError(f"{path} is not a usable training state: {what}; start a new run instead of --resume")

    progress, opt = meta.get("progress"), meta.get("optimizer")
    if not isinstance(progress, dict):
        raise bad("'progress' is missing or not an object")
    for key, (check, expected) in _PROGRESS_FIELDS.items():
        if key not in progress or not check(progress[key]):
            raise bad(f"progress.{key} must be {expected}, got {str(progress.get(key))[:40]!r}")
    if (
        not isinstance(opt, dict)
        or not isinstance(opt.get("param_groups"), list)
        or not isinstance(opt.get("state"), dict)
    ):
        raise bad("'optimizer' must be an object with 'param_groups' (a list) and 'state' (an object)")
    groups = opt["param_groups"]
    if len(groups) != n_groups or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) and all(_is_int(p) for p in g["params"])
        for g in groups
    ):
        raise bad(f"optimizer.param_groups must be {n_groups} object(s) each listing its 'params' indices")
    if not all(isinstance(k, str) and k.isdigit() and isinstance(v, dict) for k, v in opt["state"].items()):
        raise bad("optimizer.state must map parameter indices to objects")
    if meta.get("scheduler") is not None and not isinstance(meta["scheduler"], dict):
        raise bad("'scheduler' must be null or an object")


def _same_kind(current, saved) -> bool:
    """A saved hyperparameter has the JSON kind of the live one (``betas`` a pair of numbers, ``lr`` a number)."""
    if isinstance(current, bool) or current is None or isinstance(current, str):
        return type(saved) is type(current)
    if _is_number(current) or torch.is_tensor(current):
        return _is_number(saved)
    if isinstance(current, (tuple, list)):
        return isinstance(saved, list) and len(saved) == len(current) and all(map(_same_kind, current, saved))
    return True


def _check_group_values(saved_groups: list, live_groups: list, path: Path) -> None:
    for i, (saved, live) in enumerate(zip(saved_groups, live_groups)):
        for key, current in live.items():
            if key != "params" and key in saved and not _same_kind(current, saved[key]):
                raise CheckpointError(
                    f"{path} is not a usable training state: optimizer.param_groups[{i}].{key} "
                    f"is {str(saved[key])[:40]!r}, expected a value like {current!r}"
                )


def load_state(run: RunDir, model, optimizer, scheduler) -> TrainState:
    """Restore model, optimiser and scheduler in place; return the run's :class:`TrainState`.

    Every fault of the file (tampered, truncated, fields of the wrong type) is one
    :class:`CheckpointError`; nothing is restored partially into a usable-looking state.
    """
    path = run.require_regular(run.state, CheckpointError, "training state")
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "training-state":
        raise CheckpointError(f"{path} is not a training-state file")
    check_state_meta(meta, path, len(optimizer.param_groups))
    _check_group_values(meta["optimizer"]["param_groups"], optimizer.param_groups, path)
    check_finite(tensors, path, prefix="model.")
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
            parts = k.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                raise CheckpointError(f"{path} has an unexpected tensor {k!r}; it is not a training state of ours")
            opt_state.setdefault(int(parts[1]), {})[parts[2]] = v
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
        if scheduler is not None and meta.get("scheduler") is not None:
            scheduler.load_state_dict(meta["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise CheckpointError(
            f"{path}: the optimizer or schedule state does not fit this run "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        ) from None
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    progress = {key: meta["progress"][key] for key in _PROGRESS_FIELDS}
    return TrainState(**progress, best_weights=best, resumed=True)
