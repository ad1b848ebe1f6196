"""The HTTP API and drawing page behind ``mnistkit serve`` (FastAPI; the ``serve`` extra).

Endpoints::

    GET  /          a drawing canvas, Clear/Predict, a live bar chart (one self-contained page)
    POST /predict   an image (multipart field ``file``, or a raw ``image/*`` body) or JSON
                    ``{"pixels": 28x28 numbers 0-255}`` -> ``{label, probability, probabilities}``
    GET  /healthz   liveness
    GET  /model     the checkpoint's metadata
    GET  /docs      OpenAPI docs (FastAPI's page; the only one that loads assets from a CDN)

Every bad request gets a 4xx JSON ``{"error": "..."}`` and leaves the server
healthy. Bodies are capped at :data:`MAX_BODY_BYTES` while they stream in (a
too-large Content-Length is refused before a byte is read). Decoding and
inference run in a worker thread, so the event loop keeps serving others.

Images go through :func:`mnistkit.preprocess.image.preprocess_image`, the same
function ``mnistkit predict`` and image-folder training use; JSON pixels do too
(a 28x28 bright-on-dark array passes through it unchanged).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnistkit.errors import InputImageError
from mnistkit.preprocess.image import MAX_PIXELS, SIDE, load_image, preprocess_image

#: Largest request body accepted, in bytes (413 above it).
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Threads that decode and predict; more than the cores only adds GIL contention.
WORKER_THREADS = 2
#: Content types ``POST /predict`` accepts.
MULTIPART, JSON_TYPE = "multipart/form-data", "application/json"

_PREDICT_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {"schema": {"type": "object", "required": ["file"],
                                   "properties": {"file": {"type": "string", "format": "binary"}}}},
            JSON_TYPE: {"schema": {"type": "object", "required": ["pixels"], "properties": {"pixels": {
                "type": "array", "minItems": SIDE, "maxItems": SIDE, "items": {
                    "type": "array", "minItems": SIDE, "maxItems": SIDE,
                    "items": {"type": "number", "minimum": 0, "maximum": 255}}}}}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class ApiError(Exception):
    """A client error: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(checkpoint_path: str | Path, *, max_body_bytes: int = MAX_BODY_BYTES,
               max_pixels: int = MAX_PIXELS, workers: int = WORKER_THREADS) -> FastAPI:
    """Load the checkpoint (a file or run directory) once and build the app around it."""
    from mnistkit.api import resolve_checkpoint_path
    from mnistkit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint_path(checkpoint_path))
    app = FastAPI(title="mnistkit", description="Predict handwritten digits with an mnistkit checkpoint.",
                  version=str(ckpt.meta.get("versions", {}).get("mnistkit", "")))
    app.state.checkpoint = ckpt
    # A small dedicated pool: more threads than cores only fight over the GIL and
    # stretch every request's latency; waiting requests queue here, off the event loop.
    limiter = anyio.CapacityLimiter(workers)

    async def in_worker(fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    _add_error_handlers(app)
    page = resources.files("mnistkit.serving").joinpath("static/index.html").read_text(encoding="utf-8")

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
        return ckpt.meta

    @app.post("/predict", openapi_extra=_PREDICT_BODY_DOC, response_class=JSONResponse,
              responses={200: {"description": "{label, probability, probabilities: {class name: p}}"}})
    async def predict(request: Request) -> JSONResponse:
        """Predict one digit from an uploaded image or from 28x28 JSON pixels."""
        kind = _content_kind(request.headers.get("content-type", ""))
        body = await read_limited_body(request, max_body_bytes)
        if not body:
            raise ApiError(400, "empty request body: send an image file (multipart field 'file') "
                                "or JSON {\"pixels\": 28x28 numbers 0-255}")
        if kind == "json":
            pixels = parse_pixels_json(body)
            result = await in_worker(predict_pixels, ckpt, pixels)
        else:
            if kind == "multipart":
                data, name = await _multipart_file(request, body)
            else:
                data, name = body, "request body"
            result = await in_worker(predict_image_bytes, ckpt, data, name, max_pixels)
        return JSONResponse(result)  # plain floats and strings: skip FastAPI's generic encoder

    return app


#: The page loads nothing from elsewhere; the policy makes the browser enforce that.
_PAGE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data: blob:; connect-src 'self'")


def _content_kind(content_type: str) -> str:
    """``multipart`` / ``json`` / ``image`` from a Content-Type header, else a 415 error."""
    media = content_type.split(";")[0].strip().lower()
    if media == MULTIPART:
        return "multipart"
    if media == JSON_TYPE or media.endswith("+json"):
        return "json"
    if media.startswith("image/") or media == "application/octet-stream":
        return "image"
    raise ApiError(415, f"unsupported Content-Type {media or '(none)'!r}; send {MULTIPART} with a field "
                        f"'file', {JSON_TYPE} with {{\"pixels\": ...}}, or an image/* body")


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it.

    A declared Content-Length over the limit is refused before reading; a body
    without one (chunked) is counted as it streams and dropped once too big.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, f"request body of {int(declared):,} bytes is over the limit of {limit:,} bytes")
        except ValueError:
            raise ApiError(400, f"bad Content-Length header {declared!r}") from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_file(request: Request, body: bytes) -> tuple[bytes, str]:
    """The bytes and filename of the form field ``file``, parsed from the already-read body."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except Exception as exc:  # python-multipart / starlette raise several types for malformed forms
        raise ApiError(400, f"malformed multipart form: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart form needs a file in the field named 'file'")
        data = await upload.read()
        return data, upload.filename or "uploaded file"
    finally:
        await form.close()


def parse_pixels_json(body: bytes) -> np.ndarray:
    """``{"pixels": 28x28 numbers in 0..255}`` -> float array ``(28, 28)``; anything else is a 4xx."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "pixels" not in doc:
        raise ApiError(422, "JSON body must be an object with a field 'pixels' (28 rows of 28 numbers 0-255)")
    rows = doc["pixels"]
    if not isinstance(rows, list) or len(rows) != SIDE or not all(isinstance(r, list) and len(r) == SIDE for r in rows):
        raise ApiError(422, f"'pixels' must be {SIDE} rows of {SIDE} numbers 0-255")
    number = (int, float)  # exact types: bool is an int subclass, and numeric strings must not slip in
    if not all(type(v) in number for r in rows for v in r):
        raise ApiError(422, "'pixels' values must be numbers 0-255")
    try:
        pixels = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        raise ApiError(422, "'pixels' values must be finite numbers between 0 and 255") from None
    if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255):
        raise ApiError(422, "'pixels' values must be finite numbers between 0 and 255 (no NaN or infinity)")
    return pixels


