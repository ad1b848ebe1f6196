"""What both estimators share: parameter checks (the config's rules and errors), labels, seeds."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_random_state

from mnistkit.config import check_choice, check_in_range, check_positive, check_positive_int, resolve_device

__all__ = [
    "check_choice",
    "check_count",
    "check_in_range",
    "check_positive",
    "encode_targets",
    "resolve_device",
    "seed_from",
]


def check_count(what: str, value) -> None:
    """A positive whole number (numpy integers too, as scikit-learn's parameter grids give them)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    check_positive_int(what, value)


def seed_from(random_state) -> int:
    """A torch seed from sklearn's ``random_state`` convention (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def encode_targets(estimator, y) -> np.ndarray:
    """Set ``classes_``; return integer codes ``[n]`` (a single class raises ValueError)."""
    check_classification_targets(y)
    estimator.classes_, codes = np.unique(y, return_inverse=True)
    if len(estimator.classes_) < 2:
        raise ValueError(
            f"{type(estimator).__name__} needs samples of at least 2 classes in the data, "
            f"but the data contain only one class: {estimator.classes_[0]!r}"
        )
    return codes.astype(np.int64)
