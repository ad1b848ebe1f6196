"""``mnistkit data``: list, fetch and inspect datasets (a thin layer over :mod:`mnistkit.data`).

Errors are :class:`mnistkit.errors.MnistkitError` subclasses raised by the
library; :func:`mnistkit.cli.main` prints them as one line and exits 2.
"""

from __future__ import annotations

import click

from mnistkit.cli.options import print_json

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Folder searched first and downloaded into (default: $MNISTKIT_DATA, ./data, then the user cache dir).",
)


@click.group()
def data():
    """List, download and inspect datasets."""


@data.command("list")
@_DATA_DIR
def list_cmd(data_dir):
    """Show every registered dataset: classes, sizes, description, and where it is on disk."""
    from mnistkit.data import get_dataset_spec, list_datasets, locate_dataset

    rows = []
    for name in list_datasets():
        spec = get_dataset_spec(name)
        sizes = f"{spec.sizes[0]}/{spec.sizes[1]}" if spec.sizes else "?"
        where = locate_dataset(spec, data_dir)
        rows.append((name, str(len(spec.class_names)), sizes, spec.description, str(where) if where else "no"))
    header = ("name", "classes", "train/test", "description", "found")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        click.echo(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}")


@data.command("fetch")
@click.argument("name")
@_DATA_DIR
def fetch_cmd(name, data_dir):
    """Download NAME (if missing), verify its md5 sums and say where the files are."""
    from mnistkit.data import fetch_dataset

    where = fetch_dataset(name, data_dir=data_dir, progress=True)
    click.echo(f"{name}: files are in {where}")


@data.command("info")
@click.argument("name")
@_DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
def info_cmd(name, data_dir, as_json):
    """Show what is known about NAME and where its files are (or where they were searched for)."""
    from mnistkit.data import dataset_info

    info = dataset_info(name, data_dir=data_dir)
    if as_json:
        print_json(info, indent=2)
        return
    click.echo(f"name:        {info['name']}  ({info['description']})")
    click.echo(f"classes:     {', '.join(info['classes'])}")
    if info["sizes"]:
        click.echo(f"sizes:       {info['sizes']['train']} train / {info['sizes']['test']} test")
    click.echo(f"norm:        mean {info['norm']['mean']}, std {info['norm']['std']}")
    if info["found"]:
        click.echo(f"found in:    {info['location']}")
    else:
        click.echo(f"not found; searched: {', '.join(info['searched'])}")
        click.echo(f"fetch it:    mnistkit data fetch {info['name']}")
    for file_name, status in info["files"].items():
        click.echo(f"  {file_name}: md5 {status['md5']}")
