"""``mnistkit report``: one self-contained HTML page for a run, or a comparison of runs."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="HTML file to write (default: RUN_DIR/report.html for one run, ./report.html for several).",
)
def report(run_dirs, out):
    """Write an HTML report for RUN_DIR, or compare several run directories.

    The page is self-contained (plots inlined, no JavaScript) and readable on a phone.
    """
    from mnistkit.report import write_report

    path = write_report(list(run_dirs), out)
    kind = "report" if len(run_dirs) == 1 else f"comparison of {len(run_dirs)} runs"
    click.echo(f"wrote {kind}: {path}")
