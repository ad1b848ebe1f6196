"""The checkpoint metadata schema: every field a checkpoint may carry and what it must mean.

:func:`check_meta` is run by :func:`mnistkit.checkpoint.load_checkpoint` on the JSON metadata of
a file whose digest matched: the digest proves the file is whole, not that a writer meant well,
so each value is checked for sense (a temperature that makes every probability NaN, class names
that forge output lines) as well as for type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from mnistkit.calibration import TEMPERATURE_RANGE
from mnistkit.errors import CheckpointError
from mnistkit.models.registry import TASKS

__all__ = ["META_FIELDS", "MetaField", "check_meta"]


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _temperature_ok(v) -> bool:
    """Within the range :func:`mnistkit.calibration.fit_temperature` keeps its fits in: a temperature
    of 1e-300 turns every logit into infinity and every probability into NaN."""
    return isinstance(v, (int, float)) and _finite_number(v) and TEMPERATURE_RANGE[0] <= v <= TEMPERATURE_RANGE[1]


def _probability(v) -> bool:
    return _finite_number(v) and 0 <= float(v) <= 1


def _str_dict(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


@dataclass(frozen=True)
class MetaField:
    """One checkpoint metadata field: whether it must be present, its check, and what it must be."""

    name: str
    required: bool
    check: Callable[[object], bool]
    expected: str


#: Every metadata field a checkpoint may carry, checked by meaning at load time. Fields not
#: listed are kept but never interpreted. Adding a field is one line here.
META_FIELDS: tuple[MetaField, ...] = (
    MetaField("model", True, lambda v: isinstance(v, str) and bool(v), "a model name"),
    MetaField("model_options", False, lambda v: isinstance(v, dict), "an object of model options"),
    MetaField("task", True, lambda v: v in TASKS, " or ".join(f'"{t}"' for t in TASKS)),
    MetaField(
        "class_names",
        True,
        lambda v: _class_names_ok(v),
        "a list of 2 to 1000 printable strings of 1 to 64 characters",
    ),
    MetaField(
        "norm",
        True,
        lambda v: (
            isinstance(v, dict) and _finite_number(v.get("mean")) and _finite_number(v.get("std")) and v["std"] > 0
        ),
        "{mean, std}: finite numbers, std > 0",
    ),
    MetaField("versions", False, _str_dict, "an object of strings"),
    MetaField("config", False, lambda v: isinstance(v, dict), "an object"),
    MetaField("metrics", False, lambda v: isinstance(v, dict), "an object"),
    MetaField("dataset", False, lambda v: isinstance(v, str), "a string"),
    MetaField("created", False, lambda v: isinstance(v, str), "a string"),
    MetaField(
        "temperature",
        False,
        _temperature_ok,
        f"a number in [{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}]",
    ),
    MetaField("min_confidence", False, lambda v: _probability(v), "a number in [0, 1]"),
    MetaField("min_confidence_chosen", False, lambda v: isinstance(v, str), "a string"),
    MetaField("card", False, lambda v: isinstance(v, dict), "an object"),
    MetaField("novelty", False, lambda v: _novelty_meta_ok(v), "{feature: embed, threshold > 0, classes, dims}"),
)


def _novelty_meta_ok(value) -> bool:
    from mnistkit.novelty import meta_ok

    return meta_ok(value)


def _class_names_ok(value) -> bool:
    """2 to MAX_CLASSES names, each one :func:`mnistkit.data.dataset.class_name_problem` accepts:
    names are printed in every answer, so a long one or a newline would reach every user."""
    from mnistkit.data.dataset import MAX_CLASSES, class_name_problem

    return (
        isinstance(value, list) and 2 <= len(value) <= MAX_CLASSES and all(class_name_problem(c) is None for c in value)
    )


def check_meta(meta: dict, path) -> None:
    """Every field of :data:`META_FIELDS` present when required and meaningful when present."""
    for field in META_FIELDS:
        if field.name not in meta:
            if field.required:
                raise CheckpointError(
                    f"checkpoint {path} lacks metadata field {field.name!r}; it was not written by save_checkpoint"
                )
            continue
        value = meta[field.name]
        try:
            ok = field.check(value)
        except Exception:  # an untrusted value the check did not foresee (e.g. a huge int in a float check)
            ok = False
        if not ok:
            shown = json.dumps(value)[:60] if not isinstance(value, str) else repr(value[:60])
            raise CheckpointError(
                f"checkpoint {path} has a bad metadata field {field.name!r}: {shown}; expected {field.expected}"
            )
