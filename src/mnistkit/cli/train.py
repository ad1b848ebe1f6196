"""``mnistkit train``: train a model and write its run directory."""

from __future__ import annotations

import click

from mnistkit.cli.options import (
    CountOrFraction,
    GroupedCommand,
    IntList,
    KeyValue,
    LazyChoice,
    RecipeOption,
    dataset_help,
    model_options_from,
    print_json_line,
)
from mnistkit.config import ACTIVATION_NAMES, DEVICES, NORMS, OPTIMIZERS, PRESETS, SCHEDULES, SOLVERS, option_help


def _option(*names: str, **kw):
    """A ``train`` option: shown under its group, its default read from the config and the registries."""
    return click.option(*names, cls=RecipeOption, **kw)


def _model_names() -> list[str]:
    from mnistkit.models import list_models

    return list_models()


def _model_help() -> str:
    return "The network to train (`mnistkit models` describes each)."


DATA, MODEL, OPTIM, AUGMENT, RUN, OUTPUT = "Data", "Model", "Optimizer", "Augmentation", "Execution", "Output"


@click.command(cls=GroupedCommand)
@_option("--dataset", default=None, group=DATA, field="dataset", help_from=dataset_help())
@_option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    group=DATA,
    help="Folder to look in first for dataset files.",
)
@_option("--download/--no-download", default=None, group=DATA, field="download", help="Download missing files.")
@_option(
    "--norm",
    type=click.Choice(NORMS),
    default=None,
    group=DATA,
    field="norm",
    help="tutorial: (x-0.5)/0.5; dataset: the dataset's mean/std.",
)
@_option(
    "--val-size",
    type=CountOrFraction(),
    default=None,
    group=DATA,
    field="val_size",
    help="Validation split from train: count or fraction.",
)
@_option("--positive", type=int, default=None, group=DATA, help="Binary task: this class against the rest.")
@_option("--classes", type=IntList(), default=None, group=DATA, help="Train on these classes only, e.g. 3,8.")
@_option(
    "--model", type=LazyChoice(_model_names, "model"), default=None, group=MODEL, field="model", help_from=_model_help
)
@_option(
    "--hidden",
    type=IntList(),
    default=None,
    group=MODEL,
    model_option="hidden",
    help="Hidden sizes, one per layer, e.g. 512,256,128.",
)
@_option(
    "--activation",
    type=click.Choice(ACTIVATION_NAMES),
    default=None,
    group=MODEL,
    model_option="activation",
    help="Hidden-layer activation.",
)
@_option("--dropout", type=float, default=None, group=MODEL, model_option="dropout", help="Dropout probability.")
@_option(
    "--model-option",
    "model_option",
    type=KeyValue(),
    multiple=True,
    group=MODEL,
    help="Any model option as KEY=VALUE (repeatable), e.g. widths=[32,64].",
)
@_option(
    "--init-from",
    type=str,
    default=None,
    group=MODEL,
    field="init_from",
    metavar="CHECKPOINT|RUN_DIR",
    help=option_help("init_from"),
)
@_option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default=None,
    group=MODEL,
    help="A tuned recipe; flags override it (the preset's model options merge with --hidden etc.).",
)
@_option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    group=MODEL,
    help="Start from a saved config: a run's config.json or `mnistkit tune`'s best.json; flags override it.",
)
@_option(
    "--solver",
    type=click.Choice(SOLVERS),
    default=None,
    group=OPTIM,
    field="solver",
    help="auto: full-batch L-BFGS for logreg/binary-logreg (minibatches under torchrun or with --augment, "
    "--label-smoothing, --early-stopping); minibatches for every other model.",
)
@_option(
    "--epochs", type=click.IntRange(min=1), default=None, group=OPTIM, field="epochs", help="Passes over the data."
)
@_option(
    "--batch-size", type=click.IntRange(min=1), default=None, group=OPTIM, field="batch_size", help="Global batch size."
)
@_option("--lr", type=float, default=None, group=OPTIM, field="lr", help="Peak learning rate.")
@_option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, group=OPTIM, field="optimizer", help="")
@_option("--momentum", type=float, default=None, group=OPTIM, field="momentum", help="SGD momentum.")
@_option("--nesterov", is_flag=True, default=None, group=OPTIM, field="nesterov", help="Nesterov momentum (sgd).")
@_option("--weight-decay", type=float, default=None, group=OPTIM, field="weight_decay", help="")
@_option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=None,
    group=OPTIM,
    field="schedule",
    help="Per-step learning-rate schedule.",
)
@_option("--label-smoothing", type=float, default=None, group=OPTIM, field="label_smoothing", help="")
@_option(
    "--early-stopping",
    type=click.IntRange(min=0),
    default=None,
    group=OPTIM,
    field="early_stopping",
    help="Patience in epochs on validation loss (needs --val-size); 0 = off.",
)
@_option("--augment/--no-augment", default=None, group=AUGMENT, field="augment", help=option_help("augment"))
@_option("--aug-shift", type=int, default=None, group=AUGMENT, field="aug_shift", help=option_help("aug_shift"))
@_option("--aug-rotate", type=float, default=None, group=AUGMENT, field="aug_rotate", help=option_help("aug_rotate"))
@_option("--aug-scale", type=float, default=None, group=AUGMENT, field="aug_scale", help=option_help("aug_scale"))
@_option("--aug-elastic", type=float, default=None, group=AUGMENT, field="aug_elastic", help=option_help("aug_elastic"))
@_option(
    "--aug-elastic-sigma",
    type=float,
    default=None,
    group=AUGMENT,
    field="aug_elastic_sigma",
    help=option_help("aug_elastic_sigma"),
)
@_option(
    "--aug-thickness",
    type=float,
    default=None,
    group=AUGMENT,
    field="aug_thickness",
    help=option_help("aug_thickness"),
)
@_option("--negatives", type=float, default=None, group=AUGMENT, field="negatives", help=option_help("negatives"))
@_option("--seed", type=int, default=None, group=RUN, field="seed", help="")
@_option(
    "--deterministic",
    is_flag=True,
    default=None,
    group=RUN,
    field="deterministic",
    help="Deterministic kernels (identical CPU runs).",
)
@_option(
    "--device",
    type=click.Choice(DEVICES),
    default=None,
    group=RUN,
    field="device",
    help="auto: cuda, then mps, then cpu.",
)
@_option(
    "--amp/--no-amp",
    default=None,
    group=RUN,
    field="amp",
    help="bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere.",
)
@_option(
    "--compile", "compile_", is_flag=True, default=None, group=RUN, field="compile", help="torch.compile the model."
)
@_option(
    "--dry-run",
    is_flag=True,
    default=None,
    group=RUN,
    field="dry_run",
    help="Two steps per epoch on a small subset: a smoke test.",
)
@_option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    group=OUTPUT,
    help="Run directory.  [default: runs/<name>]",
)
@_option("--name", default=None, group=OUTPUT, help="Run name under runs/.  [default: DATASET-MODEL-TIME]")
@_option(
    "--resume",
    type=click.Path(file_okay=False),
    default=None,
    group=OUTPUT,
    help="Continue an interrupted run directory.",
)
@_option(
    "--tensorboard",
    type=click.Path(file_okay=False),
    default=None,
    group=OUTPUT,
    help="Also log to TensorBoard here.",
)
@_option(
    "--log-every",
    type=click.IntRange(min=0),
    default=None,
    group=OUTPUT,
    field="log_every",
    help="Steps between log lines.",
)
@_option("--quiet", "-q", is_flag=True, group=OUTPUT, help="Print only the final accuracy line.")
@_option("--json", "as_json", is_flag=True, group=OUTPUT, help="End stdout with one JSON object describing the run.")
def train(
    hidden, activation, dropout, model_option, quiet, as_json, resume, tensorboard, compile_, config_file, **opts
):
    """Train a model (defaults: the tutorial's recipe) and save a run directory with a checkpoint."""
    from mnistkit.training import fit

    model_options = model_options_from(hidden, activation, dropout, model_option)
    overrides = {**opts, "compile": compile_, "model_options": model_options or None}
    config = None
    if config_file is not None:
        from mnistkit.config import load_config_file
        from mnistkit.errors import ConfigError

        if resume:
            raise ConfigError("--config gives the whole recipe: drop --resume")
        config = load_config_file(config_file)  # fit merges the flags into it (mnistkit.config.resolve_config)
    result = fit(
        config,
        resume=resume,
        echo=not quiet,
        tensorboard=tensorboard,
        progress=None if not (quiet or as_json) else False,
        **overrides,
    )
    if result.evaluation is None:  # a torchrun rank other than 0: rank 0 reports
        return
    if quiet:
        click.echo(f"Accuracy of the model on the {result.evaluation.n} test images: {result.test_accuracy:.2f} %")
    else:
        click.echo(next_steps(result.run_dir, result.checkpoint))
    if as_json:
        print_json_line(
            {**result.summary, "val_accuracy": result.metrics[-1].get("val_accuracy") if result.metrics else None}
        )


def next_steps(run_dir, checkpoint) -> str:
    """Where the run went and what to do with it: the lines after the tutorial's accuracy line."""
    import shlex

    run = shlex.quote(str(run_dir))
    return (
        f"Saved {checkpoint}\n"
        f"Next: mnistkit predict {run} photo.png  |  mnistkit evaluate {run}  |  mnistkit report {run}"
    )
