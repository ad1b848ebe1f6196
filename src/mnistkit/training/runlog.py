"""Where a run's words go: the tutorial-style log (stdout and log.txt) and a progress bar."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from mnistkit.errors import ConfigError
from mnistkit.fileio import open_append


class RunLog:
    """Writes every log line to ``log.txt`` (always) and to stdout (unless quiet).

    On a terminal, and when not quiet, a rich progress bar shows steps within the
    epoch; log lines are printed above it so the two never interleave.
    """

    def __init__(self, log_path: Path | None, echo: bool = True, progress: bool | None = None):
        self.echo = echo
        # held open for the whole run (closed by close()); a link or FIFO at log_path is refused
        self._file: TextIO | None = open_append(log_path, ConfigError, "run's log") if log_path is not None else None
        self.use_progress = echo and (sys.stdout.isatty() if progress is None else progress)
        self._progress: Any = None  # a rich Progress while a bar is shown (rich is imported only then)
        self._task: Any = None

    def line(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text + "\n")
        if self.echo:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.use_progress:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._progress.start()
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task("train", total=steps, epoch=f"{epoch}/{epochs}")

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._file is not None:
            self._file.close()
            self._file = None
