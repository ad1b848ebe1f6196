"""``mnistkit export``: a checkpoint as ONNX or TorchScript, checked against PyTorch (see :mod:`mnistkit.export`)."""

from __future__ import annotations

import click

from mnistkit.cli.options import LazyChoice


def _formats() -> tuple[str, ...]:
    from mnistkit.export import FORMATS  # imports torch: read when the option is parsed or shown

    return FORMATS


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=LazyChoice(_formats),
    required=True,
    help="onnx (needs the export extra) or torchscript.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export(checkpoint, fmt, out):
    """Export CHECKPOINT (a .safetensors file or a run directory) for use outside mnistkit.

    The exported model takes float32 pixels 0..255, shape [N, 1, 28, 28] (any N,
    MNIST-framed: bright ink on black), normalises them itself, and returns
    logits and probabilities. Before the file is written, its outputs are
    compared with PyTorch's on batches of 1 and 7 (max difference <= 1e-4).
    """
    from mnistkit.export import export_checkpoint

    result = export_checkpoint(checkpoint, fmt, out)
    click.echo(
        f"wrote {result.path} ({result.format}; max |difference| vs PyTorch "
        f"{result.max_abs_diff:.1e} on batches of 1 and 7)"
    )
    return 0
