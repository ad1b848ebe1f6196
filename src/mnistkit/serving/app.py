"""The HTTP API and drawing page behind ``mnistkit serve`` (FastAPI; the ``serve`` extra).

Endpoints::

    GET  /          a drawing canvas and a photo picker, the 28x28 input the model got, live bars
    POST /predict   an image (multipart field ``file``, or a raw ``image/*`` body) or JSON
                    ``{"pixels": 28x28 numbers 0-255}`` -> ``{label, probability, probabilities,
                    unsure[, reason][, preview]}``; ``?preview=1`` adds ``preview``, the 28x28 uint8
                    image the model was given (rows of ints 0-255, bright ink on black, as MNIST)
    POST /predict?number=1   an image of a written number -> ``{number, confidence, unsure, reason,
                    digits: [{label, probability}]}`` from the line reader (:mod:`.numbers`);
                    ``?preview=1`` adds ``line_image``, the line it read as a PNG data URL.
                    501 when the server has no line reader (digits still work)
    GET  /healthz   liveness
    GET  /model     the checkpoint's metadata, with absolute paths reduced to their last part
    GET  /line-model  the line reader's metadata (as /model); 501 without one
    GET  /docs      OpenAPI docs (Swagger UI, its files served by the app itself: :mod:`.docs`)

``HEAD`` on any path answers as ``GET`` without the body (:class:`HeadAsGet`).

Every bad request gets a 4xx JSON ``{"error": "..."}`` and leaves the server
healthy; every response is valid JSON (no bare NaN: a model that answers NaN gets a 500 that
says so). What a hostile client can cost is bounded at each step:

- the client: at most :data:`~mnistkit.serving.limits.CLIENT_REQUESTS` ``/predict`` requests in
  progress per source address (503 beyond, at once), and per-client connections in
  :mod:`.server`, so one client's slow requests use up its own share, not the server;
- the body: at most :data:`MAX_BODY_BYTES` (JSON: :data:`MAX_JSON_BYTES`), counted while it
  streams in, and it must arrive within :data:`BODY_TIMEOUT_S` (408 otherwise); a JPEG photo with
  a Content-Length may have up to :data:`MAX_PHOTO_BYTES`, while at most :data:`LARGE_UPLOADS` such
  bodies (one per client) are in progress;
- JSON: nesting depth and the length of each number are checked before or while parsing,
  so no recursion error and no 5,000-digit integer conversion ever happens;
- images: at most :data:`SERVE_MAX_PIXELS` by the header, before any pixel is decoded (a JPEG,
  decoded at reduced size: :data:`SERVE_MAX_JPEG_PIXELS`);
- work: small inputs and large images run in two separate bounded pools (:class:`~.lanes.Lane`), each
  with a bounded queue, so large uploads wait for their own thread (or get 503 at once when
  that queue is full) and never hold up drawings and JSON pixels.

Images go through :func:`mnistkit.prediction.analyze_digit`, the same path ``mnistkit predict``
uses (:func:`mnistkit.preprocess.image.analyze_image`, which image-folder training uses, and with the
bundled models the line reader's one-digit reading); JSON pixels go through ``analyze_image``
(a 28x28 bright-on-dark array passes through it unchanged). Digits are then predicted by
:func:`mnistkit.prediction.top_predictions` (the checkpoint's calibration and the unsure rule included),
the function ``mnistkit predict`` and ``mnistkit.predict`` use; numbers by
:func:`mnistkit.reading.read_number_file`, the function ``mnistkit predict --number`` uses.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path, PureWindowsPath

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnistkit.errors import CheckpointError, InputImageError
from mnistkit.prediction import analyze_digit, decode_side, digit_line_reader, top_predictions
from mnistkit.preprocess.image import SIDE, DigitAnalysis, analyze_image, load_image
from mnistkit.serving.bodies import (
    JPEG_MAGIC,
    JSON_TYPE,
    MULTIPART,
    SHRINK_HINT,
    ApiError,
    check_pixels,
    content_kind,
    declared_length,
    flag,
    image_header,
    may_hold_photo,
    multipart_file,
    parse_pixels_json,
    read_limited_body,
)
from mnistkit.serving.docs import add_docs
from mnistkit.serving.lanes import Lane, Slots
from mnistkit.serving.limits import (
    HEAVY_NICE,
    MAX_JSON_BYTES,
    SERVE_MAX_PIXELS,
    Limits,
)
from mnistkit.serving.numbers import NO_LINE_READER, load_number_reader, read_number_bytes
from mnistkit.serving.shares import ClientShares, client_address
from mnistkit.unsure import check_min_confidence

_PIXELS_SCHEMA = {
    "type": "array",
    "minItems": SIDE,
    "maxItems": SIDE,
    "items": {
        "type": "array",
        "minItems": SIDE,
        "maxItems": SIDE,
        "items": {"type": "number", "minimum": 0, "maximum": 255},
    },
}
_PREDICT_DOC = {
    "parameters": [
        {
            "name": "preview",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean"},
            "description": "also return `preview`: the 28x28 image the model was given (rows of ints 0-255); "
            "with `number=1`, `line_image`: the line the reader read, as a PNG data URL",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            JSON_TYPE: {"schema": {"type": "object", "required": ["pixels"], "properties": {"pixels": _PIXELS_SCHEMA}}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


class HeadAsGet:
    """ASGI middleware: ``HEAD`` on any path answers exactly as ``GET`` does, without the body.

    FastAPI's routes accept only the methods they name, so without it ``HEAD /`` is a 405; monitors
    and link checkers send HEAD. The headers (Content-Length included) are GET's, as HTTP asks.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