def predict_image_bytes(ckpt, data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> dict:
    """Decode + preprocess + predict one uploaded image (runs in a worker thread)."""
    try:
        digit = preprocess_image(load_image(data, max_pixels, name=name))
    except InputImageError as exc:
        raise ApiError(400, str(exc)) from None
    return predict_digit(ckpt, digit)


def predict_pixels(ckpt, pixels: np.ndarray) -> dict:
    """Predict 28x28 JSON pixels, through the same preprocessing as images (runs in a worker thread)."""
    return predict_digit(ckpt, preprocess_image(pixels))


def predict_digit(ckpt, digit: np.ndarray) -> dict:
    """One preprocessed uint8 ``(28, 28)`` digit -> ``{label, probability, probabilities}``."""
    import torch

    from mnistkit.inference import checkpoint_proba

    proba = checkpoint_proba(ckpt, torch.from_numpy(digit).unsqueeze(0))[0].tolist()
    names = ckpt.class_names
    best = max(range(len(proba)), key=proba.__getitem__)
    return {"label": names[best], "probability": round(proba[best], 6),
            "probabilities": {n: round(p, 6) for n, p in zip(names, proba)}}


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": "..."}``, including FastAPI's own validation and 404/405."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        # After a 413 the rest of the body is unread: close rather than reuse the connection.
        headers = {"Connection": "close"} if exc.status == 413 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
