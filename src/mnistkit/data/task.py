"""The learning task on a dataset: which classes, which labels, and the validation split.

A task is all classes, a subset of them (``--classes 3,8``: relabelled 0..k-1 in the
order given), or one class against the rest (``--positive 3``: labels 0/1). The validation
split is carved from the training split *before* the task is applied, so a seed picks the
same images whatever the task. Training and evaluation (``mnistkit evaluate``) both build
their splits here, from plain arguments; the ``val_size`` rule has its one owner here too,
and the config's validation asks :func:`check_val_size`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from mnistkit.data.dataset import Dataset, Split, seeded_permutation
from mnistkit.errors import ConfigError
from mnistkit.preprocess.tensor import TUTORIAL_NORM, Normalization

# ----------------------------------------------------------------------------- the validation split


def check_val_size(val_size) -> int | float:
    """The shape of a ``val_size``: 0 (none), a fraction in (0, 1), or a whole count >= 1.

    Returns it in canonical form (a whole float count such as ``5000.0`` becomes ``5000``);
    whether a count fits a dataset is :func:`validation_count`'s question.
    """
    valid = not isinstance(val_size, bool) and isinstance(val_size, numbers.Real)
    if valid and not (val_size == 0 or 0 < val_size < 1 or (val_size >= 1 and float(val_size).is_integer())):
        valid = False
    if not valid:
        raise ConfigError(f"val_size must be 0, a fraction in (0, 1) or a whole count, got {val_size!r}")
    return int(val_size) if val_size == 0 or val_size >= 1 else float(val_size)


def validation_count(n: int, val_size: int | float) -> int:
    """Turn ``val_size`` (int count or float fraction) into a count for a split of ``n``, rejecting bad values."""
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise ConfigError(f"val_size must be an int count or a float fraction in (0, 1), got {val_size!r}")
    if not isinstance(val_size, numbers.Integral):
        if not 0.0 < val_size < 1.0:
            raise ConfigError(f"val_size fraction {val_size!r} must be in (0, 1); use an int for a count")
        count = round(n * val_size)
    else:
        count = int(val_size)
    if count < 1 or count >= n:
        raise ConfigError(
            f"val_size {val_size!r} gives {count} validation samples; allowed 1 to "
            f"{n - 1} for a training split of {n} (or 0 for no validation split)"
        )
    return count


def split_validation(split: Split, val_size: int | float, seed: int = 0) -> tuple[Split, Split | None]:
    """Carve a validation split out of ``split``; return ``(train, val)``.

    ``val_size`` is a count (int) or a fraction in (0, 1) (float); ``0`` means no
    validation split and returns ``(split, None)``. The rows are chosen by a
    permutation seeded with ``seed``, so the same seed always gives the same
    split. Bad sizes raise :class:`ConfigError`.
    """
    if isinstance(val_size, numbers.Real) and not isinstance(val_size, bool) and val_size == 0:
        return split, None
    count = validation_count(len(split), val_size)
    order = seeded_permutation(len(split), seed)
    val_index, train_index = order[:count].sort().values, order[count:].sort().values
    return split.subset(train_index), split.subset(val_index)


# ----------------------------------------------------------------------------- the task


@dataclass
class TaskData:
    """The splits of one task (labels already relabelled for it) and what a model needs to know."""

    train: Split
    val: Split | None
    test: Split
    class_names: list[str]
    norm: Normalization
    dataset_name: str

    def split(self, name: str) -> Split:
        """``"train"``, ``"val"`` or ``"test"``; asking for a validation split that was not made is a ConfigError."""
        chosen = {"train": self.train, "val": self.val, "test": self.test}[name]
        if chosen is None:
            raise ConfigError(
                f"there is no {name!r} split: this task was built without a validation split (val_size 0)"
            )
        return chosen

    def head(self, n_train: int, n_eval: int) -> TaskData:
        """The first rows of each split (``--dry-run``: a smoke test on a few batches)."""
        first = torch.arange
        return TaskData(
            self.train.subset(first(min(n_train, len(self.train)))),
            self.val.subset(first(min(n_eval, len(self.val)))) if self.val is not None else None,
            self.test.subset(first(min(n_eval, len(self.test)))),
            self.class_names,
            self.norm,
            self.dataset_name,
        )


def select_task(
    splits: list[Split | None], class_names: list[str], positive: int | None, classes, binary: bool, model: str
) -> tuple[list[Split | None], list[str]]:
    """Apply ``positive`` (one-vs-rest) or ``classes`` (a subset) to every split; return the splits and class names.

    ``binary``: the model has one output, so the task must have exactly two classes; ``model``
    names it in the error messages.
    """
    if positive is not None:
        _check_class("--positive", positive, class_names)
        splits = [Split(s.images, (s.labels == positive).long()) if s is not None else None for s in splits]
        class_names = [f"not {class_names[positive]}", class_names[positive]]
    elif classes is not None:
        for c in classes:
            _check_class("--classes", c, class_names)
        remap = torch.full((len(class_names),), -1, dtype=torch.long)
        remap[list(classes)] = torch.arange(len(classes))
        splits = [_subset(s, remap) if s is not None else None for s in splits]
        class_names = [class_names[c] for c in classes]
    elif binary:
        raise ConfigError(
            f"model {model!r} is binary: choose the task with --positive N (one class "
            "against the rest) or --classes A,B (two classes)"
        )
    if binary and len(class_names) != 2:
        raise ConfigError(f"model {model!r} is binary but --classes names {len(class_names)} classes; give exactly two")
    return splits, class_names


def make_task(
    ds: Dataset,
    *,
    val_size: int | float = 0,
    seed: int = 0,
    positive: int | None = None,
    classes=None,
    binary: bool = False,
    model: str = "",
    norm: str = "tutorial",
    sequence: bool = False,
) -> TaskData:
    """Carve the validation split from ``ds.train`` (``val_size``, ``seed``) and apply the task.

    ``norm`` is ``"tutorial"`` (mean 0.5, std 0.5) or ``"dataset"`` (the dataset's own constants).
    ``sequence``: the model reads lines (labels ``[N, L]``), so the dataset must hold lines.
    """
    _check_sequence(ds, sequence, model, positive is not None or classes is not None)
    carved, val = split_validation(ds.train, check_val_size(val_size), seed=seed)
    (train, val, test), names = select_task(
        [carved, val, ds.test], list(ds.class_names), positive, classes, binary, model
    )
    assert train is not None and test is not None  # only the validation split may be absent
    return TaskData(train, val, test, names, TUTORIAL_NORM if norm == "tutorial" else ds.norm, ds.name)


def _check_sequence(ds: Dataset, sequence: bool, model: str, subset: bool) -> None:
    """A line model needs a lines dataset and a digit model a digits one; lines have no class subsets."""
    lines = ds.train.labels.dim() == 2
    if sequence and not lines:
        raise ConfigError(f"model {model!r} reads lines of digits; train it on --dataset digit-lines, not {ds.name!r}")
    if lines and not sequence:
        raise ConfigError(f"dataset {ds.name!r} holds lines of digits; train a line model on it (--model crnn)")
    if lines and subset:
        raise ConfigError(f"--positive and --classes pick digits of single-digit datasets, not lines ({ds.name!r})")


def _check_class(flag: str, c: int, names: list[str]) -> None:
    if not 0 <= c < len(names):
        raise ConfigError(f"{flag} {c} is not a class index of this dataset (0..{len(names) - 1})")


def _subset(split: Split, remap: torch.Tensor) -> Split:
    """The rows whose class is kept, relabelled by ``remap`` (-1: dropped)."""
    kept = split.subset((remap[split.labels] >= 0).nonzero().flatten())
    return Split(kept.images, remap[kept.labels])
