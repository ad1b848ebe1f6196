"""Hyperparameter search on Optuna: :func:`tune`, the Python twin of ``mnistkit tune``.

>>> from mnistkit.tuning import tune
>>> summary = tune(model="mlp", trials=20, out="runs/tune-mlp")      # doctest: +SKIP
>>> summary["best"]["val_accuracy"], summary["best"]["test_accuracy"]  # doctest: +SKIP
(98.61, 98.7)

Pieces: :mod:`~mnistkit.tuning.space` (what is searched), :mod:`~mnistkit.tuning.study`
(storage, objective, worker loop), :mod:`~mnistkit.tuning.outputs` (files of the output
folder), :mod:`~mnistkit.tuning.progress` (the live view).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mnistkit.errors import ConfigError

#: Images carved from the training set to score trials (the test set is for the best trial only).
DEFAULT_VAL_SIZE = 10_000
DEFAULT_TRIALS = 50
DEFAULT_STUDY = "mnistkit"
#: How unpromising trials are stopped early (mnistkit.tuning.study.PRUNERS).
DEFAULT_PRUNER = "median"
#: Seconds between a running trial's heartbeats on a database storage.
DEFAULT_HEARTBEAT = 30


def tune(
    *,
    trials: int | None = None,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    space: str | Path | dict | None = None,
    workers: int = 1,
    pruner: str | None = None,
    out: str | Path = "runs/tune",
    heartbeat: int = DEFAULT_HEARTBEAT,
    sampler_seed: int | None = None,
    echo: bool = True,
    live: bool | None = None,
    plots: bool = True,
    **train_options,
) -> dict:
    """Search hyperparameters for one model; returns the summary also written to ``OUT/summary.json``.

    ``train_options`` are ``mnistkit train``'s options (``model``, ``dataset``, ``val_size``...): the
    base config every trial starts from; ``space`` (a TOML/YAML/JSON file, or the same table as
    a dict) replaces the model family's default search space. Rerunning with the same ``out`` (or ``storage``) and ``study``
    resumes; ``trials`` counts the study's finished trials, not this call's.

    When no trial completed, ``summary["best"]`` is None and ``summary["no_trial_why"]`` says why
    (the CLI prints it and exits 2). On KeyboardInterrupt the files of the trials done so far are
    written, then it re-raises.
    """
    from mnistkit.tuning.storage import mask_url, storage_url
    from mnistkit.tuning.study import quiet_optuna

    _check_counts(trials, timeout, workers, heartbeat)
    quiet_optuna()
    out = Path(out).absolute()
    explicit = {k: v for k, v in train_options.items() if v is not None}
    log = print if echo else (lambda *_: None)
    started = time.monotonic()  # the budget counts from here, the probe of its epochs included
    wanted = _wanted_settings(explicit, space, trials, pruner, timeout, log)
    study_name = study or DEFAULT_STUDY
    st, settings = _set_up_study(
        storage, out, heartbeat, study_name, sampler_seed, wanted, explicit, space, pruner, trials
    )
    storage_shown = mask_url(storage_url(storage, out))  # never the password
    log(
        f"Study {study_name!r} in {storage_shown}: {settings.base.model}, up to {settings.trials} trials"
        + (f", {timeout:g} s budget" if timeout else "")
        + (f", {workers} workers" if workers > 1 else "")
    )
    run = _Run(st, settings, out, timeout, workers, storage_shown, log, plots, started)
    opened = dict(storage=storage, study=study_name, heartbeat=heartbeat, sampler_seed=sampler_seed)
    run.trials(live, echo, {**opened, "per_worker": dict(explicit)})
    return run.conclude()


def _wanted_settings(explicit: dict, space, trials: int | None, pruner: str | None, timeout: float | None, log):
    """The study's settings as this command asks for them: the base config (tune's validation split
    by default) and the search space, the given one or the model's default sized to ``timeout``."""
    from mnistkit.config import resolve_config
    from mnistkit.tuning.space import parse_space, read_space_file
    from mnistkit.tuning.study import StudySettings, make_pruner

    base = resolve_config(**{"val_size": DEFAULT_VAL_SIZE, **explicit})
    if not base.val_size:
        raise ConfigError("tune scores trials on a validation split: give --val-size > 0 (default 10000)")
    if isinstance(space, dict):
        raw_space, space_label = space, "space"
    elif space is not None:
        raw_space, space_label = read_space_file(space), f"--space {space}"
    else:
        raw_space, space_label = _default_space(base, timeout, log), "search space"
    wanted = StudySettings(
        base, parse_space(raw_space, base.model, space_label), trials or DEFAULT_TRIALS, pruner or DEFAULT_PRUNER
    )
    make_pruner(wanted.pruner)  # validates the name before anything is created
    return wanted


