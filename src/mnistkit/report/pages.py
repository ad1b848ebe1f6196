"""The two report pages: one run (results, per-class table, plots, epochs, config, log) and a
comparison of several runs (metrics table, overlaid curves, what was varied)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from mnistkit.report.markup import figure_html, fmt, page, table
from mnistkit.report.records import IMAGE_TYPES, RunRecord

#: Longer logs keep only their last lines, and longer lines their start, so a report stays small.
MAX_LOG_LINES = 2000
MAX_LOG_LINE_CHARS = 1000
PLOT_CAPTIONS = {
    "curves.png": "Loss and accuracy per epoch (training)",
    "confusion.png": "Confusion matrix on the test set (rows: true class, columns: predicted)",
    "mistakes.png": "The test images the model got wrong most confidently",
    "weights.png": "Logistic-regression weights per class",
}


def _plot_html(path: Path, data: bytes, validated: bool = False) -> str:
    """A plot file from ``plots/`` as a figure, captioned by :data:`PLOT_CAPTIONS` or its name;
    the curves' caption names validation only when the run had a validation split."""
    caption = PLOT_CAPTIONS.get(path.name, path.stem.replace("_", " "))
    if path.name == "curves.png" and validated:
        caption = "Loss and accuracy per epoch (training and validation)"
    return figure_html(data, IMAGE_TYPES[path.suffix.lower()], caption)


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
        ("best val accuracy (%)", f"{fmt(best)} (epoch {best_epoch})" if best is not None else None),
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
    return table(("class", "precision %", "recall %", "F1 %", "support"), rows, "per-class")


def _epochs_html(metrics: list[dict]) -> str:
    """Every metrics.jsonl row, columns in first-seen order."""
    columns: list[str] = []
    for row in metrics:
        columns += [k for k in row if k not in columns]
    return table(columns, [[row.get(c) for c in columns] for row in metrics], "epochs")


def _log_html(log: str | None, cut: bool = False) -> str:
    """The tutorial-style log in a scrolling <pre>, keeping only the tail of very long logs
    (``cut``: only the end of log.txt was read) and the start of very long lines."""
    if log is None:
        return '<p class="note">No log.txt in this run.</p>'
    lines = log.splitlines()
    note = '<p class="note">Showing the end of a long log.</p>' if cut else ""
    if len(lines) > MAX_LOG_LINES:
        total = "many" if cut else str(len(lines))
        note = f'<p class="note">Showing the last {MAX_LOG_LINES} of {total} lines.</p>'
        lines = lines[-MAX_LOG_LINES:]
    lines = [_clip(line) for line in lines]
    return f"{note}<pre>{html.escape(chr(10).join(lines))}</pre>"


def _clip(line: str) -> str:
    if len(line) <= MAX_LOG_LINE_CHARS:
        return line
    return f"{line[:MAX_LOG_LINE_CHARS]} [... {len(line) - MAX_LOG_LINE_CHARS:,} more characters]"


def render_run_html(run: RunRecord) -> str:
    """The single-run report: results, per-class table, plots, epochs, config and log."""
    subtitle = " \u00b7 ".join(f"{k}: {fmt(run.get(k))}" for k in ("dataset", "model", "epochs"))
    plots = (
        "\n".join(_plot_html(p, run.plot_bytes[p], validated=_best_val(run)[0] is not None) for p in run.plots)
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
{table(("metric", "value"), _results_rows(run), "metrics")}</section>
<section><h2>Per class</h2>
{_per_class_html(run.evaluation)}</section>
</div>
<h2>Plots</h2>
{plots}
<h2>Metrics per epoch</h2>
{_epochs_html(run.metrics)}
<h2>Config</h2>
{table(("option", "value"), config_rows, "config")}
<h2>Log</h2>
{_log_html(run.log, run.log_cut)}"""
    return page(f"mnistkit run {run.name}", body)


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


def _comparisontable(runs: list[RunRecord]) -> str:
    """The comparison table, with the row of the best test accuracy highlighted."""
    headers, rows = _comparison_rows(runs)
    scored = [(r.test_accuracy, i) for i, r in enumerate(runs) if r.test_accuracy is not None]
    best = max(scored)[1] if scored else None
    return table(headers, rows, "metrics", highlight=best)


def _config_differences(runs: list[RunRecord]) -> str:
    """A table of the config options whose values differ between runs (what was varied)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.config if k not in keys]
    varied = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1]
    if not varied:
        return '<p class="note">All runs have the same config.</p>'
    rows = [[r.name] + [r.config.get(k) for k in varied] for r in runs]
    return table(["run"] + varied, rows, "config-diff")


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
            figure_html(png, "image/png", f"{panel.capitalize()} per epoch, all runs")
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
{_comparisontable(runs)}
<h2>Curves</h2>
<div class="pair">
{curves}
</div>
<h2>Config differences</h2>
{_config_differences(runs)}"""
    return page(f"mnistkit: {len(runs)} runs compared", body)
