"""The ``mnistkit`` command line: a thin layer over the importable API.

Subcommands live in their own modules and are imported only when invoked, so
``mnistkit --help`` does not import torch. Every user error ends as one line on
stderr and exit code 2 (see :func:`main`).
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from mnistkit import __version__

#: command name -> "module:attribute" of a click command; imported on first use.
COMMANDS: dict[str, str] = {
    "train": "mnistkit.cli.train:train",
    "evaluate": "mnistkit.cli.evaluate:evaluate",
    "data": "mnistkit.cli.data:data",
    "show": "mnistkit.cli.show:show",
    "report": "mnistkit.cli.report:report",
    "predict": "mnistkit.cli.predict:predict",
    "export": "mnistkit.cli.export:export",
    "serve": "mnistkit.cli.serve:serve",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on demand from :data:`COMMANDS`."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnistkit")
def cli():
    """Train, evaluate and use small image classifiers on MNIST-family data."""


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every error into one line + exit code.

    Exit codes: 0 success, 2 bad input (usage, files, data, checkpoints),
    130 interrupted, 1 an internal error (a bug; ``MNISTKIT_DEBUG=1`` shows the traceback).
    """
    from mnistkit.errors import MnistkitError

    prog = "mnistkit"
    try:
        rv = cli.main(args=argv, prog_name=prog, standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        code = 130
    except click.UsageError as exc:
        where = f" {exc.ctx.info_name}" if exc.ctx is not None and exc.ctx.parent is not None else ""
        click.echo(f"{prog}{where}: error: {_one_line(exc.format_message())}", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {_one_line(exc.format_message())}", err=True)
        code = 2
    except MnistkitError as exc:
        click.echo(f"{prog}: error: {_one_line(exc)}", err=True)
        code = 2
    except OSError as exc:  # disk full, read-only directory, permission denied
        name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"{prog}: error:{name}: {_one_line(exc.strerror or exc)}", err=True)
        code = 2
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        code = 130
    except Exception as exc:  # a bug: say so on one line unless debugging
        if os.environ.get("MNISTKIT_DEBUG"):
            raise
        click.echo(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                   "(set MNISTKIT_DEBUG=1 for the traceback)", err=True)
        code = 1
    sys.exit(code)
