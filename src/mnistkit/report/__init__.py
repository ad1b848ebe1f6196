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

from collections.abc import Sequence
from pathlib import Path

from mnistkit.errors import ConfigError
from mnistkit.fileio import atomic_write_bytes
from mnistkit.report.pages import render_comparison_html, render_run_html
from mnistkit.report.records import RunRecord, load_run
from mnistkit.runs import REPORT_FILE, RunDir

__all__ = ["RunRecord", "load_run", "render_comparison_html", "render_run_html", "write_report"]


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
    return atomic_write_bytes(out, page.encode("utf-8"))  # a link planted at ``out`` is replaced, not followed
