"""``mnistkit predict``: labels for images, folders, stdin, or a Kaggle CSV (logic in :mod:`mnistkit.predict`)."""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option("--top-k", type=int, default=1, show_default=True,
              help="Show the K most likely labels for each image.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON list of {path, label, probability, top} instead of lines.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="A Kaggle Digit Recognizer CSV (pixel0..pixel783, optional label) instead of images.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="With --csv: write the ImageId,Label submission here (default: standard output).")
@click.option("--bf16", is_flag=True, help="bf16 autocast where the hardware has it: faster for large batches, "
              "may flip a few borderline predictions.  [default: exact fp32]")
@click.pass_context
def predict(ctx, checkpoint, inputs, top_k, as_json, csv_path, out_path, bf16):
    """Predict the label of each INPUT: image files, folders (searched recursively), or - for stdin.

    CHECKPOINT is a .safetensors file or a run directory.

    Prints "path  label  probability" per image. Unreadable images are reported
    on stderr and skipped; the exit code is then 2.
    """
    from mnistkit.api import resolve_checkpoint_path
    from mnistkit.checkpoint import load_checkpoint

    if csv_path and inputs:
        raise click.UsageError("give image INPUTs or --csv, not both")
    if not csv_path and not inputs:
        raise click.UsageError("give at least one INPUT (a file, a folder, or - for stdin), or --csv FILE")
    if out_path and not csv_path:
        raise click.UsageError("--out goes with --csv (it writes a Kaggle submission)")
    ckpt = load_checkpoint(resolve_checkpoint_path(checkpoint))
    if csv_path:
        _predict_csv(ckpt, csv_path, out_path, bf16)
        return 0
    failed = _predict_images(ckpt, inputs, top_k, as_json, bf16)
    if failed:
        ctx.exit(2)  # click.exceptions.Exit: reaches the process in and out of standalone mode
    return 0


def _predict_images(ckpt, inputs, top_k: int, as_json: bool, bf16: bool = False) -> int:
    """Print predictions and one stderr line per failed input; returns how many failed."""
    from mnistkit.predict import STDIN, format_line, predict_files

    stdin = sys.stdin.buffer.read() if STDIN in inputs else None
    result = predict_files(ckpt, inputs, top_k=top_k, stdin=stdin, bf16=bf16)
    for _, message in result.failures:
        click.echo(f"mnistkit predict: error: {' '.join(message.split())}", err=True)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in result.predictions], indent=2))
    else:
        for p in result.predictions:
            click.echo(format_line(p))
    return len(result.failures)


def _predict_csv(ckpt, csv_path: str, out_path: str | None, bf16: bool = False) -> None:
    """Write the submission (to ``out_path`` or stdout) and print the accuracy when labels exist."""
    from mnistkit.checkpoint import atomic_write_bytes
    from mnistkit.predict import predict_csv, submission_csv

    result = predict_csv(ckpt, csv_path, bf16)
    text = submission_csv(result.predicted, ckpt.class_names)
    if out_path:
        atomic_write_bytes(out_path, text.encode())
        click.echo(f"wrote {len(result.predicted)} predictions to {out_path}")
    else:
        click.echo(text, nl=False)
    if result.accuracy is not None:
        click.echo(f"accuracy: {result.accuracy:.2f}% on {len(result.labels)} labelled rows",
                   err=out_path is None)
