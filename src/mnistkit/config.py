"""The one validated training configuration, its presets, and device resolution.

Defaults reproduce the tutorial's recipe (seed-mlp, Adam 1e-3, batch 64,
10 epochs, pixels normalised once to [-1, 1]). The resolved config is written
into every run directory and every checkpoint so a run can be rebuilt from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mnistkit.errors import ConfigError, did_you_mean
from mnistkit.presets import PRESETS  # the recipes live in their own module; the merge is here

OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
SCHEDULES = ("none", "onecycle", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
NORMS = ("tutorial", "dataset")
#: how a model is fitted: "lbfgs" is full-batch L-BFGS (logistic regression only, mnistkit.solvers.lbfgs);
#: "minibatch" is the epoch loop; "auto" picks lbfgs for LBFGS_MODELS unless an option needs minibatches
SOLVERS = ("auto", "lbfgs", "minibatch")
LBFGS_MODELS = ("logreg", "binary-logreg")
#: hidden-layer activations of the MLPs (mnistkit.models.mlp.ACTIVATIONS maps them to modules;
#: kept here too so the CLI can offer them without importing torch; a test keeps the two equal)
ACTIVATION_NAMES = ("relu", "gelu", "sigmoid", "tanh")
#: Ceilings on the loop's sizes, so a typo or a hostile --space file is one line, not hours of
#: work or an allocation of terabytes: the presets train 4-30 epochs; a batch is at most the
#: whole of MNIST's training set (60,000) rounded up.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536


#: The headings of ``mnistkit train --help``, in the order shown: each option field names its own.
DATA, MODEL, OPTIM, AUGMENT, RUN, OUTPUT = "Data", "Model", "Optimizer", "Augmentation", "Execution", "Output"
OPTION_GROUPS = (DATA, MODEL, OPTIM, AUGMENT, RUN, OUTPUT)


def option(default: Any, help: str | Callable[[], str], group: str, **cli: Any) -> Any:
    """A config field that the command line offers as an option (``mnistkit.cli.options.config_options``).

    The field's metadata is all the CLI needs, so a flag never repeats its field's name, type, help
    or default. ``help``: a sentence, or a function that writes it from a registry when shown;
    ``group``: its heading in ``--help``. ``cli`` may hold ``flag`` (the spelling, when not
    ``--field-name``), ``choices`` (a tuple, or a function reading a registry), ``negatable`` (a
    bool given as ``--x/--no-x``; otherwise a bare switch), ``min`` (a whole number's floor),
    ``folder`` (a path to a folder), ``count_or_fraction``, ``metavar`` and ``default_text`` (what
    an unset default means, e.g. ``runs/<name>``).
    """
    return field(default=default, metadata={"help": help, "group": group, **cli})


def _dataset_help() -> str:
    from mnistkit.data import list_datasets

    names = ", ".join(list_datasets())
    return f"A registered dataset ({names}) or a path to an IDX folder, Kaggle CSV or image folder."


def _model_names() -> list[str]:
    from mnistkit.models import list_models

    return list_models()


_SOLVER_HELP = (
    "auto: full-batch L-BFGS for logreg/binary-logreg (minibatches under torchrun or with --augment, "
    "--label-smoothing, --early-stopping); minibatches for every other model."
)
_NEGATIVES_HELP = (
    "Train with generated non-digits (mirrored and turned digits, overlays, pen strokes, drawn letters) whose "
    "prediction is pulled toward uniform, at this loss weight (outlier exposure); 0 = off."
)
_INIT_FROM_HELP = (
    "Start from the weights of this checkpoint or run directory (same model, classes and normalisation): "
    "fine-tuning. The optimiser and schedule start afresh."
)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Each option field's metadata carries its ``--help``."""

    # data
    dataset: str = option("mnist", _dataset_help, DATA)
    data_dir: str | None = option(None, "Folder to look in first for dataset files.", DATA, folder=True)
    download: bool = option(True, "Download missing files from the dataset's mirrors.", DATA, negatable=True)
    norm: str = option("tutorial", "tutorial: (x-0.5)/0.5; dataset: the dataset's mean/std.", DATA, choices=NORMS)
    val_size: float = option(
        0, "Validation split from train: a count (>= 1) or a fraction (< 1); 0 = none.", DATA, count_or_fraction=True
    )
    positive: int | None = option(None, "Binary task: this class against the rest.", DATA)
    classes: tuple[int, ...] | None = option(None, "Train on these classes only, e.g. 3,8.", DATA)
    augment: bool = option(
        False,
        "Augment training batches on the device as the --aug-* options say (alone: random +-2 px shifts).",
        AUGMENT,
        negatable=True,
    )
    aug_shift: int = option(2, "Max random shift per axis, in pixels.", AUGMENT)
    aug_rotate: float = option(0.0, "Max random rotation, in degrees.", AUGMENT)
    aug_scale: float = option(0.0, "Max relative size change: factor in [1-S, 1+S].", AUGMENT)
    aug_elastic: float = option(
        0.0, "Elastic distortion strength (Simard's alpha, pixels; 34 moves ink ~1-2 px); 0 = off.", AUGMENT
    )
    aug_elastic_sigma: float = option(4.0, "Smoothness of the elastic field: Gaussian std in pixels.", AUGMENT)
    aug_thickness: float = option(
        0.0, "Stroke thickness: max blend toward 3x3 dilation or erosion, 0..1; 0 = off.", AUGMENT
    )
    negatives: float = option(0.0, _NEGATIVES_HELP, AUGMENT)
    # model
    model: str = option(
        "seed-mlp", "The network to train (`mnistkit models` describes each).", MODEL, choices=_model_names
    )
    model_options: dict[str, Any] = field(default_factory=dict)  # --hidden, --activation, --dropout, --model-option
    init_from: str | None = option(None, _INIT_FROM_HELP, MODEL, metavar="CHECKPOINT|RUN_DIR")
    # optimisation
    solver: str = option("auto", _SOLVER_HELP, OPTIM, choices=SOLVERS)
    epochs: int = option(10, "Passes over the data.", OPTIM, min=1)
    batch_size: int = option(64, "Global batch size (split across processes under torchrun).", OPTIM, min=1)
    lr: float = option(1e-3, "Peak learning rate.", OPTIM)
    optimizer: str = option("adam", "The optimiser; sgd takes --momentum and --nesterov.", OPTIM, choices=OPTIMIZERS)
    momentum: float = option(0.9, "SGD momentum.", OPTIM)
    nesterov: bool = option(False, "Nesterov momentum (sgd).", OPTIM)
    weight_decay: float = option(
        0.0, "Weight decay: the L2 penalty's strength (logreg's L-BFGS: in place of C=1).", OPTIM
    )
    schedule: str = option("none", "Per-step learning-rate schedule.", OPTIM, choices=SCHEDULES)
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy targets, in [0, 1); 0 = off.", OPTIM)
    early_stopping: int = option(0, "Patience in epochs on validation loss (needs --val-size); 0 = off.", OPTIM, min=0)
    # execution
    seed: int = option(0, "Seed of the run's random numbers: initial weights, batch order, augmentation.", RUN)
    deterministic: bool = option(False, "Deterministic kernels (identical CPU runs).", RUN)
    device: str = option("auto", "auto: cuda, then mps, then cpu.", RUN, choices=DEVICES)
    amp: bool = option(
        True,
        "bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX); fp32 elsewhere. Weights stay fp32.",
        RUN,
        negatable=True,
    )
    compile: bool = option(False, "torch.compile the model.", RUN)
    eval_batch_size: int = 1024  # images per evaluation batch (not a command-line option)
    log_every: int = option(100, "Steps between log lines; 0 = none.", OUTPUT, min=0)
    # output
    out: str | None = option(None, "Run directory.", OUTPUT, folder=True, default_text="runs/<name>")
    name: str | None = option(None, "Run name under runs/.", OUTPUT, default_text="DATASET-MODEL-TIME")
    preset: str | None = option(
        None,
        "A tuned recipe; flags override it (the preset's model options merge with --hidden etc.).",
        MODEL,
        choices=tuple(PRESETS),
    )
    dry_run: bool = option(False, "Two steps per epoch on a small subset: a smoke test.", RUN)

    def __post_init__(self):
        if self.classes is not None:
            self.classes = tuple(int(c) for c in self.classes)
        self.model_options = dict(self.model_options or {})
        self.check()

    def check(self) -> None:
        """Check every field; raise :class:`ConfigError` naming the bad value and what is allowed."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("norm", self.norm, NORMS)
        _positive_int("epochs", self.epochs, MAX_EPOCHS)
        _positive_int("batch_size", self.batch_size, MAX_BATCH_SIZE)
        _positive_int("eval_batch_size", self.eval_batch_size, MAX_BATCH_SIZE)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 100):
            raise ConfigError(f"lr must be a number in (0, 100), got {self.lr!r}")
        if not 0 <= self.weight_decay < 10:
            raise ConfigError(f"weight_decay must be in [0, 10), got {self.weight_decay!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        from mnistkit.data.task import check_val_size  # the one owner of the val_size rule

        check_val_size(self.val_size)
        if self.early_stopping < 0:
            raise ConfigError(f"early_stopping patience must be >= 0 epochs, got {self.early_stopping}")
        if self.early_stopping and not self.val_size:
            raise ConfigError("early_stopping needs a validation split: add --val-size (e.g. 5000 or 0.1)")
        if self.log_every < 0:
            raise ConfigError(f"log_every must be >= 0, got {self.log_every}")
        if self.positive is not None and self.classes is not None:
            raise ConfigError("give either --positive (one class against the rest) or --classes, not both")
        if self.classes is not None and (len(self.classes) < 2 or len(set(self.classes)) != len(self.classes)):
            raise ConfigError(f"--classes needs at least two distinct classes, got {list(self.classes)}")
        self._check_augmentation()
        self._check_solver()
        if self.nesterov and self.optimizer != "sgd":
            raise ConfigError("--nesterov applies to --optimizer sgd only")

    def _check_augmentation(self) -> None:
        """The --aug-* strengths: numbers in ranges that keep a digit a digit."""
        if isinstance(self.aug_shift, bool) or not isinstance(self.aug_shift, int) or not 0 <= self.aug_shift <= 8:
            raise ConfigError(f"aug_shift must be a whole number of pixels in [0, 8], got {self.aug_shift!r}")
        _in_range("aug_rotate", self.aug_rotate, 0, 45, "degrees")
        _in_range("aug_scale", self.aug_scale, 0, 0.5, "(a fraction of the size)")
        _in_range("aug_elastic", self.aug_elastic, 0, 100, "pixels")
        _in_range("aug_thickness", self.aug_thickness, 0, 1, "(a blend fraction)")
        _in_range("negatives", self.negatives, 0, 10, "(a loss weight)")
        if not (_is_number(self.aug_elastic_sigma) and 0.5 <= self.aug_elastic_sigma <= 10):
            raise ConfigError(f"aug_elastic_sigma must be in [0.5, 10] pixels, got {self.aug_elastic_sigma!r}")

    def _check_solver(self) -> None:
        """``--solver lbfgs`` fits a linear model on the whole, fixed training set."""
        _choice("solver", self.solver, SOLVERS)
        if self.solver != "lbfgs":
            return
        if self.model not in LBFGS_MODELS:
            raise ConfigError(
                f"--solver lbfgs fits logistic regression only ({', '.join(LBFGS_MODELS)}); "
                f"model {self.model!r} trains with --solver minibatch"
            )
        needs_minibatches = self.minibatch_only_options()
        if needs_minibatches:
            raise ConfigError(
                f"{needs_minibatches[0]} needs --solver minibatch (L-BFGS fits the whole training set as it is)"
            )

    def minibatch_only_options(self) -> list[str]:
        """The options set here that only the minibatch loop implements (``--solver auto`` then uses it)."""
        used = {
            "--augment": self.augment,
            "--label-smoothing": self.label_smoothing,
            "--early-stopping": self.early_stopping,
            "--negatives": self.negatives,
        }
        return [flag for flag, on in used.items() if on]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["classes"] is not None:
            d["classes"] = list(d["classes"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild from a saved dict; unknown keys (from newer versions) raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        for f in dataclasses.fields(cls):  # a saved file is untrusted: check JSON kinds before check()
            if f.name in d and not _matches_annotation(str(f.type), d[f.name]):
                raise ConfigError(f"config key {f.name!r} is {str(d[f.name])[:40]!r}; expected {f.type}")
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def resolve_config(preset: str | None = None, *, base: TrainConfig | None = None, **overrides) -> TrainConfig:
    """The one place a run's options merge, lowest first: the field defaults, the model's own
    training defaults, the preset (or ``base``, a whole saved config), then explicit ``overrides``
    (a value of ``None`` means "not given").

    ``model_options`` merge key by key while the model stays the preset's (or the base's), so
    ``resolve_config("fast", model_options={"dropout": 0.1})`` keeps the preset's ``hidden``; with
    another model they start afresh. An ``aug_*`` strength asks for augmentation unless
    ``augment`` is given.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if base is not None and preset is not None:
        raise ConfigError("--config gives the whole recipe: drop --preset")
    recipe = base.to_dict() if base is not None else _preset_options(preset)
    model = str(given.get("model") or recipe.get("model") or field_default("model"))
    merged: dict[str, Any] = {} if base is not None else dict(model_train_defaults(model))
    merged.update(recipe)
    if "model_options" in given and model == recipe.get("model", model):
        given["model_options"] = {**recipe.get("model_options", {}), **given["model_options"]}
    elif model != recipe.get("model", model):
        merged.pop("model_options", None)  # the recipe's model options belong to its own model
    if "augment" not in given and any(k.startswith("aug_") for k in given):
        given["augment"] = True
    merged.update(given)
    unknown = sorted(set(merged) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown training options: {', '.join(unknown)}")
    return TrainConfig(**merged)


def _preset_options(preset: str | None) -> dict[str, Any]:
    """A preset's options (and its name, recorded in the config); none for no preset."""
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; choose one of: {', '.join(PRESETS)}"
        )
    return {**PRESETS[preset], "preset": preset}


