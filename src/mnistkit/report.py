"""Self-contained HTML reports for one training run, or a comparison of several.

A report is a single file: plots are inlined as base64 ``data:`` URIs, the
CSS is inline, and there is no JavaScript, so it can be mailed, archived or
opened offline on a phone. All text from run files is passed through
:func:`html.escape`, because config values and class names are user input.

>>> from mnistkit.report import write_report
>>> write_report(["runs/logreg"])                     # doctest: +SKIP
PosixPath('runs/logreg/report.html')
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnistkit.errors import ConfigError, DataFormatError
from mnistkit.plots import RUN_PLOT_NAMES  # cheap: plots imports matplotlib only inside functions
from mnistkit.runs import CONFIG_FILE, EVAL_FILE, LOG_FILE, METRICS_FILE, REPORT_FILE, SUMMARY_FILE, RunDir

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
MAX_LOG_LINES = 2000
#: Plot order in reports: the trainer's standard plots first, anything else after, by name.
PLOT_ORDER = RUN_PLOT_NAMES
PLOT_CAPTIONS = {
    "curves.png": "Loss and accuracy per epoch (train and validation)",
    "confusion.png": "Confusion matrix on the test set (rows: true class, columns: predicted)",
    "mistakes.png": "The test images the model got wrong most confidently",
    "weights.png": "Logistic-regression weights per class",
}


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


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- formatting


def _fmt(value) -> str:
    """A value for a table cell: short numbers, '-' for missing, JSON for lists and dicts."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _e(value) -> str:
    """Escape a formatted value for HTML text or attributes."""
    return html.escape(_fmt(value), quote=True)


def _cell(value) -> str:
    """One <td>; numbers are right-aligned so their digits line up."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def _table(
    headers: Sequence[str], rows: Sequence[Sequence], table_id: str | None = None, highlight: int | None = None
) -> str:
    """An HTML table in a horizontally scrolling wrapper (so wide tables fit a phone).

    Row number ``highlight`` is marked as the best one.
    """
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join(
        ('<tr class="best">' if r == highlight else "<tr>") + "".join(map(_cell, row)) + "</tr>"
        for r, row in enumerate(rows)
    )
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


def _figure_html(data: bytes, mime: str, caption: str) -> str:
    """One image inlined as a base64 ``data:`` URI (so the report needs no other file), captioned.

    Images shrink to the screen width; plots use large fonts so they stay
    readable on a phone, and the viewport allows pinch-zoom for detail.
    """
    cap = html.escape(caption)
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<figure><img src="{uri}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def _plot_html(path: Path) -> str:
    """A plot file from ``plots/`` as a figure, captioned by :data:`PLOT_CAPTIONS` or its name."""
    caption = PLOT_CAPTIONS.get(path.name, path.stem.replace("_", " "))
    return _figure_html(path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], caption)


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2125;
       max-width: 1100px; margin: 0 auto; padding: 16px; background: #fff; }
h1 { font-size: 1.5em; margin: 0.2em 0; overflow-wrap: anywhere; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #dde1e5; padding-bottom: 0.2em; }
.sub { color: #56606b; margin: 0 0 1em; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.92em; }
th, td { border: 1px solid #dde1e5; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: 600; background: #eef7ee; }
figure { margin: 1em 0; min-width: 0; }
section { margin: 0; min-width: 0; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 0 16px; }
img { max-width: min(100%, 900px); height: auto; display: block; border: 1px solid #eef0f2; }
figcaption { color: #56606b; font-size: 0.9em; }
pre { background: #f6f8fa; border: 1px solid #dde1e5; padding: 8px; overflow-x: auto;
      font-size: 12px; line-height: 1.35; max-height: 32em; }
.note { color: #8a5a00; }
@media (max-width: 600px) {
  body { padding: 8px; font-size: 14px; }
  th, td { padding: 3px 5px; }
}
"""


def _page(title: str, body: str) -> str:
    """Wrap ``body`` in a complete, responsive HTML document (viewport meta, inline CSS)."""
    from mnistkit import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="mnistkit {html.escape(__version__)}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- one run


