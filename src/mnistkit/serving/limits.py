"""What a client's request may cost the server: every limit of ``mnistkit serve`` in one place.

Each request is bounded (body size and time, JSON shape, pixels, worker lanes), the server as a
whole is bounded (:data:`LIMIT_CONCURRENCY`), and so is each client's share of it: one source
address (for IPv6, one /64) holds at most :data:`CLIENT_CONNECTIONS` connections and :data:`CLIENT_REQUESTS` requests
in progress, so a slow or hostile client uses up its own share, not ``/healthz`` or other clients'.
Behind a reverse proxy every request comes from the proxy's address: there raise or turn off
(0) the per-client limits and let the proxy limit each client.

Imports nothing heavy, so the CLI's help can show these defaults without loading FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest request body accepted, in bytes (413 above it). The page sends a drawing of ~10 KB
#: and resizes photos to at most 1,024 px a side (~200 KB JPEG) before uploading them.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Largest body holding a JPEG photo, in bytes: a 12-megapixel phone JPEG is 2-6 MB, and a JPEG is
#: decoded at 1/2-1/8 scale, to the size a digit or a number needs. A body over MAX_BODY_BYTES is
#: read only when it declares its Content-Length, and is refused (413) unless it holds a JPEG.
MAX_PHOTO_BYTES = 12 * 1024 * 1024
#: Such photo bodies being read or worked on at once, server-wide (503 beyond, with Retry-After).
#: Each holds at most ~3 x MAX_PHOTO_BYTES (the body, the chunks it was joined from or the copy
#: multipart parsing makes, and the file's bytes), so photos add at most ~72 MiB to the bodies below.
LARGE_UPLOADS = 2
#: Of those, the ones one client (source address) may have in progress: one, so a single client
#: sending slow photos cannot hold every photo slot.
CLIENT_LARGE_UPLOADS = 1
#: Largest JSON body: 784 numbers fit in ~25 KB even written with 30 characters each.
MAX_JSON_BYTES = 64 * 1024
#: Deepest JSON nesting accepted; ``{"pixels": [[...]]}`` needs 3.
MAX_JSON_DEPTH = 8
#: Longest JSON number token accepted, in characters (a float64 needs at most 24).
MAX_NUMBER_CHARS = 32
#: Largest image the server decodes, in pixels (2,000 x 2,000). ``mnistkit predict`` allows
#: :data:`~mnistkit.preprocess.image.MAX_PIXELS`; a 28x28 model needs no more than this, and a
#: server decodes for strangers: a 7,000 x 7,000 16-bit PNG costs over 1 GB.
SERVE_MAX_PIXELS = 4_000_000
#: Largest JPEG (8-bit grey or RGB) the server decodes, in pixels: as ``mnistkit predict`` allows.
#: Those decode at reduced size (Pillow's draft), so a 48-megapixel 8000 x 6000 phone photo becomes
#: 2,000 x 1,500 grey pixels: 200 ms and ~3 MB (baseline), 0.9 s and ~40 MB (progressive), in one thread.
SERVE_MAX_JPEG_PIXELS = 50_000_000
#: Images up to this many pixels are "light" (a 400x400 canvas is 160,000; 512x512 fits).
LIGHT_MAX_PIXELS = 300_000
#: Threads for light work (JSON pixels, drawings, small images): one per core of a small machine.
LIGHT_WORKERS = 2
#: Light requests allowed to wait for a thread before 503 (each costs about a millisecond).
LIGHT_QUEUE = 64
#: Threads for large images: one, so they cannot take every core from the light lane.
HEAVY_WORKERS = 1
#: Scheduling priority (nice) of those threads: below the light lane's, so they use spare CPU.
HEAVY_NICE = 10
#: Large images allowed to wait for that thread; more get 503 at once, with Retry-After.
HEAVY_QUEUE = 2
#: Seconds a client has to send the whole request body (408 after).
BODY_TIMEOUT_S = 10.0
#: Seconds a client has to send a request's headers, from connecting or from the previous response.
HEADER_TIMEOUT_S = 10.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 5
#: Open connections (and requests in progress) at most, all clients together; beyond it uvicorn
#: answers 503. With the app's body limits this also bounds the memory that bodies being read can
#: take (64 x 2 MiB, and LARGE_UPLOADS photos of at most MAX_PHOTO_BYTES).
LIMIT_CONCURRENCY = 64
#: Open connections one client (one source address) may hold; one more is answered 503 and closed
#: at once, so it holds no slot. A quarter of :data:`LIMIT_CONCURRENCY`: a client that keeps its
#: whole share busy (slow bodies, say) leaves the other 48 to everyone else. A browser opens 6.
CLIENT_CONNECTIONS = 16
#: ``POST /predict`` requests one client may have in progress (body being read, waiting for a
#: thread, or computing); one more gets 503 at once, its body unread. Half its connections, so one
#: client holds at most 8 of the light lane's 66 places (it can still fill the large-image lane's 3).
CLIENT_REQUESTS = 8
#: Seconds a refused connection (over its client's share) is read and dropped after its 503, so
#: the request the client was sending does not reset the connection before the 503 is read.
REFUSAL_LINGER_S = 1.0
#: Largest request line + headers, in bytes (h11's default is 16 KiB too; named here to be seen).
MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class Limits:
    """Everything a client's request may cost; :func:`~mnistkit.serving.app.create_app` and
    :func:`~mnistkit.serving.server.serve_forever` take one; its defaults are the constants above."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_pixels: int = SERVE_MAX_PIXELS
    max_jpeg_pixels: int = SERVE_MAX_JPEG_PIXELS
    max_photo_bytes: int = MAX_PHOTO_BYTES
    large_uploads: int = LARGE_UPLOADS  # 0: no body over max_body_bytes is read
    client_large_uploads: int = CLIENT_LARGE_UPLOADS  # 0: no per-client limit
    light_max_pixels: int = LIGHT_MAX_PIXELS
    light_workers: int = LIGHT_WORKERS
    light_queue: int = LIGHT_QUEUE
    heavy_workers: int = HEAVY_WORKERS
    heavy_queue: int = HEAVY_QUEUE
    body_timeout_s: float = BODY_TIMEOUT_S
    header_timeout_s: float = HEADER_TIMEOUT_S
    client_connections: int = CLIENT_CONNECTIONS  # 0: no per-client limit (behind a proxy that sets its own)
    client_requests: int = CLIENT_REQUESTS  # 0: no per-client limit
