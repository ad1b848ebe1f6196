"""Tiny learnable MNIST-shaped datasets and archives for fast tests (no real data needed); test helpers that are
not about data live in ``helpers.py``."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import torch


def make_images(n: int, seed: int = 0, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 28x28 images: class ``c`` is a bright 3-pixel bar at row ``2 + 2c`` over noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.int64)
    for c in range(num_classes):
        rows = 2 + 2 * c
        images[labels == c, rows : rows + 3, 4:24] += 180
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


def quick_train(
    model_name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
) -> torch.nn.Module:
    """A registry model after about ``steps`` Adam steps (whole epochs of shuffled batches), trained by
    the one epoch loop over arrays, as the estimators train (:func:`mnistkit.training.arrays.minibatch_train`).

    For tests that need a model that merely works (predict, the browser demo) in seconds,
    without a run directory. One torch thread: on a shared 2-core machine two spinning
    OpenMP threads made this about 10x slower.
    """
    import math

    from mnistkit.models import build_model
    from mnistkit.preprocess import normalize
    from mnistkit.training.arrays import MinibatchOptions, minibatch_train

    epochs = max(1, math.ceil(steps * batch_size / len(images)))
    opts = MinibatchOptions(batch_size, max_epochs=epochs, tol=0.0, patience=epochs + 1, seed=seed, lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = build_model(model_name)
        minibatch_train(model, normalize(images, norm), labels.numpy(), opts)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def make_pattern_dataset(folder: Path, n_train: int = 1200, n_test: int = 200, seed: int = 0) -> Path:
    """Four gzipped IDX files: class k is random binary pattern k (pixels 200) plus uniform noise."""
    from mnistkit.data import write_idx

    g = torch.Generator().manual_seed(seed)
    templates = (torch.rand(10, 28, 28, generator=g) > 0.7).float() * 200

    def split(n):
        y = torch.arange(n) % 10
        x = templates[y] + torch.rand(n, 28, 28, generator=g) * 55
        return x.clamp(0, 255).to(torch.uint8), y.to(torch.uint8)

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = split(n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


# --------------------------------------------------------------------------- EMNIST archives

#: The row of the horizontal bar every synthetic EMNIST image shows once loaded upright.
BAR_ROW = 3


def split_tensors(split: str, n_train: int, n_test: int):
    """Train/test images (stored transposed) and labels (as in the files: letters from 1)."""
    from mnistkit.data.emnist import SPLITS

    names, offset = SPLITS[split][0], SPLITS[split][1]
    out = []
    for n in (n_train, n_test):
        labels = torch.arange(n) % len(names) + offset
        upright = torch.zeros(n, 28, 28, dtype=torch.uint8)
        upright[:, BAR_ROW, :] = 255
        upright[:, 20, 20] = (labels * 3).to(torch.uint8)  # a class-dependent pixel, so it is learnable
        out += [upright.transpose(1, 2).contiguous(), labels.to(torch.uint8)]
    return out


def mapping_text(split: str) -> str:
    """The archive's ``emnist-<split>-mapping.txt``: label, then character codes."""
    from mnistkit.data.emnist import SPLITS

    names = SPLITS[split][0]
    if split == "letters":
        return "".join(f"{i + 1} {ord(c.upper())} {ord(c)}\n" for i, c in enumerate(names))
    return "".join(f"{i} {ord(c)}\n" for i, c in enumerate(names))


def emnist_members(splits=("letters", "balanced"), n_train=94, n_test=47, mapping=True) -> dict[str, bytes]:
    """The members of NIST's ``gzip.zip`` for ``splits``, with their real names."""
    from mnistkit.data.emnist import member_names
    from mnistkit.data.idx import encode_idx

    members = {}
    for split in splits:
        for name, t in zip(member_names(split), split_tensors(split, n_train, n_test), strict=True):
            members[f"gzip/{name}"] = gzip.compress(encode_idx(t), mtime=0)
        if mapping:
            members[f"gzip/emnist-{split}-mapping.txt"] = mapping_text(split).encode()
    return members


def write_zip(path: Path, members: dict[str, bytes], padding: int = 0) -> Path:
    """Write ``members`` as a zip archive, with ``padding`` incompressible bytes to make a download slow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if padding:
            zf.writestr(
                zipfile.ZipInfo("gzip/padding.bin"),
                torch.randint(0, 256, (padding,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
                .numpy()
                .tobytes(),
            )
    return path
