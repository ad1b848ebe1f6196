"""Parameter types shared by several commands."""

from __future__ import annotations

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
    import json

    click.echo(json.dumps(obj, separators=(", ", ": "), default=str))


def model_options_from(hidden, activation, dropout, model_option) -> dict:
    """The model options given on a command line: ``--model-option K=V`` pairs, then the named flags."""
    options = dict(model_option or ())
    for key, value in (("hidden", hidden), ("activation", activation), ("dropout", dropout)):
        if value is not None:
            options[key] = list(value) if key == "hidden" else value
    return options
