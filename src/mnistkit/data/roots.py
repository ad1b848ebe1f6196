"""Where dataset files are looked for and downloaded to, and the download steps every fetcher shares.

Search order (first folder holding the data wins), see :func:`search_roots`:

1. ``data_dir`` (the CLI's ``--data-dir``),
2. ``$MNISTKIT_DATA``,
3. ``./data`` relative to the current directory (the tutorial's root),
4. the user cache directory (``$MNISTKIT_CACHE_DIR``, else ``platformdirs.user_cache_dir("mnistkit")``),
5. dataset-specific system folders (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST).

Downloads go to ``<first writable of data_dir, $MNISTKIT_DATA, cache dir>/<TorchvisionName>/raw``:
an explicit place wins; ``./data`` is never written implicitly. ``$MNISTKIT_MIRRORS``
(comma-separated URL prefixes) replaces every dataset's mirror list, for private
mirrors and tests.

This module knows no dataset format: IDX datasets (:mod:`mnistkit.data.files`) and EMNIST's
archive (:mod:`mnistkit.data.emnist`) both build on it, so neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mnistkit.data.download import clean_stale_parts
from mnistkit.errors import DataFormatError, DatasetNotFoundError, DownloadError

if TYPE_CHECKING:
    from mnistkit.data.spec import DatasetSpec


def cache_dir() -> Path:
    """The per-user cache root: ``$MNISTKIT_CACHE_DIR`` or platformdirs' cache dir."""
    env = os.environ.get("MNISTKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mnistkit"))


def search_roots(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The roots searched for ``spec``'s files, in order (see the module docstring)."""
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("MNISTKIT_DATA"):
        roots.append(Path(os.environ["MNISTKIT_DATA"]).expanduser())
    roots.append(Path("data").absolute())
    roots.append(cache_dir())
    roots.extend(Path(p) for p in spec.extra_roots)
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def find_file(folder: Path, file_name: str) -> Path | None:
    """``folder/file_name``, or its uncompressed twin (name without ``.gz``), if present."""
    for name in (file_name, file_name.removesuffix(".gz")):
        path = folder / name
        if path.is_file():
            return path
    return None


def mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    """``$MNISTKIT_MIRRORS`` (comma-separated URL prefixes) if set, else the spec's mirrors."""
    env = os.environ.get("MNISTKIT_MIRRORS", "").strip()
    if env:
        return tuple(m.strip() for m in env.split(",") if m.strip())
    return spec.mirrors


def download_root(data_dir=None) -> Path | None:
    """The first writable of ``data_dir``, ``$MNISTKIT_DATA``, the cache dir (never ./data implicitly)."""
    candidates = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get("MNISTKIT_DATA"):
        candidates.append(Path(os.environ["MNISTKIT_DATA"]).expanduser())
    candidates.append(cache_dir())
    for root in candidates:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK | os.X_OK):
            return root
    return None


def _how_to_supply(spec: DatasetSpec, data_dir=None) -> str:
    root = Path(data_dir).expanduser() if data_dir else Path("ROOT")
    names = ", ".join(spec.files)
    return (
        f"to supply the files yourself, put {names} in {root / spec.folder_name / 'raw'} and pass "
        f"--data-dir {root} (or set MNISTKIT_DATA={root})"
    )


def not_found_error(spec: DatasetSpec, data_dir=None, reason: str = "") -> DatasetNotFoundError:
    """One message: where we looked, why downloading did not help, how to fix it."""
    looked = ", ".join(str(r) for r in search_roots(spec, data_dir))
    parts = [f"dataset {spec.name!r} not found; looked in: {looked}"]
    if reason:
        parts.append(reason)
    parts.append(_how_to_supply(spec, data_dir))
    return DatasetNotFoundError("; ".join(parts))


def download_folder(spec: DatasetSpec, data_dir=None) -> tuple[Path, tuple[str, ...]]:
    """Where ``spec``'s missing files download to, and the mirrors to try.

    The folder is ``<download root>/<TorchvisionName>/raw``, created, with the partial downloads
    an interrupted run left there removed. No mirror or no writable folder is the one
    not-found error that says how to supply the files instead.
    """
    mirrors = mirrors_for(spec)
    if not mirrors:
        raise not_found_error(spec, data_dir, "it has no download mirrors")
    root = download_root(data_dir)
    if root is None:
        raise not_found_error(spec, data_dir, "no writable folder to download into")
    folder = root / spec.folder_name / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(folder)
    return folder, mirrors


def fetch_missing(
    spec: DatasetSpec,
    data_dir,
    locate: Callable[[DatasetSpec, object], Path | None],
    file_names: Sequence[str],
    download: Callable[[str, Path, tuple[str, ...]], Path],
) -> Path:
    """The steps every fetcher shares: data found anywhere (``locate``) is used as it is; else each
    of ``file_names`` is fetched by ``download(name, folder, mirrors)`` into :func:`download_folder`.

    Returns what the last ``download`` returned (the folder, or the file it wrote). A failed or
    corrupt download is the not-found error naming the file, where we looked and the fix.
    """
    found = locate(spec, data_dir)
    if found is not None:
        return found
    folder, mirrors = download_folder(spec, data_dir)
    where = folder
    for name in file_names:
        try:
            where = download(name, folder, mirrors)
        except (DownloadError, DataFormatError) as exc:
            raise not_found_error(spec, data_dir, f"download of {name} failed: {exc}") from None
    return where