def _default_space(base, timeout: float | None, log) -> dict:
    """The model's default space; under ``timeout``, with its epochs sized so several trials finish
    in the budget (from a probe of two training steps on this machine)."""
    from mnistkit.tuning.budget import TRIAL_SHARE, epochs_for_budget, seconds_per_epoch
    from mnistkit.tuning.space import default_space

    space = default_space(base.model)
    if timeout is None:
        return space
    epoch_seconds = seconds_per_epoch(base)
    sized = epochs_for_budget(space, epoch_seconds, timeout)
    if sized != space:
        epochs = sized["epochs"]
        log(
            f"Epochs searched: {epochs['low']} to {epochs['high']} (an epoch takes about {epoch_seconds:.1f} s here; "
            f"a trial may use {TRIAL_SHARE:.0%} of the {timeout:g} s budget)"
        )
    return sized


def _set_up_study(storage, out: Path, heartbeat, study_name, sampler_seed, wanted, explicit, space, pruner, trials):
    """Open the storage and create or join the study under its set-up lock; returns (study, settings)."""
    from mnistkit.tuning.storage import open_storage, set_up_storage
    from mnistkit.tuning.study import join_study

    return set_up_storage(
        storage,
        out,
        lambda: join_study(
            open_storage(storage, out, heartbeat),
            study_name,
            sampler_seed,
            wanted,
            explicit,
            space_given=space is not None,
            pruner_given=pruner is not None,
            trials=trials,
        ),
    )


class _Run:
    """One ``tune`` call once its study is set up: run the trials here or in workers under the live
    view, then write the output folder and say how it went."""

    def __init__(self, st, settings, out: Path, timeout, workers: int, storage_shown: str, log, plots: bool, started):
        self.st, self.settings, self.out, self.timeout, self.workers = st, settings, out, timeout, workers
        self.storage_shown, self.log, self.plots, self.started = storage_shown, log, plots, started

    def trials(self, live: bool | None, echo: bool, open_args: dict) -> None:
        """Run the trials; on Ctrl-C or SIGTERM write the files of those done so far, then re-raise."""
        import sys

        from mnistkit.training.loop import is_interrupt
        from mnistkit.tuning.progress import TuneProgress

        show_live = sys.stdout.isatty() if live is None else live
        try:
            with TuneProgress(self.st, self.settings.trials, self.timeout, self.workers, live=show_live, echo=echo):
                if self.workers == 1:
                    _run_here(self.st, self.settings, self.out, self.timeout, open_args, self.started)
                else:
                    _run_workers(self.st, self.settings, self.out, self.timeout, self.workers, open_args, self.log)
        except BaseException as exc:  # Ctrl-C is the CLI's Signalled, not a KeyboardInterrupt
            if not is_interrupt(exc):
                raise
            self.log("Interrupted: saving the trials done so far (rerun the same command to resume)")
            exc.__notes__ = ["rerun the same command to resume the study"]  # not the trial's
            self.write()
            raise

    def write(self) -> dict:
        from mnistkit.tuning.outputs import write_outputs

        return write_outputs(self.st, self.out, self.settings, self.storage_shown, self.log, plots=self.plots)

    def conclude(self) -> dict:
        """Write the outputs; the summary, with the best trial or why there is none."""
        from mnistkit.tuning.budget import why_no_trial_completed

        summary = self.write()
        summary["seconds"] = round(time.monotonic() - self.started, 1)
        best = summary["best"]
        if best:
            self.log(
                f"Best trial {best['number']}: validation {best['val_accuracy']:.2f} %, "
                f"test {best['test_accuracy']:.2f} %; config in {self.out / 'best.json'}, "
                f"report {self.out / 'report.html'}"
            )
        else:
            summary["no_trial_why"] = why_no_trial_completed(self.st, self.timeout, self.out)
            self.log(f"No trial completed: {summary['no_trial_why']}")
        return summary


