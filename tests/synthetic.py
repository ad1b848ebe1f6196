"""Tiny learnable MNIST-shaped datasets for fast tests (no real data needed), and small test helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

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


def run_cli(args, capsys, monkeypatch=None, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run the real entry point (``mnistkit.cli.main``) in-process on ``args`` (made strings):
    returns (exit code, stdout, stderr). ``stdin`` is fed as standard input when ``monkeypatch`` is given."""
    import io
    import sys

    import pytest

    from mnistkit.cli import main

    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def stop_process(proc) -> None:
    """Stop a server started for a test: SIGTERM, then SIGKILL if it has not gone within 10 s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def system_deps_promised() -> bool:
    """True in CI (``$CI`` set) as root on Debian: there ``make system-deps`` installs Chromium,
    Fashion-MNIST and PostgreSQL or fails, so a test missing one of them points at a broken set-up."""
    return bool(os.environ.get("CI")) and os.geteuid() == 0 and Path("/etc/debian_version").is_file()


def require_or_skip(reason: str) -> NoReturn:
    """Skip saying ``reason`` (a system package or tool is missing) -- or fail where
    :func:`system_deps_promised`, so a broken install cannot turn a CI run green by skipping."""
    import pytest

    if system_deps_promised():
        pytest.fail(f"{reason}; CI as root on Debian must have it (make system-deps)", pytrace=False)
    pytest.skip(reason)
