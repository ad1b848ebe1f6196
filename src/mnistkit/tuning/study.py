"""Studies on Optuna: joining one, the objective, one worker's loop, and the study's settings.

A study lives in its storage (:mod:`~mnistkit.tuning.storage`): by default an Optuna journal
file in the output folder (several local processes may append to it at once), or a database
URL (PostgreSQL, MySQL) shared by workers on many machines. The settings that define the
search (the base training config and the search space) are stored in the study itself when it
is created, so a worker started later with only ``--storage URL --study NAME`` searches exactly
the same space, and a rerun resumes.

Each trial is one ordinary training run (:func:`mnistkit.training.fit`) in its own run directory
under ``OUT/trials/``; a per-epoch hook reports validation accuracy for pruning and stops the run
before its test evaluation, which only the best trial gets, once, at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mnistkit.config import TrainConfig
from mnistkit.errors import ConfigError
from mnistkit.tuning.space import Param, parse_space, space_to_dict, suggest
from mnistkit.tuning.storage import stale_trial_retry

TRIALS_DIR = "trials"
SETTINGS_ATTR = "mnistkit_settings"
PRUNERS = ("median", "hyperband", "none")
#: Options a worker may set for itself; the others must match the study's stored settings.
PER_WORKER_OPTIONS = ("device", "data_dir", "download", "amp", "compile")


@dataclass
class StudySettings:
    """What defines a study's search: stored in the study so every worker agrees on it."""

    base: TrainConfig
    params: list[Param]
    trials: int
    pruner: str = "median"

    def to_dict(self) -> dict:
        return {
            "base_config": self.base.to_dict(),
            "space": space_to_dict(self.params),
            "trials": self.trials,
            "pruner": self.pruner,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StudySettings:
        base = TrainConfig.from_dict(d["base_config"])
        return cls(
            base,
            parse_space(d["space"], base.model, "stored search space"),
            int(d["trials"]),
            d.get("pruner", "median"),
        )


@dataclass
class Worker:
    """Where and how one process runs trials."""

    out: Path
    timeout: float | None = None  # seconds after which no new trial starts
    storage: str | None = None  # the --storage URL (None: the journal file in ``out``)
    seed: int | None = None  # sampler seed (None: random)
    echo: bool = False  # print each trial's training log
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def time_left(self) -> float | None:
        return None if self.timeout is None else self.timeout - (time.monotonic() - self.started)


# ----------------------------------------------------------------------------- storage and study


def quiet_optuna() -> None:
    """Optuna logs every trial (and a traceback per failed one) and warns about experimental
    features; mnistkit reports trials itself, with a failed trial's error in its ``error`` attribute."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def make_pruner(name: str):
    """``median``: stop a trial below the median of earlier ones at the same epoch; ``hyperband``."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")


def open_study(storage, name: str, seed: int | None, trials: int):
    """Create the study or load it (rerunning resumes); maximises validation accuracy.

    The pruner comes from the study's settings (:func:`agree_settings`).
    """
    import optuna

    # TPE over the joint space (layers make it conditional: group=True); fewer random start-up
    # trials than Optuna's 10 so a 15-minute budget gets to the model-based part.
    sampler = optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=max(3, min(8, trials // 4))
    )
    return optuna.create_study(
        study_name=name, storage=storage, direction="maximize", sampler=sampler, load_if_exists=True
    )


def agree_settings(
    study, wanted: StudySettings, explicit: dict, space_given: bool, pruner_given: bool = False
) -> StudySettings:
    """The study's stored settings, checked against what this command asked for; stored if new.

    ``explicit`` are the training options given on this command line; a worker joining an
    existing study may leave them out, but may not contradict them. The study's pruner is
    set from the settings, so every worker prunes alike.
    """
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, wanted.to_dict())
        study.pruner = make_pruner(wanted.pruner)
        return wanted
    settings = StudySettings.from_dict(stored)
    base = settings.base.to_dict()
    clash = [
        k for k, v in explicit.items() if k not in PER_WORKER_OPTIONS and k in base and _normal(base[k]) != _normal(v)
    ]
    if space_given and space_to_dict(wanted.params) != stored["space"]:
        clash.append("space")
    if pruner_given and wanted.pruner != settings.pruner:
        base["pruner"] = settings.pruner
        clash.append("pruner")
    if clash:
        shown = ", ".join(f"{k}={base.get(k, '(file)')!r}" for k in clash)
        raise ConfigError(
            f"study {study.study_name!r} already tunes with {shown}; drop those options to join it, "
            "or pick another --study"
        )
    per_worker = {k: v for k, v in explicit.items() if k in PER_WORKER_OPTIONS}
    if per_worker:
        settings.base = settings.base.replace(**per_worker)
    study.pruner = make_pruner(settings.pruner)
    return settings


