"""``mnistkit train``: train a model and write its run directory."""

from __future__ import annotations

import click

from mnistkit.cli.options import IntList, KeyValue, model_options_from, print_json_line
from mnistkit.config import ACTIVATION_NAMES, DEVICES, NORMS, OPTIMIZERS, PRESETS, SCHEDULES, option_help


@click.command()
@click.option(
    "--dataset",
    default=None,
    help="Registry name (mnist, fashion-mnist, kmnist, mnist-sample) or a path "
    "to an IDX folder, Kaggle CSV or image folder.  [default: mnist]",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None, help="Folder to look in first for dataset files."
)
@click.option("--download/--no-download", default=None, help="Download missing files.  [default: download]")
@click.option("--model", default=None, help="logreg, binary-logreg, seed-mlp, mlp or cnn.  [default: seed-mlp]")
@click.option(
    "--hidden",
    type=IntList(),
    default=None,
    help="seed-mlp/mlp hidden sizes, one per layer, e.g. 512,256,128.  [default: 512,128]",
)
@click.option(
    "--activation",
    type=click.Choice(ACTIVATION_NAMES),
    default=None,
    help="seed-mlp/mlp activation.  [default: sigmoid for seed-mlp, relu for mlp]",
)
@click.option("--dropout", type=float, default=None, help="mlp/cnn dropout probability.")
@click.option(
    "--model-option",
    "model_option",
    type=KeyValue(),
    multiple=True,
    help="Any model option as KEY=VALUE (repeatable), e.g. widths=[32,64].",
)
@click.option("--positive", type=int, default=None, help="Binary task: this class against the rest.")
@click.option("--classes", type=IntList(), default=None, help="Train on these classes only, e.g. 3,8.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None, help="A tuned recipe; flags override it.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from a saved config: a run's config.json or `mnistkit tune`'s best.json; flags override it.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="[default: 10]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size.  [default: 64]")
@click.option("--lr", type=float, default=None, help="Peak learning rate.  [default: 0.001]")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="[default: adam]")
@click.option("--momentum", type=float, default=None, help="SGD momentum.  [default: 0.9]")
@click.option("--nesterov", is_flag=True, default=None, help="Nesterov momentum (sgd).")
@click.option("--weight-decay", type=float, default=None, help="[default: 0]")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None, help="Per-step LR schedule.  [default: none]")
@click.option("--label-smoothing", type=float, default=None, help="[default: 0]")
@click.option("--augment/--no-augment", default=None, help=option_help("augment"))
@click.option("--aug-shift", type=int, default=None, help=option_help("aug_shift"))
@click.option("--aug-rotate", type=float, default=None, help=option_help("aug_rotate"))
@click.option("--aug-scale", type=float, default=None, help=option_help("aug_scale"))
@click.option("--aug-elastic", type=float, default=None, help=option_help("aug_elastic"))
@click.option("--aug-elastic-sigma", type=float, default=None, help=option_help("aug_elastic_sigma"))
@click.option("--aug-thickness", type=float, default=None, help=option_help("aug_thickness"))
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default=None,
    help="tutorial: (x-0.5)/0.5; dataset: the dataset's mean/std.  [default: tutorial]",
)
@click.option(
    "--val-size", type=float, default=None, help="Validation split from train: count or fraction.  [default: 0]"
)
@click.option(
    "--early-stopping",
    type=click.IntRange(min=0),
    default=None,
    help="Patience in epochs on validation loss; 0 = off.  [default: 0]",
)
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--deterministic", is_flag=True, default=None, help="Deterministic kernels (identical CPU runs).")
@click.option("--device", type=click.Choice(DEVICES), default=None, help="[default: auto: cuda, then mps, then cpu]")
@click.option(
    "--amp/--no-amp",
    default=None,
    help="bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere.  [default: on]",
)
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--log-every", type=click.IntRange(min=0), default=None, help="Steps between log lines.  [default: 100]")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory.  [default: runs/<name>]")
@click.option("--name", default=None, help="Run name under runs/.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run directory.")
@click.option("--tensorboard", type=click.Path(file_okay=False), default=None, help="Also log to TensorBoard here.")
@click.option("--dry-run", is_flag=True, default=None, help="Two steps per epoch on a small subset: a smoke test.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final accuracy line.")
@click.option("--json", "as_json", is_flag=True, help="End stdout with one JSON object describing the run.")
def train(
    hidden, activation, dropout, model_option, quiet, as_json, resume, tensorboard, compile_, config_file, **opts
):
    """Train a model (defaults: the tutorial's recipe) and save a run directory with a checkpoint."""
    from mnistkit.training import fit

    model_options = model_options_from(hidden, activation, dropout, model_option)
    if opts.get("augment") is None and any(v is not None for k, v in opts.items() if k.startswith("aug_")):
        opts["augment"] = True  # an --aug-* strength asks for augmentation; --no-augment still wins
    if opts.get("val_size") is not None and float(opts["val_size"]).is_integer():
        opts["val_size"] = int(opts["val_size"])
    overrides = {**opts, "compile": compile_}
    if model_options:
        overrides["model_options"] = model_options
    if not resume and opts.get("preset") is not None and model_options and opts.get("model") is None:
        from mnistkit.config import PRESETS as _P

        overrides["model_options"] = {**_P[opts["preset"]].get("model_options", {}), **model_options}
    config = None
    if config_file is not None:
        from mnistkit.config import load_config_file
        from mnistkit.errors import ConfigError

        if resume or opts.get("preset") is not None:
            raise ConfigError("--config gives the whole recipe: drop " + ("--resume" if resume else "--preset"))
        config = load_config_file(config_file)
        if model_options and overrides.get("model") is None:  # --hidden etc. adjust the file's model
            overrides["model_options"] = {**config.model_options, **model_options}
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
    if as_json:
        print_json_line(
            {**result.summary, "val_accuracy": result.metrics[-1].get("val_accuracy") if result.metrics else None}
        )
