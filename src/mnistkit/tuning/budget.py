"""What a ``--timeout`` budget allows: the default space's epochs sized to it before a study starts,
and, when no trial completed, why and what budget would have let one finish.

A trial cut by the budget is recorded as pruned (Optuna has no other state for a trial stopped
early), with ``cut_by = "timeout"``, the epochs it ran and planned, and its seconds per epoch in
its user attributes; the progress lines and the final message read them from there.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from mnistkit.config import TrainConfig

#: The share of the budget one trial of the default space may take, so that several trials complete.
TRIAL_SHARE = 0.25
#: The probe times the base model with its own batch size; trials may be wider or take smaller
#: batches, and validation adds time: an epoch is planned at this many times the probe's.
PROBE_MARGIN = 2.0
#: The attribute of a trial cut by the budget, and its value.
CUT_BY, TIMEOUT = "cut_by", "timeout"


def seconds_per_epoch(base: TrainConfig) -> float:
    """A training epoch's seconds for the base config, from a ``--dry-run`` probe (two steps, timed
    on this machine, in a temporary folder) scaled to the whole training split."""
    from mnistkit.training import fit
    from mnistkit.training.session import DRY_RUN_STEPS, load_training_data

    n_train = len(load_training_data(base).train)
    with tempfile.TemporaryDirectory(prefix="mnistkit-probe-") as tmp:
        probe = base.replace(epochs=1, dry_run=True, out=str(Path(tmp) / "probe"), name=None, early_stopping=0)
        result = fit(probe, echo=False, progress=False, plots=False)
    step = result.metrics[0]["seconds"] / DRY_RUN_STEPS
    return step * math.ceil(n_train / base.batch_size)


def epochs_for_budget(space: dict, epoch_seconds: float, timeout: float) -> dict:
    """``space`` (file form) with its ``epochs`` range capped so that one trial fits in
    :data:`TRIAL_SHARE` of ``timeout``; unchanged when the whole range fits."""
    epochs = space.get("epochs")
    if not isinstance(epochs, dict) or "high" not in epochs:
        return space
    fits = max(1, int(timeout * TRIAL_SHARE / (PROBE_MARGIN * max(epoch_seconds, 1e-6))))
    if fits >= epochs["high"]:
        return space
    return {**space, "epochs": {"low": min(epochs["low"], fits), "high": fits}}


def budget_needed(epoch_seconds: float, epochs: int) -> int:
    """Seconds of ``--timeout`` that let one trial of ``epochs`` finish: its epochs and a margin of
    a quarter for loading data, validation and the final test, rounded up to ten seconds."""
    return math.ceil(epoch_seconds * epochs * 1.25 / 10.0) * 10


def cut_line(attrs: dict) -> str | None:
    """``stopped by the --timeout budget after epoch 3 of 15 (38 s an epoch)`` for a trial cut by the
    budget, else None."""
    if attrs.get(CUT_BY) != TIMEOUT:
        return None
    return (
        f"stopped by the --timeout budget after epoch {attrs['epochs_done']} of {attrs['epochs_planned']} "
        f"({attrs['epoch_seconds']:.0f} s an epoch)"
    )


def why_no_trial_completed(study, timeout: float | None, out: Path) -> str:
    """One line: why the study has no completed trial, and what to change."""
    trials = study.get_trials(deepcopy=False)
    cut = [t for t in trials if t.user_attrs.get(CUT_BY) == TIMEOUT]
    if cut and timeout is not None:
        t = cut[0]
        attrs = t.user_attrs
        need = budget_needed(attrs["epoch_seconds"], attrs["epochs_planned"])
        return (
            f"the --timeout {timeout:g} s budget ran out during trial {t.number}, after epoch "
            f"{attrs['epochs_done']} of {attrs['epochs_planned']} ({attrs['epoch_seconds']:.0f} s an epoch); "
            f"one such trial needs about --timeout {need}, a search several times that (or fewer epochs: --space)"
        )
    states = sorted({t.state.name.lower() for t in trials}) or ["none run"]
    return f"trials {', '.join(states)}; see {out / 'trials.csv'}"
