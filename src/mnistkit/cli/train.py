"""``mnistkit train``: train a model and write its run directory."""

from __future__ import annotations

import click

from mnistkit.cli.options import (
    GroupedCommand,
    IntList,
    KeyValue,
    RecipeOption,
    config_options,
    model_options_from,
    print_json_line,
)
from mnistkit.config import ACTIVATION_NAMES, MODEL, OPTION_GROUPS, OUTPUT


def _option(*names: str, **kw):
    """A ``train`` option that is not a config field: shown under its group (``model_option``: the
    help shows each model's default for it)."""
    return click.option(*names, cls=RecipeOption, **kw)


#: Every config field's option comes from the field itself (mnistkit.config.option); the decorators
#: below are the options that are not fields: model options, a saved config, and how to report.
@click.command(cls=GroupedCommand, groups=OPTION_GROUPS, params=config_options())
@_option(
    "--hidden",
    type=IntList(),
    group=MODEL,
    model_option="hidden",
    help="Hidden sizes, one per layer, e.g. 512,256,128.",
)
@_option(
    "--activation",
    type=click.Choice(ACTIVATION_NAMES),
    group=MODEL,
    model_option="activation",
    help="Hidden-layer activation.",
)
@_option("--dropout", type=float, group=MODEL, model_option="dropout", help="Dropout probability.")
@_option(
    "--model-option",
    "model_option",
    type=KeyValue(),
    multiple=True,
    group=MODEL,
    help="Any model option as KEY=VALUE (repeatable), e.g. widths=[32,64].",
)
@_option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    group=MODEL,
    help="Start from a saved config: a run's config.json or `mnistkit tune`'s best.json; flags override it.",
)
@_option("--resume", type=click.Path(file_okay=False), group=OUTPUT, help="Continue an interrupted run directory.")
@_option("--tensorboard", type=click.Path(file_okay=False), group=OUTPUT, help="Also log to TensorBoard here.")
@_option("--quiet", "-q", is_flag=True, group=OUTPUT, help="Print only the final accuracy line.")
@_option("--json", "as_json", is_flag=True, group=OUTPUT, help="End stdout with one JSON object describing the run.")
def train(hidden, activation, dropout, model_option, quiet, as_json, resume, tensorboard, config_file, **opts):
    """Train a model (defaults: the tutorial's recipe) and save a run directory with a checkpoint."""
    from mnistkit.training import fit

    model_options = model_options_from(hidden, activation, dropout, model_option)
    overrides = {**opts, "model_options": model_options or None}
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
