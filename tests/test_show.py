"""``mnistkit show``: writes a labelled grid PNG, validates its options, handles --open headless."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli

from mnistkit.cli import show as show_cmd
from mnistkit.errors import ConfigError

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
DIGITS = [str(i) for i in range(10)]


def real_mnist_root() -> Path | None:
    """$MNISTKIT_DATA or ../shared/data when it holds MNIST/raw (no download in tests)."""
    for c in (os.environ.get("MNISTKIT_DATA"), str(REPO.parent / "shared" / "data")):
        if c and (Path(c) / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(c)
    return None


def synthetic_split(n: int = 200):
    """Blocky fake digits: class k has a bar at column 2k, so a grid is visibly not blank."""
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i, k in enumerate(labels.tolist()):
        images[i, 4:24, 2 * k + 2 : 2 * k + 6] = 255
    return images, labels


def framed_samples(n: int = 50, seed: int = 0):
    """Distinct samples: random 4-px ink blocks inside a solid 1-px ink frame, which marks a tile's
    bounds in the rendered grid. Labels cycle through the ten digits."""
    g = torch.Generator().manual_seed(seed)
    blocks = (torch.rand(n, 7, 7, generator=g) > 0.5).to(torch.uint8) * 255
    images = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
    images[:, 0, :] = images[:, -1, :] = images[:, :, 0] = images[:, :, -1] = 255
    return images, torch.arange(n) % 10


@pytest.fixture
def fake_loader(monkeypatch):
    """Serve :func:`framed_samples` as the test split, without mnistkit.data; records each call."""
    images, labels = framed_samples()
    calls = []

    def load_split(dataset, split, data_dir, download=True):
        calls.append((dataset, split, data_dir))
        return images, labels, DIGITS

    monkeypatch.setattr(show_cmd, "load_split", load_split)
    return calls


def assert_grid_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 100 and im.height >= 100


def _longest_run(mask: np.ndarray) -> np.ndarray:
    """Per column of ``mask``: the longest run of True."""
    best = np.zeros(mask.shape[1], int)
    run = np.zeros(mask.shape[1], int)
    for row in mask:
        run = np.where(row, run + 1, 0)
        best = np.maximum(best, run)
    return best


def rendered_tile(path: Path) -> np.ndarray:
    """The one tile of a grid PNG read back as 28x28 ink (True where dark): its bounds are the
    columns and rows of the longest dark runs (a framed sample's frame), sampled at pixel centres."""
    with Image.open(path) as im:
        dark = np.asarray(im.convert("L")) < 128
    cols, rows = _longest_run(dark), _longest_run(dark.T)
    left, right = np.flatnonzero(cols >= 0.9 * cols.max())[[0, -1]]
    top, bottom = np.flatnonzero(rows >= 0.9 * rows.max())[[0, -1]]
    centres = (np.arange(28) + 0.5) / 28
    ys = (top + centres * (bottom + 1 - top)).astype(int)
    xs = (left + centres * (right + 1 - left)).astype(int)
    return dark[np.ix_(ys, xs)]


def test_show_draws_the_picked_sample_ink_dark(fake_loader, tmp_path, capsys):
    """The grid shows the sample itself (ink dark on light), not a blank, another sample or a negative."""
    images, labels = framed_samples()
    out = tmp_path / "one.png"
    code, _, err = run_cli(["show", "--split", "test", "--n", "1", "--seed", "3", "--out", str(out)], capsys)
    assert code == 0, err
    (index,) = show_cmd.pick_samples(labels, None, n=1, seed=3).tolist()
    np.testing.assert_array_equal(rendered_tile(out), images[index].numpy() > 127)


def test_show_writes_grid(fake_loader, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, err = run_cli(["show", "--split", "test", "--n", "16", "--out", str(out)], capsys)
    assert code == 0, err
    assert f"wrote {out} (16 images)" in stdout
    assert fake_loader == [("mnist", "test", None)]
    assert_grid_png(out)


def test_show_with_real_data_module(tmp_path, capsys):
    """End to end through mnistkit.data.load_dataset on the shared MNIST files."""
    root = real_mnist_root()
    if root is None:
        pytest.skip("real MNIST not found: set MNISTKIT_DATA to a folder holding MNIST/raw/*.gz")
    out = tmp_path / "grid.png"
    code, _, err = run_cli(
        ["show", "--split", "test", "--n", "9", "--classes", "3,8", "--data-dir", str(root), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert_grid_png(out)


def test_open_without_display_says_so_and_still_saves(fake_loader, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    out = tmp_path / "g.png"
    code, _, err = run_cli(["show", "--n", "4", "--open", "--out", str(out)], capsys)
    assert code == 0
    assert err.strip() == f"--open: no display found (DISPLAY is not set); open {out} in an image viewer"
    assert out.is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n must be between 1 and 400, got 0"),
        (["--n", "401"], "--n must be between 1 and 400, got 401"),
        (["--split", "val"], "--split must be one of train, test, got 'val'"),
        (["--classes", "3,12"], "--classes: unknown class '12'; use indices 0..9 or names: 0, 1, 2"),
    ],
)
def test_bad_options_are_one_line_errors(fake_loader, tmp_path, capsys, args, message):
    code, _, err = run_cli(["show", "--out", str(tmp_path / "x.png"), *args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mnistkit: error: ")
    assert message in err
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_is_one_line_hint(fake_loader, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run_cli(["show", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2
    assert err == "mnistkit: error: plotting needs matplotlib: pip install 'mnistkit[plots]'\n"


def test_parse_classes_accepts_names_and_indices():
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert show_cmd.parse_classes("shirt, Ankle boot,0", names) == [0, 6, 9]
    assert show_cmd.parse_classes(None, names) is None
    with pytest.raises(ConfigError, match="unknown class 'sock'"):
        show_cmd.parse_classes("sock", names)


def test_pick_samples_respects_classes_and_seed():
    _, labels = synthetic_split(100)
    picked = show_cmd.pick_samples(labels, [3, 8], n=50, seed=1)
    assert len(picked) == 20  # only 20 samples of classes 3 and 8 exist: take them all
    assert set(labels[picked].tolist()) == {3, 8}
    again = show_cmd.pick_samples(labels, None, n=10, seed=1)
    assert torch.equal(again, show_cmd.pick_samples(labels, None, n=10, seed=1))


def test_open_with_display_but_no_gui_backend_says_so(fake_loader, tmp_path, capsys, monkeypatch):
    import matplotlib

    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setitem(matplotlib.rcParams, "backend", "agg")  # as when no GUI toolkit is installed
    out = tmp_path / "g.png"
    code, _, err = run_cli(["show", "--n", "4", "--open", "--out", str(out)], capsys)
    assert code == 0
    assert err.strip() == f"--open: matplotlib has no GUI backend here; open {out} in an image viewer"
    assert out.is_file()