def _best_val(run: RunRecord) -> tuple[float | None, int | None]:
    """Best validation accuracy and its epoch, or (None, None) without a validation split."""
    scored = [(r["val_accuracy"], r.get("epoch")) for r in run.metrics if r.get("val_accuracy") is not None]
    return max(scored, key=lambda t: t[0]) if scored else (None, None)


def _results_rows(run: RunRecord) -> list[tuple[str, object]]:
    """(label, value) rows of the final metrics table."""
    last, ev = run.last, run.evaluation
    best, best_epoch = _best_val(run)
    rows = [
        ("test accuracy (%)", run.test_accuracy),
        ("test loss", ev.get("loss")),
        ("test samples", ev.get("n")),
        ("epochs run", len(run.metrics)),
        ("final train loss", last.get("train_loss")),
        ("final train accuracy (%)", last.get("train_accuracy")),
        ("final val loss", last.get("val_loss")),
        ("final val accuracy (%)", last.get("val_accuracy")),
        ("best val accuracy (%)", f"{_fmt(best)} (epoch {best_epoch})" if best is not None else None),
        ("train seconds", run.summary.get("train_seconds", last.get("elapsed"))),
    ]
    for key, value in (ev.get("binary") or {}).items():
        rows.append((f"binary {key}", value))
    return rows


def _per_class_html(evaluation: dict) -> str:
    """Precision, recall, F1 and support per class, from eval.json."""
    rows = [
        (r.get("class"), r.get("precision"), r.get("recall"), r.get("f1"), r.get("support"))
        for r in evaluation.get("per_class") or []
    ]
    if not rows:
        return '<p class="note">No per-class metrics (eval.json missing or empty).</p>'
    return _table(("class", "precision %", "recall %", "F1 %", "support"), rows, "per-class")


def _epochs_html(metrics: list[dict]) -> str:
    """Every metrics.jsonl row, columns in first-seen order."""
    columns: list[str] = []
    for row in metrics:
        columns += [k for k in row if k not in columns]
    return _table(columns, [[row.get(c) for c in columns] for row in metrics], "epochs")


def _log_html(log: str | None) -> str:
    """The tutorial-style log in a scrolling <pre>, keeping only the tail of very long logs."""
    if log is None:
        return '<p class="note">No log.txt in this run.</p>'
    lines = log.splitlines()
    note = ""
    if len(lines) > MAX_LOG_LINES:
        note = f'<p class="note">Showing the last {MAX_LOG_LINES} of {len(lines)} lines.</p>'
        lines = lines[-MAX_LOG_LINES:]
    return f"{note}<pre>{html.escape(chr(10).join(lines))}</pre>"


def render_run_html(run: RunRecord) -> str:
    """The single-run report: results, per-class table, plots, epochs, config and log."""
    subtitle = " \u00b7 ".join(f"{k}: {_fmt(run.get(k))}" for k in ("dataset", "model", "epochs"))
    plots = (
        "\n".join(_plot_html(p) for p in run.plots)
        or '<p class="note">No plots in this run (plots/ is missing or empty).</p>'
    )
    missing = (
        (f'<p class="note">Not found in {html.escape(str(run.path))}: {html.escape(", ".join(run.missing))}.</p>')
        if run.missing
        else ""
    )
    config_rows = [(k, v) for k, v in run.config.items()]
    body = f"""<h1>mnistkit run: {html.escape(run.name)}</h1>
<p class="sub">{html.escape(subtitle)}</p>
{missing}
<div class="pair">
<section><h2>Results</h2>
{_table(("metric", "value"), _results_rows(run), "metrics")}</section>
<section><h2>Per class</h2>
{_per_class_html(run.evaluation)}</section>
</div>
<h2>Plots</h2>
{plots}
<h2>Metrics per epoch</h2>
{_epochs_html(run.metrics)}
<h2>Config</h2>
{_table(("option", "value"), config_rows, "config")}
<h2>Log</h2>
{_log_html(run.log)}"""
    return _page(f"mnistkit run {run.name}", body)


# --------------------------------------------------------------------------- comparison


