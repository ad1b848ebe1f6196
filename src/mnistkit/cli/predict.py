"""``mnistkit predict``: labels for images, folders, stdin, or a Kaggle CSV (logic in :mod:`mnistkit.prediction`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnistkit.cli.options import print_json
from mnistkit.errors import ConfigError
from mnistkit.unsure import DEFAULT_MIN_CONFIDENCE


@click.command()
@click.argument("inputs", nargs=-1, metavar="[CHECKPOINT] [INPUT]...")
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    help="Checkpoint (.safetensors) or run directory to use.  [default: the bundled digit model]",
)
@click.option(
    "--number", is_flag=True, help="Each INPUT is a written number (2026, a postcode): read its digits left to right."
)
@click.option(
    "--min-confidence",
    type=float,
    default=None,
    help="Report predictions whose top probability is below this as unsure ('?').  [default: the model's own "
    f"threshold (the bundled model's was chosen on photographed validation digits), else {DEFAULT_MIN_CONFIDENCE:g}]",
)
@click.option(
    "--save-input",
    "save_dir",
    type=click.Path(file_okay=False),
    help="Write the 28x28 image each input became (PNG) into this folder: what the model saw.",
)
@click.option(
    "--about", is_flag=True, help="Print the model's card (what it is, how it was trained, its accuracy) and exit."
)
@click.option("--top-k", type=int, default=1, show_default=True, help="Show the K most likely labels for each image.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON list of {path, label, probability, top, unsure, reason} instead of lines.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="A Kaggle Digit Recognizer CSV (pixel0..pixel783, optional label) instead of images.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="With --csv: write the ImageId,Label submission here (default: standard output).",
)
@click.option(
    "--bf16",
    is_flag=True,
    help="bf16 autocast where the hardware has it: faster for large batches, "
    "may flip a few borderline predictions.  [default: exact fp32]",
)
@click.pass_context
def predict(ctx, inputs, model_path, number, min_confidence, save_dir, about, top_k, as_json, csv_path, out_path, bf16):
    """Predict the digit in each INPUT: image files, folders (searched recursively), or - for stdin.

    With no CHECKPOINT and no --model, the bundled pretrained digit model is used.
    The older form `mnistkit predict CHECKPOINT INPUT...` still works: a first
    argument that is a .safetensors file, or a run directory holding
    model.safetensors, is the model.

    Prints "path  label  probability" per image; "path  ?  label  probability
    (reason)" when the input is no readable single digit (no ink, several digits,
    a blot, or low confidence). Unreadable images are reported on stderr and
    skipped; the exit code is then 2.
    """
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path
    from mnistkit.unsure import check_min_confidence

    inputs = list(inputs)
    if inputs and _is_checkpoint(inputs[0]):
        if model_path:
            raise click.UsageError(f"{inputs[0]} is a checkpoint and --model gives another: give the model once")
        model_path = inputs.pop(0)
    elif len(inputs) > 1 and not model_path and _looks_like_a_missing_model(inputs[0]):
        raise ConfigError(
            f"{inputs[0]}: no such run directory or checkpoint (a first argument followed by images names the model)"
        )
    check_min_confidence(min_confidence)
    if (number and model_path is None) or _is_line_model(model_path):
        return _read_lines(ctx, model_path, inputs, about, as_json, min_confidence, save_dir, csv_path)
    ckpt = load_checkpoint(resolve_checkpoint_path(model_path))
    if about:
        _print_about(ckpt, as_json)
        return 0
    if csv_path and inputs:
        raise click.UsageError("give image INPUTs or --csv, not both")
    if not csv_path and not inputs:
        raise click.UsageError("give at least one INPUT (a file, a folder, or - for stdin), or --csv FILE")
    if out_path and not csv_path:
        raise click.UsageError("--out goes with --csv (it writes a Kaggle submission)")
    if csv_path and (number or save_dir):
        raise click.UsageError("--number and --save-input go with image INPUTs, not --csv")
    if csv_path:
        _predict_csv(ckpt, csv_path, out_path, bf16)
        return 0
    if number:
        failed = _read_numbers(ckpt, inputs, as_json, min_confidence, save_dir)
    else:
        failed = _predict_images(ckpt, inputs, top_k, as_json, bf16, min_confidence, save_dir)
    if failed:
        ctx.exit(2)  # click.exceptions.Exit: reaches the process in and out of standalone mode
    return 0


def _is_checkpoint(arg: str) -> bool:
    """A .safetensors file, or a run directory holding model.safetensors: unambiguous, since images
    are never .safetensors and a folder of images holds no model.safetensors."""
    p = Path(arg)
    from mnistkit.runs import RunDir

    return (p.suffix == ".safetensors" and not p.is_dir()) or (p.is_dir() and RunDir(p).checkpoint.is_file())


def _looks_like_a_missing_model(arg: str) -> bool:
    """A first argument that does not exist and is no image name: a mistyped run folder or checkpoint
    (``predict runs/nope photo.jpg``), refused before anything is read."""
    p = Path(arg)
    return arg != "-" and not p.exists() and (p.suffix == ".safetensors" or p.suffix == "")


def _is_line_model(model_path: str | None) -> bool:
    """Whether ``model_path`` is a line reader's checkpoint (a sequence model reads numbers)."""
    if model_path is None:
        return False
    from mnistkit.checkpoint import load_tensors, resolve_checkpoint_path

    try:
        return load_tensors(resolve_checkpoint_path(model_path))[1].get("task") == "sequence"
    except Exception:  # not readable here: load_checkpoint gives the one-line error later
        return False


