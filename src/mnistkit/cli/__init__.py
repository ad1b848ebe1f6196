"""The ``mnistkit`` command line: a thin layer over the importable API.

Subcommands live in their own modules and are imported only when invoked, so
``mnistkit --help`` does not import torch. Every user error ends as one line on
stderr and exit code 2 (see :func:`main`).
"""

from __future__ import annotations

import importlib
import os
import signal
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
    "tune": "mnistkit.cli.tune:tune",
    "models": "mnistkit.cli.models:models",
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


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


#: Every error line starts with this, whatever the command: one prefix for people and scripts to look for.
ERROR_PREFIX = "mnistkit: error: "
#: Exit codes after a signal: 128 + the signal number, as a shell reports a process killed by it.
SIGNAL_EXIT: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
_SIGNAL_WORD: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Signalled(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (``finally`` blocks and atomic
    writes clean up after themselves), but is not an ``Exception``, so nothing swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum, frame):
    raise Signalled(signum)


def _install_signal_handlers() -> dict:
    """SIGINT and SIGTERM -> :class:`Signalled`; returns the previous handlers (empty off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_signalled) for sig in SIGNAL_EXIT}


def _notes(exc: BaseException | None) -> str:
    """``; NOTE`` per note on an interrupt (how to continue the interrupted work), on the same line."""
    return "".join(f"; {_one_line(n)}" for n in getattr(exc, "__notes__", ()))


def _os_error_message(exc: OSError) -> str:
    """``FILE: reason`` (the file when the error carries one, as atomic writes' do)."""
    reason = _one_line(exc.strerror or exc)
    return f"{exc.filename}: {reason}" if getattr(exc, "filename", None) else reason


def _command_path(argv: list[str] | None) -> str:
    """``mnistkit train``: the command that ``argv`` reaches, for a usage error click raised without
    a context (an option missing its value is found by the parser before the command has one)."""
    words, command = ["mnistkit"], cli
    ctx = click.Context(cli, info_name="mnistkit")
    for arg in sys.argv[1:] if argv is None else argv:
        sub = command.get_command(ctx, arg) if isinstance(command, click.Group) else None
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every error into one line + exit code.

    Every error is one line ``mnistkit: error: MESSAGE`` on stderr (usage errors
    end with the ``--help`` to read). Exit codes: 0 success, 2 bad input (usage,
    files, data, checkpoints, a full disk), 130 interrupted (SIGINT, Ctrl-C), 143
    terminated (SIGTERM), each with one line (``mnistkit: interrupted`` /
    ``mnistkit: terminated``), 1 an internal error (a bug; ``MNISTKIT_DEBUG=1``
    shows the traceback). After a signal no temporary file is left behind:
    atomic writes remove theirs as the signal unwinds them.
    """
    from mnistkit.errors import MnistkitError

    prog = "mnistkit"
    previous = _install_signal_handlers()
    try:
        rv = cli.main(args=argv, prog_name=prog, standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except Signalled as exc:
        click.echo(f"{prog}: {_SIGNAL_WORD[exc.signum]}{_notes(exc)}", err=True)
        code = SIGNAL_EXIT[exc.signum]
    except click.exceptions.Abort as exc:  # click's word for a KeyboardInterrupt it caught (the cause)
        click.echo(f"{prog}: aborted{_notes(exc.__cause__)}", err=True)
        code = 130
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else _command_path(argv)
        click.echo(f"{ERROR_PREFIX}{_one_line(exc.format_message()).rstrip('.')}; see '{path} --help'", err=True)
        code = 2
    except click.ClickException as exc:
        click.echo(f"{ERROR_PREFIX}{_one_line(exc.format_message())}", err=True)
        code = 2
    except MnistkitError as exc:
        click.echo(f"{ERROR_PREFIX}{_one_line(exc)}", err=True)
        code = 2
    except OSError as exc:  # disk full, read-only directory, permission denied
        click.echo(f"{ERROR_PREFIX}{_os_error_message(exc)}", err=True)
        code = 2
    except KeyboardInterrupt as exc:  # off the main thread, or raised by code that catches signals itself
        click.echo(f"{prog}: interrupted{_notes(exc)}", err=True)
        code = 130
    except Exception as exc:  # a bug: say so on one line unless debugging
        if os.environ.get("MNISTKIT_DEBUG"):
            raise
        click.echo(
            f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} (set MNISTKIT_DEBUG=1 for the traceback)",
            err=True,
        )
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code)
