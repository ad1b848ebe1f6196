"""``mnistkit serve``: the drawing page and JSON API for a checkpoint (see :mod:`mnistkit.serving.app`)."""

from __future__ import annotations

import click

from mnistkit.serving import limits as L
from mnistkit.unsure import DEFAULT_MIN_CONFIDENCE

SERVE_HINT = "pip install 'mnistkit[serve]'"


@click.command()
@click.argument("checkpoint", type=click.Path(), required=False)
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    metavar="CHECKPOINT|RUN_DIR",
    help="Checkpoint file or run directory to serve (the same as the CHECKPOINT argument). "
    "[default: the bundled digit model]",
)
@click.option(
    "--line-model",
    type=click.Path(),
    metavar="CHECKPOINT|RUN_DIR",
    help="Line model (e.g. trained with --model crnn) that reads numbers for POST /predict?number=1 and the "
    "page's number mode.  [default: the bundled line reader when installed; without one, numbers get 501 "
    "and digits are served as usual]",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 exposes the server to your network; see the README "
    "on running behind a reverse proxy).",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Torch threads per inference; 1 is fastest for one small image at a time.",
)
@click.option(
    "--min-confidence",
    type=float,
    default=None,
    help="Report predictions whose calibrated top probability is below this as unsure (as `mnistkit predict`).  "
    f"[default: the model's own threshold, else {DEFAULT_MIN_CONFIDENCE:g}]",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=L.SERVE_MAX_PIXELS,
    show_default=True,
    help="Largest uploaded image in pixels (width x height), checked from the header before decoding. "
    f"A JPEG, decoded at reduced size, may have up to {L.SERVE_MAX_JPEG_PIXELS:,}.",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0.1, 3600),
    default=L.HEADER_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="A client must send a request's headers, and then its body, within this many seconds each; "
    "else the connection is closed (a late body gets 408).",
)
@click.option(
    "--client-connections",
    type=click.IntRange(0, L.LIMIT_CONCURRENCY),
    default=L.CLIENT_CONNECTIONS,
    show_default=True,
    metavar="N",
    help=f"Open connections one client (source address; for IPv6 its /64) may hold, of the server's {L.LIMIT_CONCURRENCY}; "
    "one more is answered 503 and closed, so a slow client uses up its own share, not /healthz or "
    "other clients'. Behind a reverse proxy every request comes from the proxy: raise this, or 0 for "
    "no per-client limit, and limit clients in the proxy.",
)
@click.option(
    "--client-requests",
    type=click.IntRange(0, L.LIMIT_CONCURRENCY),
    default=L.CLIENT_REQUESTS,
    show_default=True,
    metavar="N",
    help="POST /predict requests one client may have in progress (body arriving, waiting, computing); "
    "one more gets 503 at once. 0: no per-client limit.",
)
def serve(
    checkpoint,
    model_path,
    line_model,
    host,
    port,
    threads,
    min_confidence,
    max_pixels,
    request_timeout,
    client_connections,
    client_requests,
):
    """Serve CHECKPOINT (a .safetensors file or a run directory; default: the bundled digit model):
    a drawing and photo page at /, POST /predict (?number=1: a written number, read by the line
    model), /healthz, /model, /line-model, /docs."""
    from mnistkit.errors import ConfigError, MnistkitError

    if checkpoint and model_path:
        raise ConfigError(f"give the checkpoint once: either CHECKPOINT ({checkpoint}) or --model ({model_path})")
    checkpoint = checkpoint or model_path
    try:
        from mnistkit.serving.app import create_app
        from mnistkit.serving.server import bind, serve_forever
    except ImportError as exc:
        raise MnistkitError(f"mnistkit serve needs {exc.name or 'fastapi/uvicorn'}: {SERVE_HINT}") from None
    import torch

    # Requests are already served in parallel by a thread pool; intra-op threads on
    # top of that only oversubscribe the cores for 28x28 inputs.
    torch.set_num_threads(threads)
    limits = L.Limits(
        max_pixels=max_pixels,
        body_timeout_s=request_timeout,
        header_timeout_s=request_timeout,
        client_connections=client_connections,
        client_requests=client_requests,
    )
    # Bind the port first (a busy port fails in a second, not after loading torch and the model),
    # then load and validate the checkpoint, and only then say we are serving.
    sock = bind(host, port)
    try:
        app = create_app(checkpoint, line_model=line_model, limits=limits, min_confidence=min_confidence)
    except BaseException:
        sock.close()
        raise
    shown = checkpoint if checkpoint else "the bundled digit model"
    click.echo(f"serving {shown} at http://{_url_host(host)}:{port}/  (Ctrl+C stops)", err=True)
    click.echo(f"numbers: {_numbers_source(app, line_model)}", err=True)
    serve_forever(app, sock, limits)
    return 0


def _numbers_source(app, line_model) -> str:
    """What reads numbers, for the start-up message: a server without a reader says so once, here."""
    if app.state.line_reader is None:
        return "none (no bundled line reader installed; give --line-model to read numbers)"
    return line_model or "the bundled line reader"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