#: The 500 for a model whose answer is not finite: the model's fault, not the request's.
BROKEN_MODEL = (
    "the model gave a non-finite probability ({value}) for this input: "
    "its checkpoint is broken (weights or temperature out of range); no answer is given"
)


def create_app(
    checkpoint_path: str | Path | None = None,
    *,
    line_model: str | Path | None = None,
    limits: Limits | None = None,
    min_confidence: float | None = None,
) -> FastAPI:
    """Load the checkpoint (a file, a run directory, or ``None`` for the bundled model) and the line
    reader for numbers (``line_model``, else the bundled one when installed: :func:`.numbers.load_number_reader`)
    once, and build the app around them. Checkpoint problems raise :class:`~mnistkit.errors.CheckpointError`.

    ``min_confidence`` (None: each model's own threshold) judges digits and numbers alike, as
    ``mnistkit predict --min-confidence`` does."""
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path

    check_min_confidence(min_confidence)  # the boundary for the server, from the CLI or from Python
    limits = limits or Limits()
    ckpt = load_checkpoint(resolve_checkpoint_path(checkpoint_path))
    reader = load_number_reader(line_model)
    app = FastAPI(
        title="mnistkit",
        description="Predict handwritten digits with an mnistkit checkpoint, and read written numbers "
        "with a line reader (POST /predict?number=1).",
        version=str((ckpt.meta.get("versions") or {}).get("mnistkit", "")),
        docs_url=None,  # .docs.add_docs serves the page with its files, no CDN
    )
    add_docs(app)
    app.state.checkpoint = ckpt
    app.state.line_reader = reader
    app.state.limits = limits
    _add_error_handlers(app)
    app.add_middleware(HeadAsGet)
    _add_info_routes(app, ckpt, reader)
    _add_predict_route(app, Predictor(ckpt, reader, limits, min_confidence))
    return app


def _add_info_routes(app: FastAPI, ckpt, reader) -> None:
    """The page, liveness and the two models' metadata: cheap answers that need no lane."""
    from mnistkit.checkpoint import load_tensors

    page = resources.files("mnistkit.serving").joinpath("static/index.html").read_text(encoding="utf-8")
    public_meta = public_metadata(ckpt.meta)
    line_meta = public_metadata(load_tensors(reader.path)[1]) if reader and reader.path else None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_CSP})

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the model is loaded and the server answers."""
        return {"status": "ok", "model": ckpt.meta["model"]}

    @app.get("/model")
    async def model_info() -> dict:
        """The checkpoint's metadata: model, task, dataset, normalisation, class names, metrics, versions."""
        return public_meta

    @app.get("/line-model")
    async def line_model_info() -> JSONResponse:
        """The line reader's metadata (as ``/model``); 501 when this server reads no numbers."""
        if line_meta is None:
            return JSONResponse({"error": NO_LINE_READER}, status_code=501)
        return JSONResponse(line_meta)


def _add_predict_route(app: FastAPI, predictor: Predictor) -> None:
    @app.post(
        "/predict",
        openapi_extra=_PREDICT_DOC,
        response_class=JSONResponse,
        responses={
            200: {
                "description": "{label, probability, probabilities: {class name: p}, unsure, "
                "reason (when unsure), preview (with ?preview=1)}; with ?number=1: {number, confidence, "
                "unsure, reason, digits: [{label, probability}], line_image (with ?preview=1)}"
            }
        },
    )
    async def predict(request: Request) -> JSONResponse:
        """Predict one digit from an uploaded image or from 28x28 JSON pixels.

        With the query parameter `number=1`, read the written number in an uploaded image with the line
        reader instead: `{number, confidence, unsure, reason, digits: [{label, probability}]}`; 501 when
        this server has no line reader.
        """
        return await predictor.handle(request)


