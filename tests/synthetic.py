"""Tiny learnable MNIST-shaped datasets for fast tests (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import torch


def make_images(n: int, seed: int = 0, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 28x28 images: class ``c`` is a bright 3-pixel bar at row ``2 + 2c`` over noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.int64)
    for c in range(num_classes):
        rows = 2 + 2 * c
        images[labels == c, rows:rows + 3, 4:24] += 180
    return images.clamp(0, 255).to(torch.uint8), labels


def write_idx_dataset(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write a flat folder of the four MNIST-named IDX files; usable as ``--dataset FOLDER``."""
    from mnistkit.data import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    tx, ty = make_images(n_train, seed)
    sx, sy = make_images(n_test, seed + 1)
    write_idx(folder / "train-images-idx3-ubyte.gz", tx)
    write_idx(folder / "train-labels-idx1-ubyte.gz", ty.to(torch.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", sx)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", sy.to(torch.uint8))
    return folder
