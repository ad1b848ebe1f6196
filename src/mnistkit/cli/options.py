"""Parameter types shared by several commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import click


class IntList(click.ParamType):
    """A comma-separated list of whole numbers, e.g. ``3,8`` or ``512,128``."""

    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return tuple(value)
        try:
            items = tuple(int(v) for v in str(value).split(",") if v.strip() != "")
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of whole numbers (e.g. 3,8)", param, ctx)
        if not items:
            self.fail("the list is empty", param, ctx)
        return items


class KeyValue(click.ParamType):
    """``KEY=VALUE`` where VALUE is parsed as JSON when possible (numbers, lists, booleans)."""

    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        import json

        if "=" not in value:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        key, raw = value.split("=", 1)
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        return key.strip().replace("-", "_"), parsed


def print_json_line(obj) -> None:
    """One JSON object on one line: the last line of stdout for ``--json``."""
    print_json(obj)


def print_json(obj, indent: int | None = None) -> None:
    """The one place ``--json`` output is written: always valid JSON. A NaN or infinity (which
    Python's json would write as the bare, invalid ``NaN``) becomes ``null``; objects that JSON
    has no type for are written as strings."""
    import json

    separators = (", ", ": ") if indent is None else None
    click.echo(json.dumps(_finite(obj), separators=separators, indent=indent, default=str, allow_nan=False))


def _finite(obj):
    """``obj`` with every non-finite float replaced by None (nested lists, tuples and dicts)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def model_options_from(hidden, activation, dropout, model_option) -> dict:
    """The model options given on a command line: ``--model-option K=V`` pairs, then the named flags."""
    options = dict(model_option or ())
    for key, value in (("hidden", hidden), ("activation", activation), ("dropout", dropout)):
        if value is not None:
            options[key] = list(value) if key == "hidden" else value
    return options


def dataset_help(lead: str = "") -> Callable[[], str]:
    """Help for a ``--dataset`` option: the config field's (the registered names, read when shown)."""

    def text() -> str:
        from mnistkit.config import option_help

        return lead + option_help("dataset")

    return text


class LazyChoice(click.Choice):
    """A choice whose values come from a registry, read on first use.

    ``mnistkit --help`` lists commands without importing their registries (the model
    registry imports torch); the values are read when a command parses or shows its help.
    """

    def __init__(self, source: Callable[[], Iterable[str]], what: str | None = None):
        self._source = source
        self._what = what  # "model": the error says "unknown model 'x'", as the library's does; else click's
        self._values: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=True)

    def convert(self, value, param, ctx):
        from mnistkit.errors import did_you_mean

        if self._what is None:
            return super().convert(value, param, ctx)
        if value not in self.choices:
            hint = did_you_mean(value, self.choices)
            self.fail(f"unknown {self._what} {value!r}{hint}; choose one of: {', '.join(self.choices)}", param, ctx)
        return value

    @property
    def choices(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._source())
        return self._values

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns the (empty) placeholder
        pass


class RecipeOption(click.Option):
    """An option shown under a heading (``group``) whose help ends with the default a run really uses.

    ``help_from`` builds the help text when it is shown (a registry's names). ``field`` names a
    :class:`~mnistkit.config.TrainConfig` field: the help shows its default and
    the models whose own training defaults change it (``[default: none; logreg, binary-logreg:
    cosine]``). ``model_option`` names a model option: the help shows each registered model's
    default for it. Both are read from the registries when the help is shown, never written here.
    ``default_text`` says what an option's default is when it is neither (``runs/<name>``, a constant).
    """

    def __init__(
        self,
        *args,
        group: str | None = None,
        field: str | None = None,
        model_option: str | None = None,
        help_from: Callable[[], str] | None = None,
        default_text: str | None = None,
        **kw,
    ):
        super().__init__(*args, **kw)
        self.group = group
        self.field = field
        self.model_option = model_option
        self.help_from = help_from  # help text read from a registry when shown
        self.default_text = default_text  # what the default is, when neither a field's nor a model option's

    def get_help_record(self, ctx):
        if self.help_from is not None:
            self.help = self.help_from()
        record = super().get_help_record(ctx)
        default = self._default_text()
        if record is None or default is None:
            return record
        names, text = record
        return names, f"{text}  [{default}]" if text else f"[{default}]"

    def _default_text(self) -> str | None:
        if self.default_text is not None:
            return f"default: {self.default_text}"
        if self.field is not None:
            from mnistkit.config import defaults_by_model, field_default

            parts = [f"default: {shown(field_default(self.field))}"]
            parts += _by_value(defaults_by_model(self.field))
            return "; ".join(parts)
        if self.model_option is not None:
            from mnistkit.models import get_model_spec, list_models

            specs = [get_model_spec(m) for m in list_models()]
            return "; ".join(
                _by_value({s.name: s.defaults[self.model_option] for s in specs if self.model_option in s.defaults})
            )
        return None


