"""Registry, search order and layouts, splits, the built-in and user-supplied datasets."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest
import torch

import mnistkit.data as data
from mnistkit.data import (
    Dataset,
    DatasetSpec,
    Split,
    dataset_info,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    search_roots,
    split_validation,
    write_idx,
)
from mnistkit.data.dataset_registry import IDX_FILES
from mnistkit.errors import ConfigError, DataFormatError, DatasetNotFoundError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def write_fake(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, names=IDX_FILES) -> Path:
    """Four small IDX files; n_train identifies which folder was loaded."""
    paths = [folder / (n if gz else n.removesuffix(".gz")) for n in names]
    write_idx(paths[0], torch.full((n_train, 28, 28), 7, dtype=torch.uint8))
    write_idx(paths[1], torch.arange(n_train, dtype=torch.uint8) % 10)
    write_idx(paths[2], torch.zeros(n_test, 28, 28, dtype=torch.uint8))
    write_idx(paths[3], torch.arange(n_test, dtype=torch.uint8) % 10)
    return folder


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Isolated cwd, $MNISTKIT_DATA and cache roots (all empty to start with)."""
    monkeypatch.chdir(tmp_path)
    env, cache = tmp_path / "env", tmp_path / "cache"
    monkeypatch.setenv("MNISTKIT_DATA", str(env))
    monkeypatch.setenv("MNISTKIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("MNISTKIT_MIRRORS", "http://127.0.0.1:9/")  # discard port: never the internet
    return {"explicit": tmp_path / "explicit", "env": env, "cwd": tmp_path / "data", "cache": cache}


# --- registry -----------------------------------------------------------------------------


def test_builtin_specs():
    assert list_datasets()[:4] == ["mnist", "fashion-mnist", "kmnist", "mnist-sample"]
    mnist = get_dataset_spec("mnist")
    assert mnist.torchvision_name == "MNIST" and mnist.mirrors[0].startswith("https://ossci-datasets")
    assert mnist.expected_md5("train-images-idx3-ubyte.gz") == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert (mnist.norm.mean, mnist.norm.std) == (0.1307, 0.3081)
    assert get_dataset_spec("fashion-mnist").class_names[-1] == "Ankle boot"
    assert get_dataset_spec("kmnist").class_names[:3] == ("o", "ki", "su")
    assert get_dataset_spec("kmnist").torchvision_name == "KMNIST"


def test_unknown_name_lists_choices():
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset 'foo'; choose one of: mnist, fashion-mnist, kmnist, "
        r"mnist-sample.* or a path",
    ):
        get_dataset_spec("foo")
    with pytest.raises(ConfigError, match="unknown dataset 'foo'"):
        load_dataset("foo")


def test_register_dataset_and_custom_loader(monkeypatch):
    from mnistkit.data import dataset_registry as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY) or {})
    list_datasets()
    made = Dataset(
        "toy",
        Split(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64)),
        Split(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64)),
        ["a"],
        get_dataset_spec("mnist").norm,
        "memory",
    )
    spec = DatasetSpec("toy", "a toy", ("a",), made.norm, loader=lambda *a: made)
    data.register_dataset(spec)
    assert "toy" in list_datasets() and load_dataset("toy") is made
    with pytest.raises(ConfigError, match="already registered"):
        data.register_dataset(spec)


# --- search order and layouts ------------------------------------------------------------


def test_search_roots_order(roots):
    spec = get_dataset_spec("fashion-mnist")
    got = search_roots(spec, roots["explicit"])
    assert got == [
        roots["explicit"],
        roots["env"],
        roots["cwd"].absolute(),
        roots["cache"],
        Path("/usr/share/datasets/fashion-mnist"),
    ]


@pytest.mark.parametrize("winner", ["explicit", "env", "cwd", "cache"])
def test_first_root_wins(roots, winner):
    order = ["explicit", "env", "cwd", "cache"]
    for n, key in enumerate(order[order.index(winner) :]):
        write_fake(roots[key] / "MNIST" / "raw", n_train=10 + n)
    ds = load_dataset("mnist", data_dir=roots["explicit"], download=False)
    assert len(ds.train) == 10 and ds.source == str(roots[winner] / "MNIST" / "raw")


def test_flat_and_uncompressed_layout(roots):
    write_fake(roots["explicit"], n_train=3, gz=False)
    ds = load_dataset("mnist", data_dir=roots["explicit"], download=False)
    assert len(ds.train) == 3 and len(ds.test) == 4
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64


