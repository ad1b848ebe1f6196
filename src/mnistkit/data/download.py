"""Downloading one file safely: mirrors in order, md5 checked, atomic rename.

A download is written to a hidden temporary file (``.<name>.<random>.part``) in
the destination folder and renamed into place with :func:`os.replace` only after
its length and md5 are verified, so an interrupted, truncated or corrupt
download never leaves a file under the final name. Only the standard library's
urllib is used; the timeout comes from ``MNISTKIT_DOWNLOAD_TIMEOUT`` (seconds,
default 30).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnistkit.config import seconds_from_env
from mnistkit.errors import DownloadError

DEFAULT_TIMEOUT_S = 30.0
#: Temporary files older than this are leftovers of a killed download and are deleted.
STALE_PART_AGE_S = 600.0
_CHUNK = 1 << 16


def download_timeout() -> float:
    """Seconds to wait on a silent connection, from ``MNISTKIT_DOWNLOAD_TIMEOUT``."""
    return seconds_from_env("MNISTKIT_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S)


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


def download_from_mirrors(file_name: str, mirrors: tuple[str, ...], dest: Path,
                          accept_md5, progress: bool = False) -> list[str]:
    """Fetch ``file_name`` from the first mirror that serves it intact, into ``dest``.

    ``accept_md5(digest) -> bool`` decides whether the bytes are the right file.
    Returns the list of per-mirror failures (empty on first-try success) and
    raises :class:`DownloadError` carrying them if every mirror fails.
    """
    failures: list[str] = []
    timeout = download_timeout()
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file_name
        try:
            _download_one(url, dest, accept_md5, timeout, progress)
            return failures
        except _MirrorFailure as exc:
            failures.append(f"{url}: {exc}")
    raise DownloadError("; ".join(failures) or f"no mirrors configured for {file_name}")


class _MirrorFailure(Exception):
    """One mirror could not deliver a good file (the message says why)."""


def _download_one(url: str, dest: Path, accept_md5, timeout: float, progress: bool) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received, expected = _stream(url, out, timeout, progress)
        if expected is not None and received != expected:
            raise _MirrorFailure(f"truncated: got {received} of {expected} bytes")
        if not accept_md5(digest):
            raise _MirrorFailure(f"wrong md5 {digest} (file corrupt or not the expected one)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out, timeout: float, progress: bool) -> tuple[str, int, int | None]:
    """Copy the response body to ``out``; return (md5, bytes received, Content-Length)."""
    digest = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with _progress_bar(progress, url, expected) as advance:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        raise _MirrorFailure(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _MirrorFailure(f"unreachable ({exc.reason})") from None
    except http.client.IncompleteRead as exc:
        raise _MirrorFailure(f"truncated: connection closed after {received + len(exc.partial)} bytes") from None
    except (socket.timeout, TimeoutError):
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

        self._progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        task = self._progress.add_task(self.url.rsplit("/", 1)[-1], total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False
