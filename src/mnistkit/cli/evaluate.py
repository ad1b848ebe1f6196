"""``mnistkit evaluate CHECKPOINT``: accuracy, per-class scores and the confusion matrix."""

from __future__ import annotations

import click

from mnistkit.cli.options import RecipeOption, dataset_help, print_json_line
from mnistkit.config import DEVICES, field_default, option_help


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train"]),
    default="test",
    show_default=True,
    help="The split to score: val is the validation split the run carved from train (its size and seed).",
)
@click.option(
    "--dataset",
    cls=RecipeOption,
    default=None,
    help_from=dataset_help("Score on this dataset instead of the checkpoint's own (same class names). "),
)
@click.option(
    "--other-classes",
    is_flag=True,
    help="Score a --dataset whose class names differ from the checkpoint's (same number of classes).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder to look in first.")
@click.option("--download/--no-download", default=True, show_default=True, help=option_help("download"))
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=field_default("eval_batch_size"),
    show_default=True,
    help="Images per batch: memory, not scores.",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help=option_help("device"))
@click.option(
    "--bf16",
    is_flag=True,
    help="bf16 autocast where the hardware has it: faster, may flip a few "
    "borderline predictions.  [default: exact fp32]",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def evaluate(checkpoint, split, dataset, other_classes, data_dir, download, batch_size, device, bf16, as_json):
    """Score a checkpoint (a .safetensors file or a run directory) on a dataset split."""
    from mnistkit.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(
        checkpoint,
        split=split,
        dataset=dataset,
        data_dir=data_dir,
        download=download,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        other_classes=other_classes,
    )
    if as_json:
        print_json_line(result.to_dict())
        return
    _print_tables(result)


def _print_tables(r) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"Accuracy of the model on the {r.n} {r.split} images: {r.accuracy:.2f} %", highlight=False)
    if r.binary:
        b = r.binary
        console.print(
            f"Precision {b['precision']:.2f} %  Recall {b['recall']:.2f} %  ROC AUC {b['roc_auc']:.4f}", highlight=False
        )
    if not r.per_class:  # a line reader: lines read exactly, no per-digit table
        return
    t = Table("class", "precision %", "recall %", "F1 %", "support", title="Per class")
    for row in r.per_class:
        t.add_row(
            row["class"], f"{row['precision']:.2f}", f"{row['recall']:.2f}", f"{row['f1']:.2f}", str(row["support"])
        )
    console.print(t)
    cm = Table("true \\ pred", *[n[:8] for n in r.class_names], title="Confusion matrix")
    for name, row in zip(r.class_names, r.confusion):
        cm.add_row(name[:12], *[str(v) for v in row])
    console.print(cm)