def test_torchvision_layout_beats_flat_in_same_root(roots):
    write_fake(roots["env"], n_train=3)
    write_fake(roots["env"] / "MNIST" / "raw", n_train=5)
    assert len(load_dataset("mnist", download=False).train) == 5


def test_incomplete_folder_is_skipped(roots):
    write_fake(roots["env"] / "MNIST" / "raw", n_train=5)
    (roots["env"] / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    write_fake(roots["cache"] / "MNIST" / "raw", n_train=8)
    assert len(load_dataset("mnist", download=False).train) == 8


def test_not_found_without_download_lists_roots(roots):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("kmnist", download=False)
    message = str(info.value)
    for key in ("env", "cwd", "cache"):
        assert str(roots[key]) in message
    assert "KMNIST/raw" in message and "MNISTKIT_DATA" in message and "download=False" in message


def test_bad_files_raise_data_format_error(roots):
    folder = write_fake(roots["env"] / "MNIST" / "raw")
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.zeros(5, dtype=torch.uint8))
    with pytest.raises(DataFormatError, match="5 labels for 6 images"):
        load_dataset("mnist", download=False)
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.full((6,), 10, dtype=torch.uint8))
    with pytest.raises(DataFormatError, match=r"labels range 10..10; allowed 0..9"):
        load_dataset("mnist", download=False)
    write_idx(folder / "train-images-idx3-ubyte.gz", torch.zeros(6, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataFormatError, match=r"shape \(6, 32, 32\); expected \[N, 28, 28\]"):
        load_dataset("mnist", download=False)


def test_dataset_info_found_and_missing(roots):
    info = dataset_info("mnist")
    assert info["found"] is False and str(roots["cache"]) in info["searched"]
    write_fake(roots["cwd"] / "MNIST" / "raw")
    info = dataset_info("mnist")
    assert info["found"] and info["location"] == str(roots["cwd"].absolute() / "MNIST" / "raw")
    assert info["files"]["train-images-idx3-ubyte.gz"]["md5"] == "mismatch"
    assert info["classes"] == [str(d) for d in range(10)] and info["sizes"] == {"train": 60000, "test": 10000}


# --- split_validation ---------------------------------------------------------------------


def _split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous(), torch.arange(n) % 10)


def test_split_validation_deterministic_and_disjoint():
    split = _split(100)
    train, val = split_validation(split, 20, seed=3)
    again_train, again_val = split_validation(split, 0.2, seed=3)
    assert len(train) == 80 and len(val) == 20
    assert torch.equal(val.images, again_val.images) and torch.equal(train.labels, again_train.labels)
    ids = torch.cat([train.images[:, 0, 0], val.images[:, 0, 0]]).sort().values
    assert torch.equal(ids, torch.arange(100, dtype=torch.uint8))
    assert not torch.equal(split_validation(split, 20, seed=4)[1].images, val.images)


def test_split_validation_accepts_numpy_ints():
    import numpy as np

    assert len(split_validation(_split(10), np.int64(3))[1]) == 3


def test_split_validation_zero_means_none():
    split = _split(10)
    assert split_validation(split, 0) == (split, None)


@pytest.mark.parametrize(
    "size, message",
    [
        (-1, "gives -1"),
        (10, "allowed 1 to 9"),
        (1.0, r"must be in \(0, 1\)"),
        (1.5, "fraction"),
        ("5", "int count or a float"),
        (True, "int count"),
    ],
)
def test_split_validation_bad_sizes(size, message):
    with pytest.raises(ConfigError, match=message):
        split_validation(_split(10), size)


# --- mnist-sample -------------------------------------------------------------------------


def test_mnist_sample():
    ds = load_dataset("mnist-sample")
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert ds.train.images.shape == (4000, 28, 28) and ds.train.images.dtype == torch.uint8
    assert int(ds.train.images.max()) == 255 and int(ds.train.images.min()) == 0
    assert torch.equal(ds.test.labels.bincount(), torch.full((10,), 100))
    assert torch.equal(ds.train.labels.bincount(), torch.full((10,), 400))
    assert ds.class_names == [str(d) for d in range(10)]


