"""Figures for data and training runs: sample grids, curves, confusion, mistakes, weights.

matplotlib is an optional dependency (``mnistkit[plots]``) and slow to import,
so it is imported inside functions only: ``import mnistkit`` never loads it.
Figures are built with :class:`matplotlib.figure.Figure` and rendered by the
Agg canvas directly, without pyplot, so saving plots never touches a global
backend or opens a window (safe in the trainer, in tests and in the server).
Only :func:`show_png` uses pyplot, for ``mnistkit show --open``.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnistkit.errors import ConfigError

#: Resolution of saved PNGs; sizes below are in inches, so pixels = inches * DPI.
DPI = 110
#: Most images the sample grid (``mnistkit show --n``) will draw; beyond this labels are illegible.
MAX_GRID_IMAGES = 400
#: Confusion matrices larger than this are drawn without per-cell count labels (they would overlap).
MAX_ANNOTATED_CLASSES = 20
#: The file names :func:`save_run_plots` writes under ``RUN_DIR/plots``, in report order.
RUN_PLOT_NAMES = ("curves.png", "confusion.png", "mistakes.png", "weights.png")

#: Font sizes (pt) a notch above matplotlib's defaults: reports show plots scaled down on phones.
STYLE: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "figure.titlesize": 13,
}

_TRAIN_COLOR = "#1f77b4"
_VAL_COLOR = "#d62728"
_INSTALL_HINT = "plotting needs matplotlib: pip install 'mnistkit[plots]'"


def _require_matplotlib():
    """Import matplotlib or raise a one-line :class:`ConfigError` saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(_INSTALL_HINT) from None
    return matplotlib


def _styled(plot_function):
    """Build the figure under :data:`STYLE`, leaving the caller's matplotlib settings untouched."""

    @functools.wraps(plot_function)
    def wrapper(*args, **kwargs):
        matplotlib = _require_matplotlib()
        with matplotlib.rc_context(STYLE):
            return plot_function(*args, **kwargs)

    return wrapper


def new_figure(width_in: float, height_in: float):
    """A pyplot-free Figure attached to an Agg canvas, so it can be saved without a display.

    Constrained layout keeps titles, suptitles and colorbars from overlapping.
    """
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """``fig`` rendered as a PNG at :data:`DPI`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def save_figure(fig, path: Path | str) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI`, creating the parent folder; returns the path.

    Rendered in memory, then written atomically: a full disk leaves no partial PNG and
    names the file, and a link at ``path`` is replaced, never written through.
    """
    from mnistkit.fileio import atomic_write_bytes

    return atomic_write_bytes(path, png_bytes(fig))


#: matplotlib backends that draw only to files: with one of these, no window can open.
_FILE_BACKENDS = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}


def show_png(path: Path | str) -> bool:
    """Show a saved PNG in a window via pyplot's interactive backend (``mnistkit show --open``).

    Showing the file, rather than the figure that made it, means the window is
    exactly what was saved. Returns False, showing nothing, when matplotlib can
    only draw to files (no GUI toolkit); the caller tells the user.
    """
    matplotlib = _require_matplotlib()
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend().lower()
    if backend in _FILE_BACKENDS or "inline" in backend:
        return False
    image = plt.imread(str(path))
    height, width = image.shape[:2]
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.figimage(image)
    if fig.canvas.manager is not None:
        fig.canvas.manager.set_window_title(f"mnistkit: {Path(path).name}")
    plt.show()
    return True


# --------------------------------------------------------------------------- data


def _label(class_names: Sequence[str], index: int) -> str:
    """Class name for ``index``, or the bare index when names do not cover it."""
    return str(class_names[index]) if 0 <= index < len(class_names) else str(index)


def _grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """Rows and columns for ``n`` tiles: near-square, at most ``max_cols`` wide."""
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


@_styled
def plot_sample_grid(images, labels, class_names: Sequence[str], title: str | None = None):
    """A labelled grid of digits, ink dark on light (the tutorial's ``cmap='gray_r'``).

    ``images``: uint8 ``[N, 28, 28]`` (numpy or torch); ``labels``: int ``[N]``.
    Each tile is titled with its class name.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    if not 1 <= n <= MAX_GRID_IMAGES:
        raise ConfigError(f"a sample grid needs 1..{MAX_GRID_IMAGES} images, got {n}")
    rows, cols = _grid_shape(n, max_cols=20)
    longest = max(len(_label(class_names, int(y))) for y in labels)
    tile = 1.0 if longest <= 6 else 1.25  # room for names like "Ankle boot"
    fig = new_figure(cols * tile, rows * tile + (0.5 if title else 0.1))
    font = 9 if longest <= 6 else 7
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(_label(class_names, int(labels[i])), fontsize=font, pad=2)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def save_sample_grid(images, labels, class_names: Sequence[str], out: Path | str, title: str | None = None) -> Path:
    """Draw :func:`plot_sample_grid` and save it to ``out`` as PNG."""
    return save_figure(plot_sample_grid(images, labels, class_names, title), out)


# --------------------------------------------------------------------------- runs


def _column(metrics: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for ``key``, skipping rows where it is missing or null (no val split)."""
    xs, ys = [], []
    for i, row in enumerate(metrics):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            xs.append(row.get("epoch", i + 1))
            ys.append(float(value))
    return xs, ys