def model_train_defaults(model: str) -> dict[str, Any]:
    """The training options ``model`` is trained with unless the user gives them (its registry entry's)."""
    from mnistkit.models import get_model_spec

    return get_model_spec(model).train_defaults


def defaults_by_model(name: str) -> dict[str, Any]:
    """Field ``name``'s default for each registered model whose own training defaults change it.

    Feeds ``--help`` (e.g. ``schedule``: ``{"logreg": "cosine", "binary-logreg": "cosine"}``), so
    the help says what a run with that model really uses.
    """
    from mnistkit.models import list_models

    default = _FIELDS[name].default
    changed = {m: model_train_defaults(m).get(name, default) for m in list_models()}
    return {m: v for m, v in changed.items() if v != default}


#: a config file is a few hundred bytes; refuse anything far larger before parsing it
MAX_CONFIG_BYTES = 1 << 20


def read_config_dict(path, label: str) -> dict:
    """A training config file's JSON object (a run's ``config.json``, a tuned ``best.json``), read
    bounded and regular-file-only; every fault is one :class:`ConfigError` that starts with ``label``.

    The one reader of config files: ``--config`` and ``--resume`` both come here.
    """
    import json

    from mnistkit.fileio import read_bytes

    raw = read_bytes(path, MAX_CONFIG_BYTES, ConfigError, "training config")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "too deeply nested" if isinstance(exc, RecursionError) else " ".join(str(exc).split())[:80]
        raise ConfigError(f"{label}: not valid JSON ({why})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: holds a JSON {type(data).__name__}, expected an object of training options")
    return data