def test_mnist_sample_without_mlxtend(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(DatasetNotFoundError, match=r"pip install 'mnistkit\[sample\]'"):
        load_dataset("mnist-sample")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, mnistkit.data; print('mlxtend' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- user data ----------------------------------------------------------------------------


def test_user_idx_folder_with_test_names(tmp_path):
    names = ("train-images.idx3-ubyte", "train-labels.idx1-ubyte", "test-images.idx3-ubyte", "test-labels.idx1-ubyte")
    folder = write_fake(tmp_path / "mine", n_train=12, n_test=3, gz=False, names=names)
    ds = load_dataset(str(folder))
    assert (len(ds.train), len(ds.test)) == (12, 3) and ds.class_names == [str(d) for d in range(10)]
    assert ds.norm.mean == pytest.approx(7 / 255, abs=1e-4)


def kaggle_csv(path: Path, n: int, with_label: bool = True) -> Path:
    header = (["label"] if with_label else []) + [f"pixel{i}" for i in range(784)]
    rows = [",".join(header)]
    for i in range(n):
        rows.append(",".join(([str(i % 10)] if with_label else []) + [str((i + j) % 256) for j in range(784)]))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_kaggle_csv_carves_fixed_test_split(tmp_path):
    path = kaggle_csv(tmp_path / "train.csv", 50)
    ds = load_dataset(str(path))
    again = load_dataset(str(path))
    assert (len(ds.train), len(ds.test)) == (45, 5)
    assert torch.equal(ds.test.images, again.test.images)
    assert ds.class_names == [str(d) for d in range(10)]
    # row i of the CSV holds pixels (i + j) % 256 and label i % 10: every image is one row, exactly once
    images = torch.cat([ds.train.images, ds.test.images]).reshape(-1, 784).long()
    labels = torch.cat([ds.train.labels, ds.test.labels]).long()
    rows = images[:, 0]
    assert sorted(rows.tolist()) == list(range(50)) and ds.train.images.dtype == torch.uint8
    assert torch.equal(images, (rows[:, None] + torch.arange(784)) % 256) and torch.equal(labels, rows % 10)


def test_kaggle_csv_gz(tmp_path):
    plain = kaggle_csv(tmp_path / "t.csv", 20)
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert len(load_dataset(gz).train) == 18


def test_csv_without_label_is_refused(tmp_path):
    path = kaggle_csv(tmp_path / "test.csv", 3, with_label=False)
    with pytest.raises(DataFormatError, match="no 'label' column.*cannot be trained on"):
        load_dataset(str(path))


def test_csv_with_bad_pixels(tmp_path):
    path = kaggle_csv(tmp_path / "train.csv", 3)
    path.write_text(path.read_text().replace("\n0,0,", "\n0,999,", 1))
    with pytest.raises(DataFormatError, match=r"pixel\d+ in data row \d+ is 999; allowed whole numbers 0..255"):
        load_dataset(str(path))


def test_missing_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError):
        load_dataset("missing.csv")


def test_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataFormatError, match="not a dataset"):
        load_dataset(tmp_path)


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = torch.zeros(28, 28, dtype=torch.uint8)
    pixels[8:20, 12:16] = value
    Image.fromarray(pixels.numpy(), mode="L").save(path)


def test_image_folder(tmp_path):
    for split, count in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                _png(tmp_path / "pets" / split / cls / f"{i}.png", 255)
    ds = load_dataset(tmp_path / "pets")
    assert ds.class_names == ["cat", "dog"] and (len(ds.train), len(ds.test)) == (8, 4)
    assert ds.train.images.shape == (8, 28, 28) and ds.train.labels.tolist() == [0] * 4 + [1] * 4


def test_image_folder_without_split_is_carved(tmp_path):
    for cls in ("a", "b"):
        for i in range(10):
            _png(tmp_path / "imgs" / cls / f"{i}.png", 200)
    ds = load_dataset(tmp_path / "imgs")
    assert (len(ds.train), len(ds.test)) == (18, 2)


# --- real data (skips without it) ---------------------------------------------------------


def test_real_mnist(mnist_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    ds = load_dataset("mnist", data_dir=mnist_root, download=False)
    elapsed = time.perf_counter() - start
    assert ds.train.labels.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert ds.test.labels.bincount().tolist() == MNIST_TEST_COUNTS
    assert ds.train.images.shape == (60000, 28, 28) and int(ds.train.images.max()) == 255
    assert elapsed < 5.0, f"loading MNIST took {elapsed:.2f} s"
    info = dataset_info("mnist", data_dir=mnist_root)
    assert all(f["md5"] == "ok" for f in info["files"].values())


def test_flat_mnist_folder_is_not_taken_for_fashion(mnist_root, monkeypatch, tmp_path):
    """MNIST and Fashion-MNIST share file names; a flat MNIST folder must not load as Fashion."""
    monkeypatch.chdir(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in IDX_FILES:
        (flat / name).symlink_to(mnist_root / "MNIST" / "raw" / name)
    monkeypatch.setenv("MNISTKIT_DATA", str(flat))
    assert data.locate_dataset("mnist") == flat
    where = data.locate_dataset("fashion-mnist")
    assert where != flat