def _style_epoch_axis(ax, title: str, ylabel: str) -> None:
    """Integer epoch ticks, light grid and a legend: shared by every curve panel."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    epochs = [int(x) for line in ax.get_lines() for x in line.get_xdata()]
    if epochs and max(epochs) - min(epochs) <= 12:  # few epochs (even one): tick every epoch
        ax.set_xticks(range(min(epochs), max(epochs) + 1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


@_styled
def plot_curves(metrics: Sequence[dict]):
    """Loss and accuracy per epoch, train and validation, side by side.

    Markers are drawn so that a one-epoch run still shows its point, and a
    run without a validation split (``val_*`` null) simply has no val line.
    """
    fig = new_figure(10, 4)
    panels = (("loss", "loss", ""), ("accuracy", "accuracy (%)", "_accuracy"))
    for k, (title, ylabel, suffix) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        for split, color in (("train", _TRAIN_COLOR), ("val", _VAL_COLOR)):
            key = f"{split}_loss" if title == "loss" else f"{split}{suffix}"
            xs, ys = _column(metrics, key)
            if xs:
                ax.plot(xs, ys, "o-", color=color, label=split, markersize=4)
        _style_epoch_axis(ax, title, ylabel)
    return fig


@_styled
def plot_confusion(confusion, class_names: Sequence[str]):
    """Confusion matrix heatmap (rows = true, columns = predicted) with the count in each cell.

    Colour is on a log scale: the diagonal holds thousands, mistakes a handful,
    and a linear scale would paint every mistake white. Zero cells stay white.
    """
    from matplotlib.colors import LogNorm

    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ConfigError(f"confusion matrix must be square C x C, got shape {cm.shape}")
    c = cm.shape[0]
    names = [_label(class_names, i) for i in range(c)]
    side = min(16.0, max(5.0, 0.55 * c + 2.5))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_equal(cm, 0)
    norm = LogNorm(vmin=1, vmax=max(2, int(cm.max())))
    image = ax.imshow(masked, cmap="Blues", norm=norm, interpolation="nearest")
    ax.set_facecolor("white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count (log scale)")
    ax.set_xticks(
        range(c),
        labels=names,
        rotation=45 if max(map(len, names)) > 2 else 0,
        ha="right" if max(map(len, names)) > 2 else "center",
    )
    ax.set_yticks(range(c), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(cm.sum())
    accuracy = 100.0 * np.trace(cm) / total if total else 0.0
    ax.set_title(f"confusion matrix ({total} samples, accuracy {accuracy:.2f} %)")
    if c <= MAX_ANNOTATED_CLASSES:
        _annotate_counts(ax, cm, norm)
    return fig


def _annotate_counts(ax, cm: np.ndarray, norm) -> None:
    """Write each non-zero count in its cell, white on dark cells, black on light ones."""
    fontsize = 11 if cm.shape[0] <= 12 else 8
    for (i, j), count in np.ndenumerate(cm):
        if count == 0:
            continue
        dark = norm(count) > 0.6
        ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize, color="white" if dark else "black")


@_styled
def plot_mistakes(mistakes: dict, class_names: Sequence[str]):
    """Grid of the worst test mistakes: the image, its true and predicted class, and P(predicted).

    ``mistakes = {"images": uint8 [K,28,28], "true": [K], "pred": [K], "prob": [K]}``.
    One axes holds a mosaic of the digits with the captions as text above each: a grid of K
    axes, each laid out and drawn on its own, took 2-3 s of a training run's end (most of the
    time spent on plots), the mosaic a fraction of that.
    """
    images = np.asarray(mistakes["images"])
    true, pred, prob = (np.asarray(mistakes[k]) for k in ("true", "pred", "prob"))
    k = len(images)
    rows, cols = _grid_shape(k, max_cols=6)
    side, gap, caption = 28, 6, 22  # pixels of a cell: the image, the space between, the caption above
    cell_w, cell_h = side + gap, side + caption
    mosaic = np.full((rows * cell_h, cols * cell_w - gap), np.nan)
    fig = new_figure(cols * 1.9, rows * 2.1 + 0.5)
    ax = fig.add_subplot(1, 1, 1)
    for i in range(k):
        r, c = divmod(i, cols)
        top, left = r * cell_h + caption, c * cell_w
        mosaic[top : top + side, left : left + side] = images[i]
        ax.text(
            left + side / 2,
            top - 1.5,
            f"true: {_label(class_names, int(true[i]))}\npred: {_label(class_names, int(pred[i]))} "
            f"({_percent_floor(prob[i])})",
            ha="center",
            va="bottom",
            fontsize=10,
        )
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(f"{k} most confident test mistakes")
    return fig


def _percent_floor(p: float) -> str:
    """A probability as a percentage rounded down to 0.1, so 0.9996 reads 99.9%, never 100%."""
    return f"{math.floor(float(p) * 1000) / 10:.1f}%"


@_styled
def plot_weights(weights, class_names: Sequence[str]):
    """Logistic-regression weights as 28x28 images, one per class.

    A diverging colormap centred at 0 (red = pixel ink raises the class score,
    blue = lowers it) on one shared symmetric scale, so classes are comparable.
    A binary model has one row: the weights for its positive class.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != 28 * 28:
        raise ConfigError(f"weights must have shape [C, 784], got {tuple(w.shape)}")
    c = w.shape[0]
    if c == 1:
        titles = [f"positive class: {_label(class_names, len(class_names) - 1)}"]
    else:
        titles = [_label(class_names, i) for i in range(c)]
    cols = min(c, 5)  # ten classes -> two rows of five
    rows = math.ceil(c / cols)
    limit = float(np.abs(w).max()) or 1.0
    fig = new_figure(max(4.5, cols * 1.9 + 0.9), rows * 2.0 + 0.5)
    axes = []
    for i in range(c):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = ax.imshow(w[i].reshape(28, 28), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(titles[i])
        ax.set_axis_off()
        axes.append(ax)
    fig.suptitle(
        "logistic-regression weights (red: ink here raises the score, blue: lowers it)", fontsize=10 if c > 1 else 8
    )
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    return fig


def save_run_plots(
    run_dir: Path,
    *,
    metrics: list[dict],
    confusion,
    class_names: list[str],
    mistakes: dict | None,
    weights: np.ndarray | None,
) -> list[Path]:
    """Write a finished run's figures into ``run_dir/plots`` and return their paths.

    Called by the trainer at the end of each run. Always writes ``curves.png``
    (when there is at least one metrics row) and ``confusion.png``; adds
    ``mistakes.png`` when there are mistakes and ``weights.png`` for logistic
    regression (``weights`` of shape ``[C, 784]``).
    """
    from mnistkit.runs import RunDir

    run = RunDir(run_dir)
    written = []
    if metrics:
        written.append(run.write_plot("curves.png", png_bytes(plot_curves(metrics))))
    if confusion is not None and len(confusion):
        written.append(run.write_plot("confusion.png", png_bytes(plot_confusion(confusion, class_names))))
    if mistakes is not None and len(mistakes.get("images", ())):
        written.append(run.write_plot("mistakes.png", png_bytes(plot_mistakes(mistakes, class_names))))
    if weights is not None:
        written.append(run.write_plot("weights.png", png_bytes(plot_weights(weights, class_names))))
    return written


# --------------------------------------------------------------------------- comparisons


@_styled
def plot_compare_curves(runs: dict[str, Sequence[dict]], panels: Sequence[str] = ("loss", "accuracy")):
    """Overlay several runs' curves, one colour per run, one panel per entry of ``panels``.

    Solid lines are validation, dashed lines training; a run without a
    validation split shows only its dashed training line. Legend = run name.
    ``panels`` picks "loss" and/or "accuracy" (the HTML report draws them
    as separate images so each stays readable on a phone).
    """
    unknown = [p for p in panels if p not in _PANEL_LABELS]
    if unknown or not panels:
        raise ConfigError(f"panels must be 'loss' and/or 'accuracy', got {list(panels)}")
    fig = new_figure(5.5 * len(panels), 4.5)
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    for (name, metrics), color in zip(runs.items(), _run_colors(len(runs))):
        for split, style in (("val", "o-"), ("train", "o--")):
            for ax, panel in zip(axes, panels):
                xs, ys = _column(metrics, f"{split}_{panel}")
                if xs:
                    ax.plot(
                        xs,
                        ys,
                        style,
                        color=color,
                        label=f"{name} ({split})",
                        markersize=3,
                        alpha=1.0 if split == "val" else 0.6,
                    )
    for ax, panel in zip(axes, panels):
        _style_epoch_axis(ax, f"{panel} (solid: val, dashed: train)", _PANEL_LABELS[panel])
    return fig


_PANEL_LABELS = {"loss": "loss", "accuracy": "accuracy (%)"}


def _run_colors(n: int) -> list:
    """Distinct colours for ``n`` runs: tab10 while it lasts, then a continuous map."""
    _require_matplotlib()
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]
