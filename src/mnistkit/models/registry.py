"""The model registry: one vocabulary shared by the CLI, tests and checkpoints.

``build_model(name, **options)`` is the only way models are made, so a
checkpoint that stores ``(name, options)`` can always rebuild its network, and
``tests/test_models.py`` can run every registered model.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from mnistkit.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what kind of output it gives.

    ``task`` is one of :data:`TASKS`: ``"multiclass"`` (logits ``[N, C]``, cross-entropy),
    ``"binary"`` (one logit ``[N]``, binary cross-entropy) or ``"sequence"`` (a line image in,
    per-column logits ``[N, T, C + 1]`` out, the last a CTC blank).
    """

    name: str
    builder: Callable[..., nn.Module]
    task: str
    description: str
    defaults: dict = field(default_factory=dict)
    #: training options this model needs to train well, applied unless the user sets them
    train_defaults: dict = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {}
#: What a model's output means (see :class:`ModelSpec`).
TASKS = ("multiclass", "binary", "sequence")
#: The input a sequence model's shape probe uses: one line image ``[1, 1, 32, 32]``.
SEQUENCE_PROBE = (1, 1, 32, 32)


@dataclass(frozen=True)
class LayerLimits:
    """How many layers, and units (or channels) per layer, a structural list option may ask for.

    Why: a width of 10^12 is a whole number, and without a ceiling the first ``torch.empty``
    asks for petabytes; the ceilings sit well above every preset and the tuner's defaults.
    ``rule`` is the sentence every fault's message starts with.
    """

    min_layers: int
    max_layers: int
    max_width: int
    rule: str


#: Structural list options (``hidden``: an MLP's units per hidden layer; ``widths``: a CNN's
#: channels per stage) and their ceilings. An 8192-wide MLP layer is 67 M weights (268 MB in
#: fp32, about 1 GB with Adam's moments and gradients); the largest preset uses 1024 units and
#: 256 channels.
LAYER_LIMITS: dict[str, LayerLimits] = {
    "hidden": LayerLimits(
        0, 8, 8192, "hidden sizes must be positive whole numbers, at most 8,192, in at most 8 layers"
    ),
    "widths": LayerLimits(1, 4, 1024, "widths must be 1 to 4 positive channel counts, each at most 1,024"),
}


def check_layers(option: str, sizes) -> list[int]:
    """``sizes`` as ints within :data:`LAYER_LIMITS` for ``option``; a ValueError stating the rule otherwise."""
    limits = LAYER_LIMITS[option]
    try:
        ok = (
            not isinstance(sizes, (str, bytes, dict))
            and limits.min_layers <= len(sizes) <= limits.max_layers
            and all(not isinstance(s, bool) and s == int(s) and 1 <= s <= limits.max_width for s in sizes)
        )
    except (TypeError, ValueError, OverflowError):  # not a list, or items that are not numbers
        ok = False
    if not ok:
        raise ValueError(f"{limits.rule}, got {sizes!r}"[:300])
    return [int(s) for s in sizes]


def register_model(name: str, task: str, description: str, train_defaults: dict | None = None):
    """Decorator adding a builder function to :data:`MODELS` under ``name``.

    ``train_defaults`` are training options (config fields) the model is trained with
    unless the user gives them, e.g. a linear model's normalisation and schedule.
    """

    def decorate(builder):
        params = inspect.signature(builder).parameters
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        MODELS[name] = ModelSpec(name, builder, task, description, defaults, dict(train_defaults or {}))
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    _ensure_registered()
    return list(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up by name; unknown names raise :class:`ConfigError` listing the known ones."""
    _ensure_registered()
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}{did_you_mean(name, MODELS)}; choose one of: {', '.join(MODELS)}"
        ) from None


def build_model(name: str, **options) -> nn.Module:
    """Build a registered model; unknown option names raise :class:`ConfigError`.

    The returned module carries ``mnistkit_name``, ``mnistkit_options`` (the
    full, resolved options) and ``mnistkit_task`` so it can be checkpointed.
    """
    spec = get_model_spec(name)
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(spec.defaults) or '(none)'}"
        )
    resolved = {**spec.defaults, **options}
    try:
        model = spec.builder(**resolved)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad options for model {name!r}: {exc}") from None
    # plain attributes beside the module's parameters (nn.Module's stubs type every attribute as one)
    model.mnistkit_name = name  # type: ignore[assignment]
    model.mnistkit_options = resolved  # type: ignore[assignment]
    model.mnistkit_task = spec.task  # type: ignore[assignment]
    return model


#: The built-in model modules, in listing order (simplest model first). They are imported by name
#: when the registry is first asked, so this module does not import the modules that import it.
BUILTIN_MODULES = ("mnistkit.models.linear", "mnistkit.models.mlp", "mnistkit.models.cnn", "mnistkit.models.crnn")


def _ensure_registered() -> None:
    """Import the modules whose decorators fill the registry (cheap, torch only)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
