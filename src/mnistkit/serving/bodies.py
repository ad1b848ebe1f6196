"""Reading and checking request bodies before any model work: the content type, bounded body
reads (413 without buffering an over-limit body, and a larger limit for JPEG photos), multipart
files, a cheap pixel-count check from the image header, and ``{"pixels": ...}`` JSON with its depth
and number-length limits.

Every refusal is an :class:`ApiError`, which the app turns into a 4xx ``{"error": message}``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import numpy as np
from starlette.requests import ClientDisconnect, Request

from mnistkit.preprocess.image import ALLOWED_FORMATS, SIDE
from mnistkit.serving.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_NUMBER_CHARS

#: Content types ``POST /predict`` accepts.
MULTIPART, JSON_TYPE = "multipart/form-data", "application/json"
#: Content types whose body may hold a JPEG photo (and so may be larger than an image of another kind).
PHOTO_TYPES = (MULTIPART, "image/jpeg", "image/pjpeg", "application/octet-stream")
#: The first bytes of every JPEG file (start of image, then a marker).
JPEG_MAGIC = b"\xff\xd8\xff"
#: What a refused large image is told to do: the page and ``mnistkit predict`` need no more than this.
SHRINK_HINT = "shrink it: a digit or a number needs no more than about 1,000 px on the long side"


class ApiError(Exception):
    """A client error (or 503 when saturated): becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def content_kind(content_type: str) -> str:
    """``multipart`` / ``json`` / ``image`` from a Content-Type header, else a 415 error."""
    media = content_type.split(";")[0].strip().lower()
    if media == MULTIPART:
        return "multipart"
    if media == JSON_TYPE or media.endswith("+json"):
        return "json"
    if media.startswith("image/") or media == "application/octet-stream":
        return "image"
    raise ApiError(
        415,
        f"unsupported Content-Type {media or '(none)'!r}; send {MULTIPART} with a field "
        f"'file', {JSON_TYPE} with {{\"pixels\": ...}}, or an image/* body",
    )


def flag(value: str | None, name: str) -> bool:
    """A boolean query parameter: absent, ``0/false/no`` or ``1/true/yes``; else 422."""
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", ""):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ApiError(422, f"query parameter {name}={value[:20]!r} must be 1 or 0 (true/false)")


def may_hold_photo(content_type: str) -> bool:
    """Whether a body of this Content-Type may be a JPEG photo (a form, a JPEG, or untyped bytes)."""
    return content_type.split(";")[0].strip().lower() in PHOTO_TYPES


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, ``None`` without one (chunked); a malformed one is a 400."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        return int(declared)
    except ValueError:
        raise ApiError(400, f"bad Content-Length header {declared[:30]!r}") from None


async def read_limited_body(request: Request, limit: int, hint: str = "") -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it.

    A declared Content-Length over the limit is refused before reading; a body
    without one (chunked) is counted as it streams and dropped once too big.
    ``hint`` (``"; what to do"``) ends the 413's message.
    """
    size = declared_length(request)
    if size is not None and size > limit:
        raise ApiError(413, f"request body of {size:,} bytes is over the limit of {limit:,} bytes{hint}")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"request body is over the limit of {limit:,} bytes{hint}")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer; a 400 keeps it out of the error log
        raise ApiError(400, "client closed the connection before sending the whole body") from None
    return b"".join(chunks)


async def multipart_file(request: Request, body: bytes) -> tuple[bytes, str]:
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


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: its size, format and mode (no pixel decoded)."""

    width: int
    height: int
    format: str
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_reduced(self) -> bool:
        """Whether :func:`~mnistkit.preprocess.image.load_image` decodes it at reduced size: a JPEG in
        grey or RGB (Pillow's draft, 1/2 to 1/8 scale), so its pixel count costs little memory."""
        return self.format == "JPEG" and self.mode in ("L", "RGB")


def image_header(data: bytes) -> ImageHeader | None:
    """The image's header, or ``None`` when it does not parse (``load_image`` then says why).

    Opening reads the header alone (microseconds): enough to choose a :class:`~.lanes.Lane` and a pixel limit.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            return ImageHeader(img.width, img.height, img.format or "", img.mode)
    except Exception:  # any failure is reported by load_image, with its message
        return None


def check_pixels(header: ImageHeader | None, limit: int, jpeg_limit: int, name: str) -> int:
    """The pixel limit for this image (``jpeg_limit`` when it decodes at reduced size, else ``limit``),
    checked from its header: over it is a 400 that says what to do, before any pixel is decoded."""
    allowed = jpeg_limit if header is not None and header.decoded_reduced else limit
    if header is not None and header.pixels > allowed:
        hint = (
            SHRINK_HINT
            if header.decoded_reduced
            else f"send it as a JPEG (up to {jpeg_limit:,} pixels), or {SHRINK_HINT}"
        )
        raise ApiError(
            400,
            f"{name}: image is {header.width}x{header.height} = {header.pixels:,} pixels, "
            f"over the limit of {allowed:,}; {hint}",
        )
    return allowed


# ---------------------------------------------------------------------- JSON pixels

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON text, brackets inside strings ignored; linear time."""
    chars = np.frombuffer(_JSON_STRING.sub(b'""', body), np.uint8)
    step = np.isin(chars, _OPEN).astype(np.int32) - np.isin(chars, _CLOSE).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def _bounded_number(convert):
    def parse(token: str):
        if len(token) > MAX_NUMBER_CHARS:
            raise ApiError(
                422,
                f"'pixels' values must be numbers 0-255; got a number of {len(token):,} characters "
                f"(at most {MAX_NUMBER_CHARS})",
            )
        return convert(token)

    return parse


_parse_int, _parse_float = _bounded_number(int), _bounded_number(float)


def parse_pixels_json(body: bytes) -> np.ndarray:
    """``{"pixels": 28x28 numbers in 0..255}`` -> float array ``(28, 28)``; anything else an :class:`ApiError` 4xx.

    Size, nesting depth and number length are bounded before the values are built, so a
    hostile body costs at most a linear scan of :data:`MAX_JSON_BYTES` bytes.
    """
    if len(body) > MAX_JSON_BYTES:
        raise ApiError(413, f"JSON body of {len(body):,} bytes is over the limit of {MAX_JSON_BYTES:,} bytes")
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise ApiError(
            422,
            f'JSON nested {depth:,} levels deep; at most {MAX_JSON_DEPTH} (send {{"pixels": 28 rows of 28 numbers}})',
        )
    try:
        doc = json.loads(body, parse_int=_parse_int, parse_float=_parse_float)
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
    except OverflowError:  # an integer too large for a float (short tokens cannot be, but stay safe)
        raise ApiError(422, "'pixels' values must be finite numbers between 0 and 255") from None
    if not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255):
        raise ApiError(422, "'pixels' values must be finite numbers between 0 and 255 (no NaN or infinity)")
    return pixels


# ---------------------------------------------------------------------- prediction (worker threads)