def _read_lines(ctx, model_path, inputs, about: bool, as_json: bool, min_confidence, save_dir, csv_path) -> int:
    """Numbers read by a line reader (the bundled one, or ``model_path``): one line or JSON object each."""
    from mnistkit.prediction import expand_inputs
    from mnistkit.reading import read_number_files, save_line_inputs
    from mnistkit.reading.model import load_line_reader

    reader = load_line_reader(model_path)
    if about:
        from mnistkit.checkpoint import load_checkpoint

        assert reader.path is not None  # a loaded reader always knows its file
        _print_about(load_checkpoint(reader.path), as_json)
        return 0
    if csv_path:
        raise click.UsageError("--csv holds single digits; a line reader reads images of numbers")
    if not inputs:
        raise click.UsageError("give at least one INPUT (a file, a folder, or - for stdin)")
    names, failures = expand_inputs(inputs)
    readings = read_number_files(reader, names, _read_stdin(inputs), min_confidence, failures)
    _echo_failures(failures)
    if save_dir:
        save_line_inputs(readings, save_dir)
    _show(readings, as_json, lambda r: r.line_text())
    if failures:
        ctx.exit(2)
    return 0


def _read_stdin(inputs) -> bytes | None:
    from mnistkit.fileio import STDIN
    from mnistkit.preprocess.image import read_limited

    return read_limited(sys.stdin.buffer, "<stdin>") if STDIN in inputs else None


def _echo_failures(failures) -> None:
    for _, message in failures:
        click.echo(f"mnistkit predict: error: {' '.join(message.split())}", err=True)


def _predict_images(
    ckpt,
    inputs,
    top_k: int,
    as_json: bool,
    bf16: bool = False,
    min_confidence: float | None = None,
    save_dir: str | None = None,
) -> int:
    """Print predictions and one stderr line per failed input; returns how many failed."""
    from mnistkit.prediction import format_line, predict_files, save_inputs

    result = predict_files(
        ckpt, inputs, top_k=top_k, stdin=_read_stdin(inputs), bf16=bf16, min_confidence=min_confidence
    )
    _echo_failures(result.failures)
    if save_dir:
        save_inputs(result.predictions, save_dir)
    _show(result.predictions, as_json, format_line)
    return len(result.failures)


def _read_numbers(ckpt, inputs, as_json: bool, min_confidence: float | None, save_dir: str | None) -> int:
    """``--number``: one line (or JSON object) per input with the number and per-digit confidence."""
    from mnistkit.number_reading import format_number_line, read_number_files, save_number_inputs
    from mnistkit.prediction import expand_inputs

    names, failures = expand_inputs(inputs)
    readings = read_number_files(ckpt, names, _read_stdin(inputs), min_confidence, failures)
    _echo_failures(failures)
    if save_dir:
        save_number_inputs(readings, save_dir)
    _show(readings, as_json, format_number_line)
    return len(failures)


def _show(results, as_json: bool, line_of) -> None:
    """Each result as one printed line (``line_of``), or all as one JSON list of their ``to_dict()``."""
    if as_json:
        print_json([r.to_dict() for r in results], indent=2)
    else:
        for r in results:
            click.echo(line_of(r))


def _print_about(ckpt, as_json: bool) -> None:
    """The checkpoint's model card (:func:`mnistkit.bundled.model_card`: the stored card, else one
    derived from its training metadata), in the same lines as ``mnistkit models``."""
    from mnistkit.card import model_card
    from mnistkit.cli.models import card_lines

    card = model_card(ckpt)
    if as_json:
        print_json({"checkpoint": str(ckpt.path), **card}, indent=2)
        return
    click.echo(f"checkpoint: {ckpt.path}")
    for line in card_lines(card):
        click.echo(line)


def _predict_csv(ckpt, csv_path: str, out_path: str | None, bf16: bool = False) -> None:
    """Write the submission (to ``out_path`` or stdout) and print the accuracy when labels exist."""
    from mnistkit.fileio import atomic_write_bytes
    from mnistkit.prediction import predict_csv, submission_csv

    result = predict_csv(ckpt, csv_path, bf16)
    text = submission_csv(result.predicted, ckpt.class_names)
    if out_path:
        atomic_write_bytes(out_path, text.encode())
        click.echo(f"wrote {len(result.predicted)} predictions to {out_path}")
    else:
        click.echo(text, nl=False)
    if result.accuracy is not None and result.labels is not None:
        click.echo(f"accuracy: {result.accuracy:.2f}% on {len(result.labels)} labelled rows", err=out_path is None)
