"""Where dataset files are looked for, downloaded to, and how IDX datasets are loaded.

Search order (first folder holding all four files wins), see :func:`search_roots`:

1. ``data_dir`` (the CLI's ``--data-dir``),
2. ``$MNISTKIT_DATA``,
3. ``./data`` relative to the current directory (the tutorial's root),
4. the user cache directory (``$MNISTKIT_CACHE_DIR``, else ``platformdirs.user_cache_dir("mnistkit")``),
5. dataset-specific system folders (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST).

Inside a root, ``ROOT/<TorchvisionName>/raw`` (torchvision's layout, so an
existing torchvision download is reused), ``ROOT/<TorchvisionName>``,
``ROOT/<dataset-name>`` and ``ROOT`` itself (a flat folder) are tried, in that
order. Each file may be ``.gz`` or uncompressed (the same name without ``.gz``).
MNIST, Fashion-MNIST and KMNIST share file names, so a flat folder whose labels
file has another registered dataset's md5 is skipped rather than mistaken.

Downloads go to ``<first writable of data_dir, $MNISTKIT_DATA, cache dir>/<TorchvisionName>/raw``:
an explicit place wins; ``./data`` is never written implicitly. ``$MNISTKIT_MIRRORS``
(comma-separated URL prefixes) replaces every dataset's mirror list, for private
mirrors and tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnistkit.data.dataset import Dataset, make_split
from mnistkit.data.download import clean_stale_parts, download_from_mirrors, md5_of
from mnistkit.data.idx import read_idx
from mnistkit.data.spec import DatasetSpec
from mnistkit.errors import DatasetNotFoundError, DownloadError


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


def candidate_folders(spec: DatasetSpec, root: Path) -> list[Path]:
    """Folders inside ``root`` that may hold the four files, most specific first."""
    names = [root / spec.folder_name / "raw", root / spec.folder_name, root / spec.name, root]
    unique: list[Path] = []
    for folder in names:
        if folder not in unique:
            unique.append(folder)
    return unique


def find_file(folder: Path, file_name: str) -> Path | None:
    """``folder/file_name``, or its uncompressed twin (name without ``.gz``), if present."""
    for name in (file_name, file_name.removesuffix(".gz")):
        path = folder / name
        if path.is_file():
            return path
    return None


def files_in(spec: DatasetSpec, folder: Path) -> list[Path] | None:
    """The four files of ``spec`` in ``folder`` (train images, labels, test images, labels), or None."""
    paths = [find_file(folder, name) for name in spec.files]
    return paths if all(paths) else None  # type: ignore[return-value]


def _belongs_to_other_dataset(spec: DatasetSpec, labels_path: Path) -> bool:
    """In a flat folder, True if the (small) train-labels file is another dataset's, by md5."""
    from mnistkit.data.registry import all_specs

    if not labels_path.name.endswith(".gz"):
        return False
    digest = md5_of(labels_path)
    if spec.md5_ok(labels_path.name, digest):
        return False
    return any(other.name != spec.name and other.md5_ok(labels_path.name, digest) for other in all_specs())


def locate_files(spec: DatasetSpec, data_dir=None) -> list[Path] | None:
    """The four files of the first folder (in search order) that holds them all, or None."""
    for root in search_roots(spec, data_dir):
        for folder in candidate_folders(spec, root):
            paths = files_in(spec, folder)
            if paths is None:
                continue
            if folder == root and _belongs_to_other_dataset(spec, paths[1]):
                continue
            return paths
    return None


def locate_folder(spec: DatasetSpec, data_dir=None) -> Path | None:
    """The folder holding ``spec``'s files, or None (the default ``locator``)."""
    paths = locate_files(spec, data_dir)
    return paths[0].parent if paths else None


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


def max_download_bytes(spec: DatasetSpec, file_name: str) -> int:
    """Most bytes one of ``spec``'s IDX files may have: its uncompressed size from the known image
    counts (16 + 784 bytes per image, 8 + 1 per label; gzip never grows such data by more than a
    fraction of a percent) plus 1 % and 64 KiB; without known counts, the general download cap."""
    from mnistkit.data.download import DEFAULT_MAX_BYTES

    if not spec.sizes or file_name not in spec.files:
        return DEFAULT_MAX_BYTES
    index = spec.files.index(file_name)
    count = spec.sizes[index // 2]
    raw = 16 + count * 784 if index % 2 == 0 else 8 + count
    return raw + raw // 100 + 64 * 1024


def fetch_idx_files(spec: DatasetSpec, data_dir=None, progress: bool = True) -> Path:
    """Return the folder holding ``spec``'s files, downloading the missing ones first.

    Files found in any search root are used as they are. Otherwise each missing
    file is downloaded (mirrors in order, md5 checked, atomic rename) into
    ``<download root>/<TorchvisionName>/raw``.
    """
    found = locate_folder(spec, data_dir)
    if found is not None:
        return found
    mirrors = mirrors_for(spec)
    if not mirrors:
        raise not_found_error(spec, data_dir, "it has no download mirrors")
    root = download_root(data_dir)
    if root is None:
        raise not_found_error(spec, data_dir, "no writable folder to download into")
    folder = root / spec.folder_name / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(folder)
    for file_name in spec.files:
        if find_file(folder, file_name) is not None:
            continue
        try:
            download_from_mirrors(
                file_name,
                mirrors,
                folder / file_name,
                lambda d, f=file_name: spec.md5_ok(f, d),
                progress,
                max_bytes=max_download_bytes(spec, file_name),
            )
        except DownloadError as exc:
            raise not_found_error(spec, data_dir, f"download of {file_name} failed on every mirror: {exc}") from None
    return folder


def load_idx_dataset(spec: DatasetSpec, data_dir=None, download: bool = True, progress: bool = False) -> Dataset:
    """The default ``loader``: find (or download) the four IDX files and read both splits."""
    if download:
        folder = fetch_idx_files(spec, data_dir, progress)
        paths = files_in(spec, folder)
    else:
        paths = locate_files(spec, data_dir)
        if paths is None:
            raise not_found_error(
                spec, data_dir, f"download=False, so nothing was downloaded (run `mnistkit data fetch {spec.name}`)"
            )
    assert paths is not None
    return read_idx_splits(spec.name, paths, list(spec.class_names), spec.norm)


def read_idx_splits(name: str, paths, class_names: list[str] | None = None, norm=None) -> Dataset:
    """Read train/test images and labels from four IDX paths into a validated :class:`Dataset`.

    Without ``class_names`` (a user's own IDX folder) the classes are "0".."max label"
    (at least ten); without ``norm`` the mean/std is computed from the training images.
    """
    from mnistkit.data.dataset import compute_normalization, numbered_class_names

    train_images, train_labels, test_images, test_labels = (read_idx(p) for p in paths)
    if class_names is None:
        class_names = numbered_class_names([train_labels, test_labels], f"{paths[1]} + {paths[3]}")
    train = make_split(train_images, train_labels, len(class_names), f"{paths[0]} + {paths[1]}")
    test = make_split(test_images, test_labels, len(class_names), f"{paths[2]} + {paths[3]}")
    return Dataset(
        name=name,
        train=train,
        test=test,
        class_names=list(class_names),
        norm=norm or compute_normalization(train.images),
        source=str(Path(paths[0]).parent),
    )
