"""What a report knows about one run directory: a :class:`RunRecord` read from its files.

Reading is kept apart from rendering (:mod:`mnistkit.report.pages`) so the record can be
checked against what training wrote, and other pages can reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnistkit.errors import ConfigError
from mnistkit.plots import RUN_PLOT_NAMES  # cheap: plots imports matplotlib only inside functions
from mnistkit.runs import CONFIG_FILE, EVAL_FILE, LOG_FILE, METRICS_FILE, SUMMARY_FILE, RunDir

#: Files a run directory must hold for a report (metrics may come from the CSV instead).
REQUIRED_FILES = (CONFIG_FILE, METRICS_FILE)
#: Files that make a report richer; a run without them (e.g. interrupted) still reports.
OPTIONAL_FILES = (SUMMARY_FILE, EVAL_FILE, LOG_FILE)
#: Image types inlined from ``plots/``, by suffix.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}
#: Plot order in reports: the trainer's standard plots first, anything else after, by name.
PLOT_ORDER = RUN_PLOT_NAMES


@dataclass
class RunRecord:
    """Everything a report shows about one run directory, as read from its files."""

    path: Path
    config: dict
    metrics: list[dict]
    summary: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    log: str | None = None
    log_cut: bool = False  # only the end of a long log.txt was read
    plots: list[Path] = field(default_factory=list)
    plot_bytes: dict[Path, bytes] = field(default_factory=dict, repr=False)  # read bounded, as the plots
    missing: list[str] = field(default_factory=list)  # optional files that were absent
    name: str = ""

    def __post_init__(self):
        self.name = self.name or self.path.name

    @property
    def last(self) -> dict:
        """The final epoch's metrics row (empty when no epoch finished)."""
        return self.metrics[-1] if self.metrics else {}

    def get(self, key: str, default=None):
        """A run-level value: summary first, then config (``dataset``, ``model``, ``epochs``...)."""
        for source in (self.summary, self.config):
            if source.get(key) is not None:
                return source[key]
        return default

    @property
    def test_accuracy(self):
        """Test accuracy in percent from summary.json or eval.json, None if the run was not evaluated."""
        value = self.summary.get("test_accuracy")
        return value if value is not None else self.evaluation.get("accuracy")


def _plot_files(run: RunDir) -> list[Path]:
    """Images under ``plots/``: the standard ones in :data:`PLOT_ORDER`, then the rest by name.

    Every entry with an image suffix is listed, links too: the reader refuses a link rather
    than this listing passing over it in silence.
    """
    files = [p for p in run.plot_files() if p.suffix.lower() in IMAGE_TYPES]
    rank = {name: i for i, name in enumerate(PLOT_ORDER)}
    return sorted(files, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def load_run(run_dir: Path | str) -> RunRecord:
    """Read a run directory written by ``mnistkit train``.

    Raises :class:`ConfigError` naming every required file that is missing;
    optional files (summary, eval, log, plots) may be absent.
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist (pass a folder written by `mnistkit train`)")
    missing = [name for name in REQUIRED_FILES if not run.has(run_dir / name)]
    if missing == [METRICS_FILE] and run.has(run.metrics_csv):
        missing = []
    if missing:
        raise ConfigError(
            f"{run_dir} is not a complete run directory: missing {', '.join(missing)} (written by `mnistkit train`)"
        )
    config = run.read_config(f"{run.config}")
    optional = {name: run_dir / name for name in OPTIONAL_FILES}
    log, log_cut = run.read_log_tail() if run.has(run.log) else (None, False)
    plots = _plot_files(run)
    return RunRecord(
        path=run_dir,
        config=config,
        metrics=run.read_metrics(),
        summary=run.read_summary() if run.has(run.summary) else {},
        evaluation=run.read_eval() if run.has(run.eval) else {},
        log=log,
        log_cut=log_cut,
        plots=plots,
        plot_bytes=run.read_plots(plots),
        missing=[name for name, p in optional.items() if not run.has(p)],
    )
