"""Downloading one file safely: mirrors in order, md5 checked, atomic rename.

A download is written to a hidden temporary file (``.<name>.<random>.part``) in
the destination folder and renamed into place with :func:`os.replace` only after
its length and md5 are verified, so an interrupted, truncated or corrupt
download never leaves a file under the final name. Only the standard library's
urllib is used.

Three bounds keep a bad mirror from filling the disk or hanging a run:
a size cap (the caller's expected size plus a margin; a server that keeps
streaming is cut off there), a per-read timeout for a silent connection
(``MNISTKIT_DOWNLOAD_TIMEOUT``, seconds, default 30), and an overall deadline
for each file across all its mirrors (``MNISTKIT_DOWNLOAD_DEADLINE``, default
3600 s), so a mirror dripping a byte at a time cannot stretch a download
forever.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mnistkit.environ import seconds_from_env
from mnistkit.errors import DownloadError
from mnistkit.fileio import make_temp

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_DEADLINE_S = 3600.0
#: Size cap when the caller knows no better (bytes).
DEFAULT_MAX_BYTES = 1024**3
#: Temporary files older than this are leftovers of a killed download and are deleted.
STALE_PART_AGE_S = 600.0
_CHUNK = 1 << 16


def download_timeout() -> float:
    """Seconds to wait on a silent connection, from ``MNISTKIT_DOWNLOAD_TIMEOUT``."""
    return seconds_from_env("MNISTKIT_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S)


def download_deadline() -> float:
    """Seconds one file's download may take in all, from ``MNISTKIT_DOWNLOAD_DEADLINE``."""
    return seconds_from_env("MNISTKIT_DOWNLOAD_DEADLINE", DEFAULT_DEADLINE_S)


def md5_of(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def clean_stale_parts(folder: Path, max_age_s: float = STALE_PART_AGE_S) -> None:
    """Delete temporary files left by killed downloads (younger ones may be a live download)."""
    now = time.time()
    for part in folder.glob(".*.part"):
        try:
            if now - part.stat().st_mtime > max_age_s:
                part.unlink()
        except OSError:
            pass


def download_from_mirrors(
    file_name: str,
    mirrors: tuple[str, ...],
    dest: Path,
    accept_md5,
    progress: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Fetch ``file_name`` from the first mirror that serves it intact, into ``dest``.

    ``accept_md5(digest) -> bool`` decides whether the bytes are the right file;
    a mirror sending more than ``max_bytes`` is cut off there. Returns the list
    of per-mirror failures (empty on first-try success) and raises
    :class:`DownloadError` carrying them if every mirror fails or the deadline passes.
    """
    failures: list[str] = []
    timeout, allowed = download_timeout(), download_deadline()
    deadline = time.monotonic() + allowed
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file_name
        if time.monotonic() >= deadline:
            failures.append(f"{url}: not tried, the {allowed:g} s deadline had passed (MNISTKIT_DOWNLOAD_DEADLINE)")
            continue
        try:
            _download_one(url, dest, accept_md5, _Limits(timeout, deadline, allowed, max_bytes), progress)
            return failures
        except _MirrorFailure as exc:
            failures.append(f"{url}: {exc}")
    raise DownloadError("; ".join(failures) or f"no mirrors configured for {file_name}")


class _MirrorFailure(Exception):
    """One mirror could not deliver a good file (the message says why)."""


@dataclass(frozen=True)
class _Limits:
    timeout: float  # seconds per read
    deadline: float  # time.monotonic() by which the file must be complete
    allowed: float  # the deadline in seconds, for messages
    max_bytes: int


def _download_one(url: str, dest: Path, accept_md5, limits: _Limits, progress: bool) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify, then rename into place."""
    fd, tmp = make_temp(dest, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received, expected = _stream(url, out, limits, progress)
        if expected is not None and received != expected:
            raise _MirrorFailure(f"truncated: got {received} of {expected} bytes")
        if not accept_md5(digest):
            raise _MirrorFailure(f"wrong md5 {digest} (file corrupt or not the expected one)")
        os.replace(tmp, dest)
    except OSError as exc:  # a full disk: name the file (write errors carry no name of their own)
        if isinstance(exc, ConnectionError) or exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from None
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out, limits: _Limits, progress: bool) -> tuple[str, int, int | None]:
    """Copy the response body to ``out`` within ``limits``; return (md5, bytes received, Content-Length)."""
    digest = hashlib.md5()
    received = 0
    timeout = limits.timeout
    try:
        with urllib.request.urlopen(
            url, timeout=max(0.001, min(timeout, limits.deadline - time.monotonic()))
        ) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > limits.max_bytes:
                raise _MirrorFailure(f"announces {expected:,} bytes, more than the {limits.max_bytes:,} expected")
            with _progress_bar(progress, url, expected) as advance:
                while chunk := response.read1(_CHUNK):  # whatever has arrived: a drip cannot hold us
                    received += len(chunk)
                    if received > limits.max_bytes:
                        raise _MirrorFailure(f"sent more than the {limits.max_bytes:,} bytes expected; cut off")
                    if time.monotonic() > limits.deadline:
                        raise _MirrorFailure(
                            f"not complete within the {limits.allowed:g} s deadline "
                            f"({received:,} bytes received; MNISTKIT_DOWNLOAD_DEADLINE)"
                        )
                    out.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise _MirrorFailure(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _MirrorFailure(f"unreachable ({exc.reason})") from None
    except http.client.IncompleteRead as exc:
        raise _MirrorFailure(f"truncated: connection closed after {received + len(exc.partial)} bytes") from None
    except TimeoutError:
        raise _MirrorFailure(f"timed out after {timeout:g} s (MNISTKIT_DOWNLOAD_TIMEOUT)") from None
    except (http.client.HTTPException, ConnectionError, ValueError) as exc:
        raise _MirrorFailure(f"{type(exc).__name__}: {exc}") from None
    return digest.hexdigest(), received, expected


class _progress_bar:
    """A rich progress bar on stderr, shown only when asked and stderr is a terminal."""

    def __init__(self, enabled: bool, url: str, total: int | None):
        self.enabled = enabled and sys.stderr.isatty()
        self.url, self.total = url, total
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self._progress = Progress(
            *Progress.get_default_columns(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(self.url.rsplit("/", 1)[-1], total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False
