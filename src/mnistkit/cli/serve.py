"""``mnistkit serve``: the drawing page and JSON API for a checkpoint (see :mod:`mnistkit.serving.app`)."""

from __future__ import annotations

import click

SERVE_HINT = "pip install 'mnistkit[serve]'"


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 exposes the server to your network).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="TCP port.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Torch threads per inference; 1 is fastest for one small image at a time.")
def serve(checkpoint, host, port, threads):
    """Serve CHECKPOINT (a .safetensors file or a run directory): a drawing page at /,
    POST /predict, /healthz, /model, /docs."""
    from mnistkit.errors import MnistkitError

    try:
        import uvicorn

        from mnistkit.serving.app import create_app
    except ImportError as exc:
        raise MnistkitError(f"mnistkit serve needs {exc.name or 'fastapi/uvicorn'}: {SERVE_HINT}") from None
    import torch

    # Requests are already served in parallel by a thread pool; intra-op threads on
    # top of that only oversubscribe the cores for 28x28 inputs.
    torch.set_num_threads(threads)
    app = create_app(checkpoint)  # load (and validate) the checkpoint before binding the port
    click.echo(f"serving {checkpoint} at http://{host}:{port}/  (Ctrl+C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
