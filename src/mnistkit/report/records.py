"""What a report knows about one run directory: a :class:`RunRecord` read from its files.

Reading is kept apart from rendering (:mod:`mnistkit.report.pages`) so the record can be
checked against what training wrote, and other pages can reuse it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from mnistkit.errors import ConfigError, DataFormatError
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
#: Longer logs keep only their last lines, so a report stays small.
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
    plots: list[Path] = field(default_factory=list)
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


def _read_json(path: Path) -> dict:
    """Parse a JSON object file; a corrupt file is a :class:`DataFormatError` naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-blank line (metrics.jsonl)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
    return rows


def _csv_value(text: str):
    """A metrics.csv cell as int, float or None (empty cells are missing values)."""
    if text == "" or text.lower() in {"none", "null", "nan"}:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_metrics_csv(path: Path) -> list[dict]:
    """metrics.csv as rows of numbers: the fallback when metrics.jsonl is absent."""
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _plot_files(run_dir: Path) -> list[Path]:
    """Images under ``plots/``: the standard ones in :data:`PLOT_ORDER`, then the rest by name."""
    folder = RunDir(run_dir).plots
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES]
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
    metrics_path = run.metrics
    if not metrics_path.is_file() and run.metrics_csv.is_file():
        metrics_path = run.metrics_csv
    missing = [
        name
        for name in REQUIRED_FILES
        if not (run_dir / name).is_file() and not (name == METRICS_FILE and metrics_path.is_file())
    ]
    if missing:
        raise ConfigError(
            f"{run_dir} is not a complete run directory: missing {', '.join(missing)} (written by `mnistkit train`)"
        )
    metrics = _read_jsonl(metrics_path) if metrics_path.suffix == ".jsonl" else _read_metrics_csv(metrics_path)
    optional = {name: run_dir / name for name in OPTIONAL_FILES}
    return RunRecord(
        path=run_dir,
        config=_read_json(run.config),
        metrics=metrics,
        summary=_read_json(run.summary) if run.summary.is_file() else {},
        evaluation=_read_json(run.eval) if run.eval.is_file() else {},
        log=run.log.read_text(encoding="utf-8", errors="replace") if run.log.is_file() else None,
        plots=_plot_files(run_dir),
        missing=[name for name, p in optional.items() if not p.is_file()],
    )
