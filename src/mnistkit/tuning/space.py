"""Search spaces: what ``mnistkit tune`` varies, the default per model family, and ``--space`` files.

A space maps option names to how they are searched. The names are the training options of
:class:`mnistkit.config.TrainConfig` that shape a recipe (:data:`TUNABLE_TRAIN_OPTIONS`) and the
options of the chosen model in the registry (``hidden``, ``activation``, ``dropout``, ``widths``...),
so the registry, not this module, says what a model can vary. Each entry is one of::

    lr = { low = 1e-4, high = 1e-2, log = true }      # a float range (log scale optional)
    epochs = { low = 4, high = 16 }                    # whole-number endpoints: an int range
    batch_size = { low = 64, high = 512, step = 64 }   # int range with a step
    optimizer = { choices = ["adam", "adamw"] }        # one of these values
    label_smoothing = 0.1                              # fixed: not searched
    hidden = { layers = [1, 3], width = [128, 2048] }  # layer count, then a log-scaled width per layer
    widths = { layers = [2, 3], width = [16, 128] }    # the same for the CNN's channel counts

A file (TOML, YAML or JSON, by suffix) holds such a table; it replaces the default space
entirely, so anything it leaves out keeps the value of the command's options. Errors name the
file, the option and what is allowed, on one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistkit.errors import ConfigError

#: TrainConfig fields a space may vary (data, seed and execution options are the command's).
TUNABLE_TRAIN_OPTIONS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "label_smoothing",
    "augment",
    "norm",
)
#: Model options that are structural lists, searched as a layer count and a width per layer.
LAYER_OPTIONS = ("hidden", "widths")
#: Model options that are never searched (they follow from the data).
FIXED_MODEL_OPTIONS = ("in_features", "num_classes")
SPACE_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
MAX_SPACE_BYTES = 1 << 20


@dataclass(frozen=True)
class Param:
    """One searched option: ``kind`` is float, int, categorical, layers or fixed."""

    name: str
    kind: str
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple = ()
    value: Any = None
    width: tuple = ()  # layers: (low, high) of each layer's width

    def to_dict(self) -> dict:
        """The file form of this entry (what ``--space`` files hold)."""
        if self.kind == "fixed":
            return {"value": self.value}
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        if self.kind == "layers":
            return {"layers": [self.low, self.high], "width": list(self.width)}
        d = {"low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


# ----------------------------------------------------------------------------- defaults


def default_space(model: str) -> dict[str, dict]:
    """The default search space for ``model``, in file form, chosen by what the registry says it has.

    Training options shared by every family, plus the model's own: layers and widths for MLPs
    (``hidden``), channel widths for the CNN (``widths``), activation and dropout where present.
    Ranges are the ones that produced the presets (bench/ measured them), widened a little.
    """
    from mnistkit.models import get_model_spec

    spec = get_model_spec(model)
    options = spec.defaults
    cnn = "widths" in options
    space: dict[str, dict] = {
        "lr": {"low": 3e-4, "high": 1e-2, "log": True},
        "batch_size": {"choices": [64, 128, 256, 512]},
        "optimizer": {"choices": ["adam", "adamw"]},
        "weight_decay": {"low": 1e-6, "high": 0.1, "log": True},
        "schedule": {"choices": ["none", "onecycle", "cosine"]},
        "label_smoothing": {"low": 0.0, "high": 0.2},
        "epochs": {"low": 2, "high": 8} if cnn else {"low": 5, "high": 20},
    }
    if "hidden" in options:
        space["hidden"] = {"layers": [1, 3], "width": [256, 2048]}
    if "widths" in options:
        space["widths"] = {"layers": [2, 3], "width": [16, 128]}
    if "activation" in options:
        acts = ["relu", "gelu", "tanh", "sigmoid"] if model == "seed-mlp" else ["relu", "gelu"]
        space["activation"] = {"choices": acts}
    if "dropout" in options:
        space["dropout"] = {"low": 0.0, "high": 0.5}
    return space


# ----------------------------------------------------------------------------- files


def read_space_file(path: str | Path) -> dict:
    """Parse a TOML, YAML or JSON space file into a dict (not yet validated)."""
    p = Path(path)
    where = f"--space {p}"
    if p.suffix.lower() not in SPACE_SUFFIXES:
        raise ConfigError(
            f"{where}: unknown format {p.suffix or '(no suffix)'!r}; use one of {', '.join(SPACE_SUFFIXES)}"
        )
    try:
        if p.stat().st_size > MAX_SPACE_BYTES:
            raise ConfigError(f"{where}: too large for a search space ({p.stat().st_size:,} bytes)")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({exc})") from None
    try:
        data = _parse(text, p.suffix.lower())
    except Exception as exc:  # each parser has its own error type; all are the file's fault
        raise ConfigError(f"{where}: not valid {p.suffix.lstrip('.').upper()} ({_first_line(exc)})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a table of options, e.g. lr = {{ low = 1e-4, high = 1e-2, log = true }}")
    return data


def _parse(text: str, suffix: str):
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


# ----------------------------------------------------------------------------- validation


def parse_space(raw: dict, model: str, where: str = "search space") -> list[Param]:
    """Validate a space (file form) for ``model``; return its params in a stable order.

    Raises :class:`ConfigError` for an unknown option, an empty range or a value of the wrong type.
    """
    from mnistkit.models import get_model_spec

    spec = get_model_spec(model)
    model_options = [k for k in spec.defaults if k not in FIXED_MODEL_OPTIONS]
    allowed = list(TUNABLE_TRAIN_OPTIONS) + model_options
    params = []
    for name, entry in raw.items():
        if name not in allowed:
            raise ConfigError(
                f"{where}: unknown option {name!r} for model {model!r}; tunable options are: {', '.join(allowed)}"
            )
        param = _parse_entry(name, entry, f"{where}: {name}", is_layers=name in LAYER_OPTIONS)
        _check_values(param, model, f"{where}: {name}")
        params.append(param)
    return params


def _parse_entry(name: str, entry, where: str, is_layers: bool) -> Param:
    if not isinstance(entry, dict):
        entry = {"value": entry}
    keys = set(entry)
    if keys == {"value"}:
        return Param(name, "fixed", value=entry["value"])
    if is_layers:
        if keys != {"layers", "width"}:
            raise ConfigError(
                f"{where}: expected {{ layers = [min, max], width = [min, max] }}, got keys {', '.join(sorted(keys))}"
            )
        lo, hi = _int_pair(entry["layers"], f"{where}.layers", minimum=1)
        wlo, whi = _int_pair(entry["width"], f"{where}.width", minimum=1)
        return Param(name, "layers", low=lo, high=hi, width=(wlo, whi))
    if "choices" in keys:
        extra = keys - {"choices"}
        if extra:
            raise ConfigError(f"{where}: 'choices' cannot be mixed with {', '.join(sorted(extra))}")
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise ConfigError(f"{where}: choices must be numbers, strings or booleans, got {choices!r}")
        return Param(name, "categorical", choices=tuple(choices))
    unknown = keys - {"low", "high", "log", "step", "type"}
    if unknown or not {"low", "high"} <= keys:
        raise ConfigError(
            f"{where}: expected {{ low, high[, log][, step] }}, {{ choices = [...] }} or a fixed "
            f"value, got keys {', '.join(sorted(keys))}"
        )
    low, high, log, step = entry["low"], entry["high"], entry.get("log", False), entry.get("step")
    for label, v in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: {label} must be a number, got {v!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: empty range: low {low} is above high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be > 0 and cannot be combined with log")
    kind = entry.get("type") or ("int" if all(isinstance(v, int) for v in (low, high)) else "float")
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type must be int or float, got {kind!r}")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _int_pair(value, where: str, minimum: int) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise ConfigError(f"{where}: expected [min, max] whole numbers, got {value!r}")
    lo, hi = value
    if lo < minimum:
        raise ConfigError(f"{where}: must be >= {minimum}, got {lo}")
    if lo > hi:
        raise ConfigError(f"{where}: empty range: {lo} is above {hi}")
    return lo, hi


#: model option -> the Python types its values must have (from the registry's defaults otherwise)
_OPTION_TYPES = {"activation": (str,), "dropout": (int, float)}


def _check_values(param: Param, model: str, where: str) -> None:
    """Each value the param can take must be a valid training or model option (checked at the ends)."""
    from mnistkit.config import resolve_config

    if param.kind == "layers":
        _check_layer_range(param, where)
        return
    samples = (
        list(param.choices)
        if param.kind == "categorical"
        else [param.value]
        if param.kind == "fixed"
        else [param.low, param.high]
    )
    for value in samples:
        if param.name in TUNABLE_TRAIN_OPTIONS:
            if param.name in ("epochs", "batch_size") and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{where}: must be whole numbers, got {value!r}")
            try:
                resolve_config(model=model, **{param.name: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            except TypeError:
                raise ConfigError(f"{where}: wrong type {type(value).__name__} ({value!r})") from None
        else:
            _check_model_value(param.name, value, model, where)


def _check_layer_range(param: Param, where: str) -> None:
    """Both corners of a layers entry (fewest and narrowest, most and widest) are networks the
    model registry can build (:data:`mnistkit.models.registry.LAYER_LIMITS`)."""
    from mnistkit.models.registry import LAYER_LIMITS

    limits = LAYER_LIMITS[param.name]
    if param.high > limits.max_layers or param.low < limits.min_layers or param.width[1] > limits.max_width:
        raise ConfigError(
            f"{where}: layers {[param.low, param.high]}, width {list(param.width)} are outside the model's "
            f"limits: {limits.rule}"
        )


def _check_model_value(name: str, value, model: str, where: str) -> None:
    from mnistkit.config import ACTIVATION_NAMES
    from mnistkit.models import get_model_spec

    default = get_model_spec(model).defaults[name]
    types = _OPTION_TYPES.get(name) or (
        (int, float)
        if isinstance(default, (int, float))
        else (list, tuple)
        if isinstance(default, (list, tuple))
        else (type(default),)
    )
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, types):
        raise ConfigError(
            f"{where}: wrong type {type(value).__name__} ({value!r}); expected {' or '.join(t.__name__ for t in types)}"
        )
    if name == "activation" and value not in ACTIVATION_NAMES:
        raise ConfigError(f"{where}: unknown activation {value!r}; choose from {', '.join(ACTIVATION_NAMES)}")
    if name == "dropout" and not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ConfigError(f"{where}: dropout must be in [0, 1), got {value!r}")
    if name in LAYER_OPTIONS:
        from mnistkit.models.registry import check_layers

        try:
            check_layers(name, value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


# ----------------------------------------------------------------------------- sampling


def suggest(trial, params: list[Param]) -> tuple[dict, dict]:
    """Ask ``trial`` for one point; returns ``(train option overrides, model options)``."""
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for p in params:
        if p.kind == "fixed":
            value = p.value
        elif p.kind == "categorical":
            value = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            value = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        elif p.kind == "float":
            value = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log, step=p.step)
        else:  # layers: the count, then a width per layer (log scale: 128 -> 256 matters like 1024 -> 2048)
            n = trial.suggest_int(f"{p.name}_layers", p.low, p.high)
            value = [trial.suggest_int(f"{p.name}_{i + 1}", p.width[0], p.width[1], log=True) for i in range(n)]
        (train if p.name in TUNABLE_TRAIN_OPTIONS else model)[p.name] = value
    return train, model


def space_to_dict(params: list[Param]) -> dict:
    """File form of a parsed space (stored with the study so every worker searches the same one)."""
    return {p.name: p.to_dict() for p in params}


# ----------------------------------------------------------------------------- warm start


def preset_points(params: list[Param], base) -> dict[str, dict]:
    """The hand-tuned presets for this model that the space can express, as trial parameters.

    A new study runs them first (Optuna's ``enqueue_trial``), so the search starts from the
    best known recipe instead of from random points. A preset is left out when one of its
    options is outside the space, or is not searched and differs from the base config
    (e.g. the ``cnn`` preset's augmentation when the base config has none).
    """
    from mnistkit.config import PRESETS
    from mnistkit.models import get_model_spec

    by_name = {p.name: p for p in params}
    base_dict = base.to_dict()
    model_defaults = {**get_model_spec(base.model).defaults, **base.model_options}
    points = {}
    for name, preset in PRESETS.items():
        if preset.get("model") != base.model:
            continue
        # what the preset leaves unset is the default: the base config's, or the model's
        values = {p.name: base_dict[p.name] if p.name in base_dict else model_defaults[p.name] for p in params}
        values.update({k: v for k, v in preset.items() if k not in ("model", "model_options", "log_every")})
        values.update(preset.get("model_options", {}))
        point = {}
        for key, value in values.items():
            param = by_name.get(key)
            if param is None:
                current = base_dict.get(key, base_dict["model_options"].get(key))
                if current != value:
                    break
                continue
            expressed = _express(param, value)
            if expressed is None:
                break
            point.update(expressed)
        else:
            points[name] = point
    return points


def _express(p: Param, value) -> dict | None:
    """``{param name: value}`` for a value inside the param's range or choices, else None."""
    if p.kind == "fixed":
        return {} if p.value == value else None
    if p.kind == "categorical":
        return {p.name: value} if value in p.choices else None
    if p.kind == "layers":
        value = list(value)
        if not p.low <= len(value) <= p.high or not all(p.width[0] <= w <= p.width[1] for w in value):
            return None
        return {f"{p.name}_layers": len(value), **{f"{p.name}_{i + 1}": w for i, w in enumerate(value)}}
    if not p.low <= value <= p.high or (p.kind == "int" and not float(value).is_integer()):
        return None
    return {p.name: int(value) if p.kind == "int" else float(value)}
