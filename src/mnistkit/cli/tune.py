"""``mnistkit tune``: search hyperparameters with Optuna; one machine or many workers on one study."""

from __future__ import annotations

import click

from mnistkit.cli.options import GroupedCommand, LazyChoice, RecipeOption, model_options_from, print_json_line
from mnistkit.cli.train import train as _train
from mnistkit.config import OPTION_GROUPS
from mnistkit.errors import MnistkitError
from mnistkit.tuning import DEFAULT_HEARTBEAT, DEFAULT_PRUNER, DEFAULT_STUDY, DEFAULT_TRIALS, DEFAULT_VAL_SIZE

#: train options that make no sense for a search (each trial has its own folder, log and test-free end)
NOT_TUNE_OPTIONS = {
    "out",
    "name",
    "resume",
    "tensorboard",
    "quiet",
    "as_json",
    "log_every",
    "early_stopping",
    "config_file",
}


def _pruners() -> tuple[str, ...]:
    from mnistkit.tuning.study import PRUNERS

    return PRUNERS


@click.command(cls=GroupedCommand, default_group="Search", groups=("Search", *OPTION_GROUPS))
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    cls=RecipeOption,
    default_text=str(DEFAULT_TRIALS),
    help="Finished trials the study should have (a rerun resumes towards it).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds after which no new trial starts; running ones stop at their next epoch end.",
)
@click.option(
    "--study",
    "study_name",
    default=None,
    cls=RecipeOption,
    default_text=DEFAULT_STUDY,
    help="Study name in the storage.",
)
@click.option(
    "--storage",
    default=None,
    help="Where the study lives, shared by workers on many machines: postgresql://USER@HOST/DB (or "
    "mysql://, sqlite:///, a journal file). Give the password in PGPASSWORD or ~/.pgpass, not in the "
    "URL: a command line is visible to every user of the machine (ps).",
    cls=RecipeOption,
    default_text="OUT/study.journal",
)
@click.option(
    "--space",
    type=click.Path(dir_okay=False),
    default=None,
    help="Search space file (TOML, YAML or JSON) replacing the model's default space.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes on this machine sharing the study; torch threads are split.",
)
@click.option(
    "--pruner",
    type=LazyChoice(_pruners),
    default=None,
    cls=RecipeOption,
    default_text=DEFAULT_PRUNER,
    help="Stop unpromising trials early, judged on validation accuracy per epoch.",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=1),
    default=DEFAULT_HEARTBEAT,
    show_default=True,
    help="Seconds between a trial's heartbeats on a database; a trial silent for twice that is failed and retried.",
)
@click.option("--sampler-seed", type=int, default=None, help="Seed of the TPE sampler (reproducible searches).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    cls=RecipeOption,
    default_text="runs/tune-STUDY",
    help="Output folder (storage, trials.csv, best.json, best-run/, plots, report).",
)
@click.option(
    "--plots/--no-plots",
    default=True,
    cls=RecipeOption,
    default_text="on",
    help="Draw Optuna's plots (PNG) for the report.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the final line.")
@click.option("--json", "as_json", is_flag=True, help="End stdout with one JSON object: the study's summary.")
def tune(
    trials,
    timeout,
    study_name,
    storage,
    space,
    workers,
    pruner,
    heartbeat,
    sampler_seed,
    out,
    plots,
    quiet,
    as_json,
    hidden,
    activation,
    dropout,
    model_option,
    **opts,
):
    """Search hyperparameters for a model with Optuna and keep the best as a training config.

    Trials are scored on a validation split carved from the training data (--val-size, its
    default below); only the best trial is scored on the test set, at the end. Rerunning the same
    command resumes the study; Ctrl-C stops after saving what is done. With --timeout the default
    space's epochs are sized so several trials fit the budget; when no trial completed (e.g. a
    budget too short for one trial) it says why and what budget would do, and exits 2.

    Workers on many machines share a study through --storage: start them all with the same
    command, at once if you like; they take turns to set the study up, then share its trials.
    A password in a storage URL is masked in everything printed or saved.
    """
    from mnistkit.tuning import tune as run_tune

    model_options = model_options_from(hidden, activation, dropout, model_option)
    if model_options:
        opts["model_options"] = model_options
    summary = run_tune(
        trials=trials,
        timeout=timeout,
        study=study_name,
        storage=storage,
        space=space,
        workers=workers,
        pruner=pruner,
        heartbeat=heartbeat,
        sampler_seed=sampler_seed,
        out=out or f"runs/tune-{study_name or DEFAULT_STUDY}",
        echo=not (quiet or as_json),
        plots=plots,
        **opts,
    )
    _print_outcome(summary, quiet, as_json)


def _print_outcome(summary: dict, quiet: bool, as_json: bool) -> None:
    """The final line (--quiet) or JSON object (--json); a search that found nothing is not a
    success: exit 2 with why, as for input that cannot work."""
    best = summary.get("best")
    if quiet and best:
        click.echo(_best_line(best))
    if as_json:
        print_json_line(summary)
    if not best:
        raise MnistkitError(f"no trial completed: {summary['no_trial_why']}")


def _best_line(best: dict | None) -> str:
    """``--quiet``'s one line: the best trial's validation and test accuracy."""
    if not best:
        return "No trial completed"
    return f"Best trial {best['number']}: validation {best['val_accuracy']:.2f} %, test {best['test_accuracy']:.2f} %"


def _shared_train_options() -> list:
    """``mnistkit train``'s options (one definition), with the help of --val-size saying tune's default."""
    import copy

    params = []
    for p in _train.params:
        if p.name in NOT_TUNE_OPTIONS:
            continue
        if p.name == "val_size":
            p = copy.copy(p)
            p.default_text = str(DEFAULT_VAL_SIZE)  # type: ignore[attr-defined]  # a RecipeOption
            p.help_from = lambda: "Validation split from train that scores trials: count or fraction."  # type: ignore[attr-defined]
        params.append(p)
    return params


tune.params[:0] = _shared_train_options()
