"""``mnistkit show``: look at the data before training on it (the tutorial's ``plt.imshow`` step)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mnistkit.cli.options import RecipeOption, dataset_help
from mnistkit.errors import ConfigError

#: Splits a dataset offers.
SPLITS = ("train", "test")
#: Bounds of ``--n``: at least one image, at most what stays legible in one PNG.
MIN_IMAGES, MAX_IMAGES = 1, 400


def check_n(n: int) -> int:
    """``--n`` must be within :data:`MIN_IMAGES`..:data:`MAX_IMAGES`."""
    if not MIN_IMAGES <= n <= MAX_IMAGES:
        raise ConfigError(f"--n must be between {MIN_IMAGES} and {MAX_IMAGES}, got {n}")
    return n


def check_split(split: str) -> str:
    """``--split`` must name one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def parse_classes(spec: str | None, class_names: list[str]) -> list[int] | None:
    """``--classes "3,8"`` or ``"Shirt,Ankle boot"`` -> class indices (None means all classes).

    A name (case-insensitive) wins over an index, so a dataset whose class
    names are digits ("0".."9") reads naturally either way.
    """
    if spec is None or not spec.strip():
        return None
    by_name = {name.lower(): i for i, name in enumerate(class_names)}
    indices = []
    for item in (part.strip() for part in spec.split(",")):
        if item.lower() in by_name:
            indices.append(by_name[item.lower()])
        elif item.isdigit() and int(item) < len(class_names):
            indices.append(int(item))
        else:
            raise ConfigError(
                f"--classes: unknown class {item!r}; use indices 0..{len(class_names) - 1} "
                f"or names: {', '.join(class_names)}"
            )
    return sorted(set(indices))


def load_split(dataset: str, split: str, data_dir: str | None, download: bool = True):
    """(uint8 images ``[N, 28, 28]``, int64 labels ``[N]``, class names) of one split."""
    from mnistkit.data import load_dataset

    ds = load_dataset(dataset, data_dir=data_dir, download=download)
    part = ds.train if split == "train" else ds.test
    return part.images, part.labels, list(ds.class_names)


def pick_samples(labels, classes: list[int] | None, n: int, seed: int):
    """Indices of ``n`` random samples (fewer if the classes hold fewer), restricted to ``classes``."""
    import torch

    labels = torch.as_tensor(labels)
    pool = torch.arange(len(labels))
    if classes is not None:
        pool = pool[torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))]
    if len(pool) == 0:
        raise ConfigError("no samples of the requested --classes in this split")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=generator)[:n]
    return pool[order]


def display_available() -> bool:
    """Whether a window can be opened: always on macOS/Windows, with X11 or Wayland on Linux."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@click.command()
@click.option("--dataset", cls=RecipeOption, default="mnist", show_default=True, help_from=dataset_help())
@click.option("--split", default="train", show_default=True, help="Which split to draw from: train or test.")
@click.option(
    "--n", "n", type=int, default=64, show_default=True, help=f"Images in the grid ({MIN_IMAGES}..{MAX_IMAGES})."
)
@click.option("--classes", default=None, help="Only these classes, by index or name, e.g. 3,8 (default: all).")
@click.option(
    "--out", type=click.Path(dir_okay=False), default="grid.png", show_default=True, help="PNG file to write."
)
@click.option("--open", "open_window", is_flag=True, help="Also show the grid in a window (needs a display).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding the dataset files (default: mnistkit's cache).",
)
@click.option("--download/--no-download", default=True, show_default=True, help="Download missing dataset files.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for choosing the samples.")
def show(dataset, split, n, classes, out, open_window, data_dir, download, seed):
    """Save a labelled grid of sample images as a PNG."""
    from mnistkit import plots

    check_n(n)
    check_split(split)
    plots._require_matplotlib()  # fail with the install hint before loading any data
    images, labels, class_names = load_split(dataset, split, data_dir, download)
    wanted = parse_classes(classes, class_names)
    index = pick_samples(labels, wanted, n, seed)
    title = f"{dataset} {split}: {len(index)} random samples (seed {seed})"
    path = plots.save_sample_grid(images[index].numpy(), labels[index].numpy(), class_names, out, title)
    click.echo(f"wrote {path} ({len(index)} images)")
    if open_window:
        _open_window(path)


def _open_window(path: Path) -> None:
    """Show the saved grid, or say in one line why no window can open (the PNG is saved either way)."""
    from mnistkit import plots

    if not display_available():
        click.echo(f"--open: no display found (DISPLAY is not set); open {path} in an image viewer", err=True)
    elif not plots.show_png(path):
        click.echo(f"--open: matplotlib has no GUI backend here; open {path} in an image viewer", err=True)
