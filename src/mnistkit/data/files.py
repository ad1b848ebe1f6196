"""IDX datasets (MNIST, Fashion-MNIST, KMNIST and specs like them): find their four files,
download the missing ones, and read both splits.

Inside a search root (see :mod:`mnistkit.data.roots`), ``ROOT/<TorchvisionName>/raw``
(torchvision's layout, so an existing torchvision download is reused),
``ROOT/<TorchvisionName>``, ``ROOT/<dataset-name>`` and ``ROOT`` itself (a flat folder) are
tried, in that order. Each file may be ``.gz`` or uncompressed (the same name without
``.gz``). MNIST, Fashion-MNIST and KMNIST share file names, so a flat folder whose labels
file has another registered dataset's md5 is skipped rather than mistaken.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mnistkit.data.dataset import Dataset, make_split
from mnistkit.data.download import download_from_mirrors, md5_of
from mnistkit.data.idx import read_idx
from mnistkit.data.roots import fetch_missing, find_file, not_found_error, search_roots

if TYPE_CHECKING:
    from mnistkit.data.spec import DatasetSpec


def candidate_folders(spec: DatasetSpec, root: Path) -> list[Path]:
    """Folders inside ``root`` that may hold the four files, most specific first."""
    names = [root / spec.folder_name / "raw", root / spec.folder_name, root / spec.name, root]
    unique: list[Path] = []
    for folder in names:
        if folder not in unique:
            unique.append(folder)
    return unique


def files_in(spec: DatasetSpec, folder: Path) -> list[Path] | None:
    """The four files of ``spec`` in ``folder`` (train images, labels, test images, labels), or None."""
    paths = [find_file(folder, name) for name in spec.files]
    return paths if all(paths) else None  # type: ignore[return-value]


def _belongs_to_other_dataset(spec: DatasetSpec, labels_path: Path) -> bool:
    """In a flat folder, True if the (small) train-labels file is another dataset's, by md5."""
    from mnistkit.data.dataset_registry import all_specs

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
    ``<download root>/<TorchvisionName>/raw`` (see :func:`mnistkit.data.roots.fetch_missing`).
    """

    def download(file_name: str, folder: Path, mirrors: tuple[str, ...]) -> Path:
        if find_file(folder, file_name) is None:
            download_from_mirrors(
                file_name,
                mirrors,
                folder / file_name,
                lambda d: spec.md5_ok(file_name, d),
                progress,
                max_bytes=max_download_bytes(spec, file_name),
            )
        return folder

    return fetch_missing(spec, data_dir, locate_folder, spec.files, download)


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