def _check_counts(trials, timeout, workers, heartbeat) -> None:
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"--trials must be a positive whole number, got {trials!r}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive whole number, got {workers!r}")
    if not isinstance(heartbeat, int) or heartbeat < 1:
        raise ConfigError(f"--heartbeat must be a positive whole number of seconds, got {heartbeat!r}")


def _run_here(st, settings, out: Path, timeout, open_args: dict, started) -> None:
    from mnistkit.tuning.study import Worker, run_worker

    worker = Worker(out, timeout=timeout, storage=open_args["storage"], seed=open_args["sampler_seed"], started=started)
    run_worker(st, settings, worker)


def _run_workers(st, settings, out: Path, timeout, workers: int, open_args: dict, log) -> None:
    """K worker processes on this machine sharing the storage; torch's threads split between them.

    A worker that dies (killed, out of memory) has its running trial failed and queued again,
    as a heartbeat would on a database; what is still queued when all are gone runs here.
    """
    import multiprocessing
    import socket

    import torch

    from mnistkit.tuning.study import Worker, counts, fail_worker_trials, run_worker

    threads = max(1, torch.get_num_threads() // workers)
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i in range(workers):
        seed = None if open_args["sampler_seed"] is None else open_args["sampler_seed"] + i
        p = ctx.Process(
            target=_worker_main,
            name=f"mnistkit-tune-{i}",
            args=(dict(open_args, sampler_seed=seed), str(out), timeout, threads),
        )
        p.start()
        procs.append(p)
    try:
        alive = list(procs)
        while alive:
            for p in list(alive):
                p.join(timeout=0.5)
                if p.exitcode is None:
                    continue
                alive.remove(p)
                if p.exitcode != 0:
                    lost = fail_worker_trials(st, f"{socket.gethostname()}:{p.pid}")
                    log(
                        f"Worker {p.name} exited with code {p.exitcode}"
                        + (f"; trial(s) {', '.join(map(str, lost))} queued again" if lost else "")
                    )
        if counts(st).get("WAITING", 0):
            run_worker(st, settings, Worker(out, timeout=timeout, storage=open_args["storage"]))
    except KeyboardInterrupt:
        for p in procs:  # Ctrl-C reached them too; give them time to record their trials
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise


def _worker_main(open_args: dict, out: str, timeout, threads: int) -> None:
    """Entry point of a local worker process: open the study, run trials quietly."""
    import torch

    from mnistkit.tuning.storage import open_storage, set_up_storage
    from mnistkit.tuning.study import (
        SETTINGS_ATTR,
        StudySettings,
        Worker,
        make_pruner,
        open_study,
        quiet_optuna,
        run_worker,
    )

    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    quiet_optuna()
    storage, out_dir = open_args["storage"], Path(out)
    st = set_up_storage(
        storage,
        out_dir,
        lambda: open_study(
            open_storage(storage, out_dir, open_args["heartbeat"]), open_args["study"], open_args["sampler_seed"], 1
        ),
    )
    settings_holder = StudySettings.from_dict(st.user_attrs[SETTINGS_ATTR])
    st.pruner = make_pruner(settings_holder.pruner)
    per_worker = {k: v for k, v in open_args["per_worker"].items() if k in ("device", "data_dir", "download")}
    if per_worker:
        settings_holder.base = settings_holder.base.replace(**per_worker)
    try:
        worker = Worker(out_dir, timeout=timeout, storage=storage, seed=open_args["sampler_seed"])
        run_worker(st, settings_holder, worker)
    except KeyboardInterrupt:
        pass