def join_study(
    storage,
    name: str,
    seed: int | None,
    wanted: StudySettings,
    explicit: dict,
    *,
    space_given: bool,
    pruner_given: bool,
    trials: int | None,
):
    """The study and its settings: created with ``wanted`` (and the presets queued), or the stored
    study joined once this command's options agree with it (:func:`agree_settings`).

    Run it under the storage's set-up lock (:func:`mnistkit.tuning.storage.set_up_storage`): of
    workers started together, exactly one then finds the study new, stores its settings and
    queues the presets; the others join what it made.
    """
    from mnistkit.tuning.space import preset_points

    study = open_study(storage, name, seed, wanted.trials)
    fresh = not study.trials and SETTINGS_ATTR not in study.user_attrs
    settings = agree_settings(study, wanted, explicit, space_given, pruner_given)
    if fresh:  # a new study starts from the hand-tuned presets the space can express
        for preset, point in preset_points(settings.params, settings.base).items():
            study.enqueue_trial(point, user_attrs={"preset": preset})
    if trials is not None and trials != settings.trials:  # a rerun may ask for more (or fewer) trials
        settings.trials = trials
        study.set_user_attr(SETTINGS_ATTR, settings.to_dict())
    return study, settings


def _normal(v):
    return list(v) if isinstance(v, tuple) else v


# ----------------------------------------------------------------------------- one trial


class PruningHook:
    """Per-epoch hook for :func:`mnistkit.training.fit`: report validation accuracy, prune, and stop
    after the last epoch before the test evaluation (the test set is for the best trial only).

    A trial the ``--timeout`` budget cuts short is pruned too (Optuna has no other state for it),
    and says so in its user attributes (:mod:`~mnistkit.tuning.budget`)."""

    def __init__(self, trial, epochs: int, time_left=None):
        self.trial = trial
        self.epochs = epochs
        self.time_left = time_left  # callable -> seconds left of --timeout, or None
        self.value: float | None = None
        self.started = time.monotonic()  # an epoch's wall-clock time includes loading and validation

    def on_epoch_end(self, epoch: int, row: dict) -> None:
        import optuna

        from mnistkit.training import StopTraining

        self.value = row["val_accuracy"]
        self.trial.report(self.value, epoch)
        if epoch < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: validation accuracy {self.value:.2f} %")
        left = self.time_left() if self.time_left is not None else None
        if epoch < self.epochs and left is not None and left <= 0:
            # the budget is spent: a trial that started in time does not run on for many minutes
            self._record_cut(epoch)
            raise optuna.TrialPruned(f"stopped after epoch {epoch}: the --timeout budget is spent")
        if epoch >= self.epochs:
            raise StopTraining

    def _record_cut(self, epoch: int) -> None:
        from mnistkit.tuning.budget import CUT_BY, TIMEOUT

        seconds = (time.monotonic() - self.started) / epoch
        attrs = {CUT_BY: TIMEOUT, "epochs_done": epoch, "epochs_planned": self.epochs, "epoch_seconds": seconds}
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)


def trial_dir(out: Path, number: int) -> Path:
    return out / TRIALS_DIR / f"{number:04d}"


def trial_config(settings: StudySettings, trial, out: Path) -> TrainConfig:
    """The complete training config of one trial: the base config with the sampled values."""
    train_opts, model_opts = suggest(trial, settings.params)
    base = settings.base
    return base.replace(
        **train_opts,
        model_options={**base.model_options, **model_opts},
        out=str(trial_dir(out, trial.number)),
        name=None,
        early_stopping=0,
        preset=None,
    )


def make_objective(settings: StudySettings, worker: Worker):
    """The function Optuna calls per trial: train, report each epoch, return final validation accuracy."""

    def objective(trial):
        import optuna
        import torch

        from mnistkit.runs import RunDir
        from mnistkit.training import StopTraining, fit

        trial.set_user_attr("worker", worker.name)
        trial.set_user_attr("torch_threads", torch.get_num_threads())  # CPU float sums can depend on it
        cfg = trial_config(settings, trial, worker.out)
        trial.set_user_attr("config", reproducible(cfg))
        run_dir = Path(cfg.out)
        if run_dir.exists():  # left by an interrupted earlier attempt with this number
            shutil.rmtree(run_dir)
        hook = PruningHook(trial, cfg.epochs, worker.time_left)
        try:
            fit(cfg, echo=worker.echo, progress=False, plots=False, hooks=[hook])
        except StopTraining:
            pass
        except optuna.TrialPruned:
            RunDir(run_dir).state.unlink(missing_ok=True)  # a pruned trial is never the best
            raise
        except ConfigError as exc:  # this point of the space is not a valid recipe: say why in the study
            trial.set_user_attr("error", str(exc))
            raise
        if hook.value is None or hook.value != hook.value:  # NaN: the run diverged
            raise optuna.TrialPruned("validation accuracy is not a number (the run diverged)")
        return hook.value

    return objective