def shown(value) -> str:
    """A default as ``--help`` writes it: on/off, none, 512,128."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _by_value(per_model: dict) -> list[str]:
    """``{"logreg": "cosine", "binary-logreg": "cosine"}`` -> ``["logreg, binary-logreg: cosine"]``."""
    models_of: dict[str, list[str]] = {}
    for model, value in per_model.items():
        models_of.setdefault(shown(value), []).append(model)
    return [f"{', '.join(models)}: {value}" for value, models in models_of.items()]


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists options under headings (each option's ``group``): the
    headings in ``groups`` first, in that order, then the others as they come; options without one
    go under ``default_group``."""

    def __init__(self, *args, default_group: str = "Other options", groups: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.default_group = default_group
        self.groups = groups

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {title: [] for title in self.groups}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "group", None) or self.default_group, []).append(record)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class CountOrFraction(click.ParamType):
    """A validation-split size: a whole count (5000) or a fraction of the training set (0.1)."""

    name = "N|FRACTION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(value)
            except ValueError:
                self.fail(f"{value!r} is neither a count (5000) nor a fraction (0.1)", param, ctx)
        return int(number) if number.is_integer() else number


def config_options() -> list[click.Option]:
    """A ``train`` option for each :class:`~mnistkit.config.TrainConfig` field declared with
    :func:`mnistkit.config.option`: flag, type, help, heading and default all read from the field.

    Every option's value is ``None`` unless given, so :func:`mnistkit.config.resolve_config` can
    tell a flag from a default and merge it over the model's defaults and a preset.
    """
    from mnistkit.config import option_fields

    return [_config_option(f) for f in option_fields()]


def _config_option(f) -> click.Option:
    """The click option of one config field (see :func:`config_options`)."""
    from mnistkit.config import option_help

    meta = f.metadata
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    kind = str(f.type).split("|")[0].strip()
    if meta.get("negatable"):
        flag = f"{flag}/--no-{flag[2:]}"
    kw: dict = {"is_flag": True} if kind == "bool" and not meta.get("negatable") else {}
    if kind != "bool":
        kw["type"] = _param_type(f.name, kind, meta)
    return RecipeOption(
        [flag, f.name],
        default=None,
        group=meta["group"],
        field=f.name,
        help_from=lambda: option_help(f.name),
        default_text=meta.get("default_text"),
        metavar=meta.get("metavar"),
        **kw,
    )


def _param_type(name: str, kind: str, meta) -> click.ParamType | type:
    """The click type of a config field from its annotation (``kind``) and metadata."""
    choices = meta.get("choices")
    if callable(choices):
        return LazyChoice(choices, name)
    if choices is not None:
        return click.Choice(choices)
    if meta.get("folder"):
        return click.Path(file_okay=False)
    if meta.get("count_or_fraction"):
        return CountOrFraction()
    if kind.startswith("tuple"):
        return IntList()
    if kind == "int":
        return click.IntRange(min=meta["min"]) if "min" in meta else int
    return {"float": float, "str": str}[kind]