def load_config_file(path) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON file: a run's ``config.json`` or a tuned ``best.json``.

    Every field is validated as usual; an unreadable file, bad JSON or unknown keys are a
    one-line :class:`ConfigError` naming the file.
    """
    label = f"--config {path}"
    data = read_config_dict(path, label)
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ConfigError) as exc:  # TypeError: a field of the wrong shape, e.g. model_options as a list
        raise ConfigError(f"{label}: {exc}") from None


def resolve_device(name: str):
    """``auto`` -> cuda, then mps, then cpu; an unavailable explicit device is a ConfigError."""
    import re

    import torch

    if isinstance(name, str) and re.fullmatch(r"cuda:\d+", name):  # a GPU by index (the estimators' device=)
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was asked for but no CUDA GPU is available; use --device auto or cpu")
        return torch.device(name)
    _choice("device", name, DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for but MPS is not available; use --device auto or cpu")
    return torch.device(name)


def _matches_annotation(annotation: str, value: Any) -> bool:
    """Does a JSON value fit a field annotation such as ``"int | None"`` or ``"tuple[int, ...] | None"``?"""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    kinds = {
        "None": value is None,
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": is_int,
        "float": is_int or isinstance(value, float),
        "dict": isinstance(value, dict) and all(isinstance(k, str) for k in value),
        "tuple": isinstance(value, (list, tuple))
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
    }
    return any(kinds.get(part.strip().split("[")[0], True) for part in annotation.split("|"))


def option_help(name: str) -> str:
    """The help text of config field ``name`` (from its metadata), for the CLI: one source for both."""
    text = _FIELDS[name].metadata.get("help", "")
    return str(text() if callable(text) else text)


def option_fields() -> list[dataclasses.Field]:
    """The fields the command line offers as options (those declared with :func:`option`), in order."""
    return [f for f in _FIELDS.values() if "group" in f.metadata]


def field_default(name: str) -> Any:
    """The default of config field ``name`` (``None`` for fields built by a factory)."""
    f = _FIELDS[name]
    return f.default if f.default is not dataclasses.MISSING else None


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _is_number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _in_range(what: str, value, low: float, high: float, unit: str) -> None:
    if not (_is_number(value) and low <= value <= high):
        raise ConfigError(f"{what} must be a number in [{low}, {high}] {unit}, got {value!r}")


def _choice(what: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


def _positive_int(what: str, value, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{what} must be a positive whole number, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{what} must be at most {maximum:,}, got {value:,}")


# Public checks for options that live outside TrainConfig (the scikit-learn estimators' parameters):
# the same rules, messages and ConfigError (a ValueError, as scikit-learn expects) as the config.
check_choice = _choice
check_positive_int = _positive_int
check_in_range = _in_range


def check_positive(what: str, value, *, allow_zero: bool = False) -> None:
    """A positive (or, with ``allow_zero``, non-negative) finite number; ``ConfigError`` otherwise."""
    if not (_is_number(value) and (value >= 0 if allow_zero else value > 0)):
        raise ConfigError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