def reproducible(cfg: TrainConfig) -> dict:
    """The config as ``best.json`` holds it: complete, without this trial's output folder."""
    return {**cfg.to_dict(), "out": None, "name": None}


def drop_stale_states(study, out: Path) -> None:
    """Keep the training state (for the final test run) of the best finished trial only.

    Works from one snapshot of the study and only touches finished trials, so a trial still
    training in another process keeps its files whatever the timing.
    """
    import optuna

    from mnistkit.runs import RunDir

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished()]
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value).number if complete else None
    for t in done:
        if t.number != best:
            RunDir(trial_dir(out, t.number)).state.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the worker loop


def counts(study) -> dict[str, int]:
    """Trials by state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    result: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        result[t.state.name] = result.get(t.state.name, 0) + 1
    return result


def should_start(study, target: int, worker: Worker) -> bool:
    """Start another trial? Yes while retries wait, or fewer than ``target`` trials are finished or running.

    Failed trials do not count (a retry or a new trial replaces them), up to ``target`` failures.
    """
    c = counts(study)
    if c.get("WAITING", 0):
        return True
    left = worker.time_left()
    if left is not None and left <= 0:
        return False
    if c.get("FAIL", 0) - _retried(study) >= max(3, target):
        return False
    return sum(c.get(s, 0) for s in ("COMPLETE", "PRUNED", "RUNNING")) < target


def _retried(study) -> int:
    """Failed trials that were queued again (a dead worker's), which are not the config's fault."""
    return sum(
        1 for t in study.get_trials(deepcopy=False) if "failed_trial" in t.system_attrs and t.state.name != "WAITING"
    )


def run_worker(study, settings: StudySettings, worker: Worker, stop=None) -> None:
    """Run trials one at a time until the study has its trials, time is up, or ``stop()`` is true.

    Then wait for other workers' running trials (a dead one's is failed by its heartbeat and
    queued again, and this worker runs it), so the study is complete when this returns.
    """
    from optuna.storages import fail_stale_trials

    objective = make_objective(settings, worker)
    target = settings.trials
    while stop is None or not stop():
        fail_stale_trials(study)
        with TrialStart(worker) as start:
            if should_start(study, target, worker):
                study.optimize(
                    start.releasing(objective),
                    n_trials=1,
                    catch=(ConfigError,),
                    callbacks=[lambda s, t: drop_stale_states(s, worker.out)],
                )
                continue
        c = counts(study)
        if not c.get("RUNNING", 0):
            break
        left = worker.time_left()
        if left is not None and left < -3600:  # long past the budget: stop waiting for others
            break
        time.sleep(1.0)
    drop_stale_states(study, worker.out)


class TrialStart:
    """The storage's lock (:func:`mnistkit.tuning.storage.storage_lock`), held from the count in
    :func:`should_start` until Optuna has created the trial, and released as the trial begins.

    Without it two workers that both see ``target - 1`` trials both start one, and the study
    overshoots ``--trials`` by up to one trial per extra worker. Optuna creates the trial (or
    takes a queued one) before it calls the objective, so releasing at the objective's first
    line covers exactly the check and the creation, not the training.
    """

    def __init__(self, worker: Worker):
        from mnistkit.tuning.storage import storage_lock

        self._lock = storage_lock(worker.storage, worker.out)
        self._held = False

    def __enter__(self) -> TrialStart:
        self._lock.__enter__()
        self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.__exit__(None, None, None)

    def __exit__(self, *exc) -> None:
        self.release()

    def releasing(self, objective):
        """``objective``, releasing the lock first: the trial exists by then."""

        def run(trial):
            self.release()
            return objective(trial)

        return run


def fail_worker_trials(study, worker_name: str) -> list[int]:
    """Fail the running trials of a worker known to be dead and queue them again; returns their numbers.

    For local workers on a journal file (no heartbeat there): the parent process sees a child die.
    """
    import copy

    import optuna

    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == worker_name:
            try:
                study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            with warnings.catch_warnings():  # "experimental" since Optuna 2.8; stable in practice
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                stale_trial_retry()(study, copy.deepcopy(study._storage.get_trial(t._trial_id)))
            failed.append(t.number)
    return failed