class Predictor:
    """``POST /predict`` over one loaded model (and line reader): a request is checked, its body read
    within the limits, and the work run in a lane sized to the input.

    The lanes, shares and slots are why a few clients cannot starve the rest: small inputs and large
    images queue apart (:class:`~.limits.Lane`), each client holds a bounded share of the requests in
    progress (:class:`~.shares.ClientShares`), and photo bodies (over ``max_body_bytes``), which hold
    the most memory, get few slots at once and one per client."""

    def __init__(self, ckpt, reader, limits: Limits, min_confidence: float | None):
        self.ckpt, self.reader, self.limits, self.min_confidence = ckpt, reader, limits, min_confidence
        self.light = Lane("small inputs", limits.light_workers, limits.light_queue)
        self.heavy = Lane("large images", limits.heavy_workers, limits.heavy_queue, nice=HEAVY_NICE)
        self.request_shares = ClientShares("requests in progress", limits.client_requests)
        self.photo_slots = Slots("large photos", limits.large_uploads)
        self.photo_shares = ClientShares("large photos in progress", limits.client_large_uploads)

    async def handle(self, request: Request) -> JSONResponse:
        with self.request_shares.hold(client_address(request.client)):
            return await self.route(request)

    async def route(self, request: Request) -> JSONResponse:
        """Refuse what cannot be answered before reading the body; a photo body waits for a photo slot."""
        content_type = request.headers.get("content-type", "")
        kind = content_kind(content_type)
        preview = flag(request.query_params.get("preview"), "preview")
        number = flag(request.query_params.get("number"), "number")
        if number and self.reader is None:
            raise ApiError(501, NO_LINE_READER)
        if number and kind == "json":
            raise ApiError(422, NUMBER_NEEDS_IMAGE)
        size = declared_length(request)
        photo = (
            kind != "json" and size is not None and self.limits.max_body_bytes < size and may_hold_photo(content_type)
        )
        if photo:  # a body over max_body_bytes, read only while it holds a photo slot
            with self.photo_shares.hold(client_address(request.client)), self.photo_slots.hold():
                return await self.answer(request, kind, preview, number, photo)
        return await self.answer(request, kind, preview, number, photo)

    async def answer(self, request: Request, kind: str, preview: bool, number: bool, photo: bool) -> JSONResponse:
        """Read the body, check the image's size from its header, and predict in the lane it needs."""
        limits, min_confidence = self.limits, self.min_confidence
        body = await self.read_body(request, kind, photo)
        if kind == "json":
            pixels = parse_pixels_json(body)
            return JSONResponse(await self.light.run(predict_pixels, self.ckpt, pixels, min_confidence, preview))
        data, name = await multipart_file(request, body) if kind == "multipart" else (body, "request body")
        if photo and not data.startswith(JPEG_MAGIC):
            raise ApiError(
                413,
                f"request body of {len(body):,} bytes is over the limit of {limits.max_body_bytes:,} bytes "
                f"for images other than JPEG; {_OVER_BODY_HINT}",
            )
        header = image_header(data)
        max_pixels = check_pixels(header, limits.max_pixels, limits.max_jpeg_pixels, name)
        lane = self.heavy if header is not None and header.pixels > limits.light_max_pixels else self.light
        if number:
            assert self.reader is not None  # checked before the body was read
            result = await lane.run(read_number_bytes, self.reader, data, name, min_confidence, preview)
        else:
            result = await lane.run(predict_image_bytes, self.ckpt, data, name, max_pixels, min_confidence, preview)
        return JSONResponse(result)  # plain floats and strings: skip FastAPI's generic encoder

    async def read_body(self, request: Request, kind: str, photo: bool) -> bytes:
        """The whole body within the time limit; a photo may be up to ``max_photo_bytes``."""
        limits = self.limits
        if kind == "json":
            limit, hint = MAX_JSON_BYTES, ""
        elif photo:
            limit, hint = limits.max_photo_bytes, f" for a JPEG photo; {SHRINK_HINT}"
        else:
            limit, hint = limits.max_body_bytes, f"; {_OVER_BODY_HINT}"
        try:
            with anyio.fail_after(limits.body_timeout_s):
                body = await read_limited_body(request, limit, hint)
        except TimeoutError:
            raise ApiError(408, f"request body not received within {limits.body_timeout_s:g} s") from None
        if not body:
            raise ApiError(
                400,
                "empty request body: send an image file (multipart field 'file') "
                'or JSON {"pixels": 28x28 numbers 0-255}',
            )
        return body