def _unique_names(runs: list[RunRecord]) -> None:
    """Give runs distinct display names: the folder name, or parent/folder when names clash."""
    names = [r.path.name for r in runs]
    for run in runs:
        clash = names.count(run.path.name) > 1
        run.name = f"{run.path.parent.name}/{run.path.name}" if clash else run.path.name
    seen: dict[str, int] = {}
    for run in runs:  # still equal (same path twice): number them
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"


def _comparison_rows(runs: list[RunRecord]) -> tuple[list[str], list[list]]:
    """Headers and one row per run for the comparison table (options that differ get their own table)."""
    headers = [
        "run",
        "dataset",
        "model",
        "epochs",
        "test acc (%)",
        "test loss",
        "best val acc (%)",
        "final train loss",
        "final train acc (%)",
        "train seconds",
    ]
    rows = []
    for r in runs:
        rows.append(
            [
                r.name,
                r.get("dataset"),
                r.get("model"),
                len(r.metrics),
                r.test_accuracy,
                r.evaluation.get("loss"),
                _best_val(r)[0],
                r.last.get("train_loss"),
                r.last.get("train_accuracy"),
                r.summary.get("train_seconds", r.last.get("elapsed")),
            ]
        )
    return headers, rows


def _comparison_table(runs: list[RunRecord]) -> str:
    """The comparison table, with the row of the best test accuracy highlighted."""
    headers, rows = _comparison_rows(runs)
    scored = [(r.test_accuracy, i) for i, r in enumerate(runs) if r.test_accuracy is not None]
    best = max(scored)[1] if scored else None
    return _table(headers, rows, "metrics", highlight=best)


def _config_differences(runs: list[RunRecord]) -> str:
    """A table of the config options whose values differ between runs (what was varied)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.config if k not in keys]
    varied = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1]
    if not varied:
        return '<p class="note">All runs have the same config.</p>'
    rows = [[r.name] + [r.config.get(k) for k in varied] for r in runs]
    return _table(["run"] + varied, rows, "config-diff")


def _curves_pngs(runs: list[RunRecord]) -> list[tuple[str, bytes]]:
    """(panel, PNG bytes) of the overlaid loss and accuracy curves of all runs; empty without metrics."""
    import io

    from mnistkit.plots import DPI, plot_compare_curves

    series = {r.name: r.metrics for r in runs if r.metrics}
    if not series:
        return []
    images = []
    for panel in ("accuracy", "loss"):
        buffer = io.BytesIO()
        plot_compare_curves(series, panels=(panel,)).savefig(buffer, format="png", dpi=DPI, facecolor="white")
        images.append((panel, buffer.getvalue()))
    return images


def render_comparison_html(runs: list[RunRecord]) -> str:
    """The comparison report: a metrics table per run, config differences and overlaid curves."""
    _unique_names(runs)
    curves = (
        "\n".join(
            _figure_html(png, "image/png", f"{panel.capitalize()} per epoch, all runs")
            for panel, png in _curves_pngs(runs)
        )
        or '<p class="note">No run has metrics to plot.</p>'
    )
    missing = "".join(
        f'<p class="note">{html.escape(r.name)}: no {html.escape(", ".join(r.missing))}.</p>' for r in runs if r.missing
    )
    body = f"""<h1>mnistkit: comparing {len(runs)} runs</h1>
<p class="sub">{html.escape(", ".join(str(r.path) for r in runs))}</p>
{missing}
<h2>Results</h2>
{_comparison_table(runs)}
<h2>Curves</h2>
<div class="pair">
{curves}
</div>
<h2>Config differences</h2>
{_config_differences(runs)}"""
    return _page(f"mnistkit: {len(runs)} runs compared", body)


# --------------------------------------------------------------------------- entry point


def write_report(run_dirs: Sequence[Path | str], out: Path | str | None = None) -> Path:
    """Write the HTML report for one run (default ``RUN_DIR/report.html``) or a comparison
    of several (default ``./report.html``); returns the path written.
    """
    if not run_dirs:
        raise ConfigError("report needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    if len(runs) == 1:
        page = render_run_html(runs[0])
        out = Path(out) if out is not None else RunDir(runs[0].path).report
    else:
        page = render_comparison_html(runs)
        out = Path(out) if out is not None else Path.cwd() / REPORT_FILE
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name such as {out / REPORT_FILE}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
