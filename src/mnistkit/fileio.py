"""Bounded reads and atomic writes: the one place that touches untrusted files and writes results.

Reading. Every file mnistkit reads from a user (IDX, CSV, checkpoints, a run's
``config.json``) goes through :func:`read_bytes` or :func:`open_stream`, which

- refuse anything that is not a regular file (a FIFO would block forever, a
  device such as ``/dev/zero`` never ends) *before* opening it;
- stop at a caller-given size cap instead of reading the whole file first;
- decompress gzip as a stream, so a 2 MB ``.gz`` that would expand to 2 GiB is
  stopped at the cap (or at :data:`MAX_EXPANSION` times its compressed size)
  having held only a few MB;

and turn every fault into the caller's own :class:`~mnistkit.errors.MnistkitError`
subclass naming the file, so no ``OSError``/``zlib`` traceback reaches a user.

A run folder's own files are read with ``follow_symlinks=False``: a link planted
there (``log.txt -> /etc/shadow``) is refused, never read into a report.
:func:`read_tail` reads only the end of a file (a log), however large it is.

Writing. :func:`atomic_write_bytes` writes to a temporary file of the form
``.<name>.<8 random chars>.tmp`` beside the target and renames it into place,
so a crash or a full disk never leaves a half-written file under the final
name, and a symlink or FIFO planted at the target is replaced, never written
through; the file gets the mode ``open()`` would give it (``0666 & ~umask``),
not ``mkstemp``'s private 0600. :func:`clean_stale_temporaries` removes such
leftovers (from a ``kill -9``) when a folder is reopened. The other two ways
to write: :func:`open_append` (a log that grows: ``O_NOFOLLOW``, regular files
only) and :func:`write_new_file` (a file under a name nobody holds yet: it
never replaces anything, so it cannot clobber an input).
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from mnistkit.errors import ConfigError, MnistkitError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: The name ``-`` stands for one input read from standard input.
STDIN = "-"

_GZIP_MAGIC = b"\x1f\x8b"
#: A gzip stream may expand at most this many times its compressed size (beyond
#: :data:`EXPANSION_ALLOWANCE`): real image data compresses 2-6x, a zero-filled bomb 1000x.
MAX_EXPANSION = 100
#: Decompressed bytes always allowed regardless of the ratio (small synthetic files of zeros are fine).
EXPANSION_ALLOWANCE = 64 * 1024**2
#: Read granularity for streams (bytes).
CHUNK = 1 << 20
TEMP_SUFFIX = ".tmp"
#: Longest file name (bytes) that Linux and macOS filesystems accept.
NAME_MAX = 255
#: Random characters :func:`tempfile.mkstemp` puts in a name.
_RANDOM_CHARS = 8
#: :func:`write_new_file` gives up after this many taken names (``stem~2`` ... ``stem~N``).
MAX_NAME_TRIES = 10_000
#: Our temporaries: ``.<name>.<random>.tmp`` (tempfile's random part is 8 of [a-z0-9_]).
_TEMP_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _fail(error: type[MnistkitError], path: Path, message: str) -> MnistkitError:
    return error(f"{path}: {message}")


def regular_file_size(
    path: str | os.PathLike, error: type[MnistkitError], what: str = "file", follow_symlinks: bool = True
) -> int:
    """Size in bytes of ``path``, refusing missing files, folders, FIFOs and devices (without opening them);
    with ``follow_symlinks=False`` a symbolic link is refused too."""
    path = Path(path)
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise _fail(error, path, f"no such {what}") from None
    except OSError as exc:
        raise _fail(error, path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISLNK(st.st_mode):
        raise _fail(error, path, f"is a symbolic link; a {what} must be a regular file, not a link to one")
    if stat.S_ISDIR(st.st_mode):
        raise _fail(error, path, f"is a directory, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise _fail(error, path, f"is {kind}, not a regular file; give a {what}")
    return st.st_size


def _open_regular(
    path: Path, error: type[MnistkitError], what: str, follow_symlinks: bool = True
) -> tuple[BinaryIO, int]:
    """Open after the type check; ``O_NONBLOCK`` so a file swapped for a FIFO in between cannot hang us,
    and ``O_NOFOLLOW`` without ``follow_symlinks`` so one swapped for a link is not followed."""
    regular_file_size(path, error, what, follow_symlinks)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _fail(error, path, f"cannot be read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _fail(error, path, f"is not a regular file; give a {what}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st.st_size


def read_bytes(
    path: str | os.PathLike,
    limit: int,
    error: type[MnistkitError],
    what: str = "file",
    follow_symlinks: bool = True,
) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (not decompressed)."""
    path = Path(path)
    f, size = _open_regular(path, error, what, follow_symlinks)
    with f:
        if size > limit:
            raise _fail(error, path, f"is {size:,} bytes; a {what} may be at most {limit:,}")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise _fail(error, path, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew while we read it
        raise _fail(error, path, f"is over {limit:,} bytes; a {what} may be at most {limit:,}")
    return data


def read_tail(
    path: str | os.PathLike, limit: int, error: type[MnistkitError], what: str = "file"
) -> tuple[bytes, bool]:
    """The last ``limit`` bytes of a regular file that is not a symlink, and whether anything was cut.

    For logs: a report shows their end, and a 2 GB log must cost what its last
    ``limit`` bytes cost, not what the whole file would.
    """
    path = Path(path)
    f, size = _open_regular(path, error, what, follow_symlinks=False)
    with f:
        try:
            f.seek(max(0, size - limit))
            data = f.read(limit)
        except OSError as exc:
            raise _fail(error, path, f"cannot be read ({exc.strerror or exc})") from None
    return data, size > limit


class BoundedStream:
    """A file, transparently gunzipped, that refuses to yield more than ``limit`` bytes in total.

    Use :func:`open_stream`. :meth:`read` returns at most ``n`` bytes (fewer only
    at the end).
    """

    def __init__(self, path: Path, limit: int, error: type[MnistkitError], what: str):
        self.path, self.limit, self.error, self.what = path, limit, error, what
        self._raw, self.compressed_size = _open_regular(path, error, what)
        try:
            self.gzipped = self._raw.read(2) == _GZIP_MAGIC
            self._raw.seek(0)
        except OSError as exc:
            self._raw.close()
            raise _fail(error, path, f"cannot be read ({exc.strerror or exc})") from None
        self._f: BinaryIO = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gzipped else self._raw  # type: ignore[assignment]
        self.produced = 0

    def __enter__(self) -> BoundedStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, read in :data:`CHUNK` pieces so memory follows the data actually present."""
        parts, got = [], 0
        while got < n:
            piece = self._read_some(min(CHUNK, n - got))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def read_buffer(self, n: int) -> tuple[memoryview, int]:
        """Read up to ``n`` bytes into a fresh buffer; return (buffer, bytes filled).

        The buffer comes from ``numpy.empty``, whose untouched pages cost no
        memory, so a header that lies about its size costs only the bytes that
        really arrive, and an honest one costs one copy of the payload, not two.
        """
        import numpy as np

        buffer = memoryview(np.empty(n, dtype=np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer
        got = 0
        while got < n:
            piece = self._readinto(buffer[got : got + min(CHUNK, n - got)])
            if not piece:
                break
            got += piece
        return buffer, got

    def _readinto(self, view: memoryview) -> int:
        try:
            count = self._f.readinto(view)  # type: ignore[attr-defined]
        except (OSError, EOFError, zlib.error) as exc:
            if not self.gzipped:
                raise _fail(
                    self.error, self.path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
                ) from None
            raise _fail(self.error, self.path, f"gzip data is truncated or corrupt ({exc})") from None
        self.produced += count or 0
        self._check_bounds()
        return count or 0

    def at_end(self) -> bool:
        return not self._read_some(1)

    def _read_some(self, n: int) -> bytes:
        try:
            piece = self._f.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            if not self.gzipped:
                raise _fail(
                    self.error, self.path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
                ) from None
            raise _fail(self.error, self.path, f"gzip data is truncated or corrupt ({exc})") from None
        self.produced += len(piece)
        self._check_bounds()
        return piece

    def _check_bounds(self) -> None:
        if self.produced > self.limit:
            raise _fail(
                self.error,
                self.path,
                f"holds more than {self.limit:,} bytes"
                f"{' after decompression' if self.gzipped else ''}; a {self.what} may be at most "
                f"{self.limit:,}",
            )
        if (
            self.gzipped
            and self.produced > EXPANSION_ALLOWANCE
            and self.produced > MAX_EXPANSION * max(1, self.compressed_size)
        ):
            raise _fail(
                self.error,
                self.path,
                f"gzip data expands more than {MAX_EXPANSION}x "
                f"({self.compressed_size:,} bytes to over {self.produced:,}); refusing a "
                "decompression bomb",
            )


def open_stream(path: str | os.PathLike, limit: int, error: type[MnistkitError], what: str = "file") -> BoundedStream:
    """A :class:`BoundedStream` over a regular file, gunzipped when it starts with gzip's magic bytes."""
    return BoundedStream(Path(path), limit, error, what)


# ----------------------------------------------------------------------------- writing


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def temp_prefix(name: str, suffix: str = TEMP_SUFFIX) -> str:
    """``.<name>.``, with ``name`` shortened so that the whole temporary name fits in :data:`NAME_MAX` bytes.

    A valid name of up to 255 bytes must stay writable: its temporary would otherwise be 14 bytes over.
    """
    room = NAME_MAX - len(suffix.encode()) - _RANDOM_CHARS - 2
    return f".{os.fsdecode(os.fsencode(name)[:room])}."


def make_temp(path: str | os.PathLike, suffix: str = TEMP_SUFFIX) -> tuple[int, Path]:
    """A new temporary file ``.<name>.<random><suffix>`` beside ``path``, with open()'s usual mode."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name, suffix), suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError:
        pass  # a filesystem without modes (e.g. some FUSE/Windows shares): keep mkstemp's
    return fd, Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file + fsync + rename; the old file survives any failure.

    An ``OSError`` always names ``path`` (a full disk's ``ENOSPC`` from ``write``
    carries no file name of its own).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    return path


def open_append(path: str | os.PathLike, error: type[MnistkitError], what: str = "file") -> TextIO:
    """``path`` opened for appending text, created if absent; a symlink, FIFO or device there is refused.

    A log grows line by line, so it cannot be renamed into place: ``O_NOFOLLOW``
    keeps a planted link from sending the lines to its target, ``O_NONBLOCK``
    keeps a FIFO from hanging the open, and the type is checked on the open file.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if os.path.islink(path):
            raise _fail(error, path, f"is a symbolic link; a {what} is written only as a regular file") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise _fail(error, path, f"is a FIFO (named pipe); a {what} is written only as a regular file") from None
        raise _fail(error, path, f"cannot be written ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _fail(error, path, f"is not a regular file; a {what} is written only as a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


def write_new_file(folder: str | os.PathLike, stem: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/<stem><suffix>``, or ``<stem>~2<suffix>``... when that name is taken.

    Nothing that exists is ever replaced (an input, a file of an earlier call, a
    link): the complete file is linked to its name, which fails when the name
    exists, so a reader never sees half of it either.
    """
    folder = Path(folder)
    fd, tmp = make_temp(folder / f"{stem}{suffix}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        for n in range(1, MAX_NAME_TRIES + 1):
            path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}~{n}{suffix}")
            try:
                _link_new(tmp, path, data)
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(folder / f"{stem}{suffix}")) from None
    finally:
        tmp.unlink(missing_ok=True)
    raise FileExistsError(errno.EEXIST, f"{MAX_NAME_TRIES} names like it are taken", str(folder / f"{stem}{suffix}"))


def _link_new(tmp: Path, path: Path, data: bytes) -> None:
    """Give the complete file ``tmp`` the name ``path``, failing with FileExistsError if it is taken.

    Where the filesystem has no hard links (FAT, some network shares) the file is
    written under its name with ``O_EXCL`` instead: it may then be seen half
    written, but still never replaces anything.
    """
    try:
        os.link(tmp, path, follow_symlinks=False)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.<random>.tmp`` files left in ``folder`` by a killed atomic write; return them.

    Only call this for a folder that no other live process is writing to (a run
    directory being resumed): the temporaries are deleted whatever their age.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        if _TEMP_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def input_stem(path: str) -> str:
    """The stem an input's saved images are named after (``stdin`` for ``-``)."""
    return "stdin" if path == STDIN else Path(path).stem or "input"


def save_pngs(items: Sequence[tuple[str, np.ndarray]], folder: str | Path) -> list[Path]:
    """Write each ``(stem, uint8 image)`` as ``<folder>/<stem>.png`` (``~2``... when taken: nothing
    that exists is replaced), for ``--save-input``."""
    from PIL import Image

    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--save-input {folder}: cannot create the folder ({exc.strerror or exc})") from None
    written = []
    for stem, digit in items:
        buf = io.BytesIO()
        Image.fromarray(digit).save(buf, format="PNG")
        written.append(write_new_file(out, stem, ".png", buf.getvalue()))
    return written