#: What a body over the image limit is told to do.
_OVER_BODY_HINT = f"send photos as JPEG (with a Content-Length, as curl -F does), or {SHRINK_HINT}"
#: ``?number=1`` with JSON pixels: a number is read from an image, never from one 28x28 digit.
NUMBER_NEEDS_IMAGE = (
    "?number=1 reads a written number from an image: send the image (multipart field 'file' or an "
    'image/* body); JSON {"pixels": ...} is one 28x28 digit'
)

#: The page loads nothing from elsewhere; the policy makes the browser enforce that.
_PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'"
)


def predict_image_bytes(
    ckpt,
    data: bytes,
    name: str,
    max_pixels: int = SERVE_MAX_PIXELS,
    min_confidence: float | None = None,
    preview: bool = False,
) -> dict:
    """Decode + preprocess + predict one uploaded image (runs in a worker thread)."""
    try:
        reader = digit_line_reader(ckpt)
        analysis = analyze_digit(load_image(data, max_pixels, name=name, work_side=decode_side(reader)), ckpt, reader)
    except InputImageError as exc:
        raise ApiError(400, str(exc)) from None
    return predict_digit(ckpt, analysis, min_confidence, preview)


def predict_pixels(ckpt, pixels: np.ndarray, min_confidence: float | None = None, preview: bool = False) -> dict:
    """Predict 28x28 JSON pixels, through the same preprocessing as images (runs in a worker thread)."""
    return predict_digit(ckpt, analyze_image(pixels), min_confidence, preview)


def predict_digit(ckpt, analysis: DigitAnalysis, min_confidence: float | None = None, preview: bool = False) -> dict:
    """What preprocessing found (its uint8 ``(28, 28)`` digit and more) -> the response body of
    ``POST /predict``, from :func:`mnistkit.prediction.top_predictions`: the function ``mnistkit predict``
    and ``mnistkit.predict`` use, so the unsure rule and the rounding are theirs too."""
    import torch

    names = ckpt.class_names
    batch = torch.from_numpy(analysis.digit).unsqueeze(0)
    try:
        pred = top_predictions(ckpt, batch, ["upload"], len(names), analyses=[analysis], min_confidence=min_confidence)[
            0
        ]
    except CheckpointError:  # the one inference path refuses non-finite probabilities (a NaN is no answer)
        raise ApiError(500, BROKEN_MODEL.format(value="nan")) from None
    proba = dict(pred.top)
    if not all(math.isfinite(p) for p in proba.values()):
        # JSON has no NaN; and no label can be picked from them. The model's fault, not the request's.
        raise ApiError(500, BROKEN_MODEL.format(value=_first_non_finite(list(proba.values()))))
    result = {
        "label": pred.label,
        "probability": pred.probability,
        "probabilities": {n: proba[n] for n in names if n in proba},  # none when there is no ink
        "unsure": pred.unsure,
    }
    if pred.reason is not None:
        result["reason"] = pred.reason
    if preview:
        result["preview"] = analysis.digit.tolist()
    return result


def _first_non_finite(values: list[float]) -> str:
    return next(repr(v) for v in values if not math.isfinite(v))


# ---------------------------------------------------------------------- metadata, errors

_ABSOLUTE_PATH = re.compile(r"(?:^|(?<=[\s=,(\['\"]))(?:/|~/|[A-Za-z]:[\\/])[^\s'\",;)\]]+")


def public_metadata(meta):
    """The checkpoint metadata with every absolute path cut to its last part (``/home/u/runs/a`` -> ``a``),
    and NaN or infinite numbers as ``None``, so ``/model`` is always valid JSON.

    ``/model`` is for anyone who can reach the server; where the files lie on this machine is not
    theirs to know. Works inside longer strings too (a recorded training command).
    """
    if isinstance(meta, dict):
        return {k: public_metadata(v) for k, v in meta.items()}
    if isinstance(meta, list):
        return [public_metadata(v) for v in meta]
    if isinstance(meta, str):
        return _ABSOLUTE_PATH.sub(lambda m: _last_part(m.group(0)), meta)
    if isinstance(meta, float) and not math.isfinite(meta):
        return None  # a diverged run's NaN loss: JSON has no NaN, and null says "no number"
    return meta


def _last_part(path: str) -> str:
    name = PureWindowsPath(path).name if "\\" in path else Path(path.rstrip("/")).name
    return name or "."


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": "..."}``, including FastAPI's own validation and 404/405."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status in (408, 413):  # the rest of the body is unread: close rather than reuse the connection
            headers["Connection"] = "close"
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: answered as JSON, and Starlette still logs the traceback for us to fix.
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
