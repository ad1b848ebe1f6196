"""The live view of a study: trials done, pruned and failed, the best value so far, time left.

It reads the study's storage from a background thread once a second, so it shows the same
thing whether trials run in this process, in local worker processes or on other machines.
On a terminal it is a rich panel; elsewhere one line per finished trial.
"""

from __future__ import annotations

import threading
import time

from mnistkit.tuning.budget import cut_line


class TuneProgress:
    """Poll ``study`` and show its state; use as a context manager around the workers."""

    def __init__(
        self,
        study,
        target: int,
        timeout: float | None,
        workers: int,
        live: bool,
        echo: bool = True,
        interval: float = 1.0,
    ):
        self.study = study
        self.target = target
        self.timeout = timeout
        self.workers = workers
        self.live = live
        self.echo = echo
        self.interval = interval
        self.started = time.monotonic()
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict:
        """Counts by state, the best trial so far and the estimated time left (seconds or None)."""
        trials = self.study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        best = max(complete, key=lambda t: t.value) if complete else None
        elapsed = time.monotonic() - self.started
        finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and t.duration is not None]
        remaining = max(0, self.target - len(finished))
        left = None
        if finished and remaining:
            mean = sum(t.duration.total_seconds() for t in finished) / len(finished)
            left = mean * remaining / max(1, self.workers)
        if self.timeout is not None:
            budget = max(0.0, self.timeout - elapsed)
            left = budget if left is None else min(left, budget)
        return {
            "counts": counts,
            "best": best,
            "elapsed": elapsed,
            "left": 0.0 if not remaining else left,
            "trials": trials,
        }

    # ------------------------------------------------------------------ display

    def _panel(self, snap: dict):
        from rich.table import Table

        c = snap["counts"]
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        table.add_row(
            "trials",
            f"{done}/{self.target} done: {c.get('COMPLETE', 0)} complete, "
            f"{c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed, "
            f"{c.get('RUNNING', 0)} running, {c.get('WAITING', 0)} queued",
        )
        best = snap["best"]
        table.add_row("best", f"{best.value:.2f} % validation accuracy (trial {best.number})" if best else "-")
        table.add_row(
            "time",
            f"{_clock(snap['elapsed'])} elapsed, {_clock(snap['left']) if snap['left'] is not None else '?'} left",
        )
        return table

    def _lines(self, snap: dict) -> None:
        """Non-terminal output: one line per trial that finished since the last poll."""
        best = snap["best"]
        for t in sorted(snap["trials"], key=lambda t: t.number):
            if t.number in self._seen or not t.state.is_finished():
                continue
            self._seen.add(t.number)
            value = (
                f"val {t.value:.2f} %"
                if t.value is not None
                else (f"after epoch {max(t.intermediate_values)}" if t.intermediate_values else "")
            )
            outcome = cut_line(t.user_attrs) or f"{t.state.name.lower()} {value}".rstrip()
            print(
                f"trial {t.number} {outcome}" + (f" | best {best.value:.2f} % (trial {best.number})" if best else ""),
                flush=True,
            )

    def refresh(self) -> None:
        snap = self.snapshot()
        if self._live is not None:
            self._live.update(self._panel(snap))
        elif self.echo:
            self._lines(snap)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # a storage hiccup must not kill the display; the next poll retries
                pass

    def __enter__(self):
        if self.live and self.echo:
            from rich.live import Live

            self._live = Live(self._panel(self.snapshot()), refresh_per_second=2, transient=False)
            self._live.start()
        self._thread = threading.Thread(target=self._run, name="mnistkit-tune-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.refresh()
        finally:
            if self._live is not None:
                self._live.stop()
                self._live = None


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
