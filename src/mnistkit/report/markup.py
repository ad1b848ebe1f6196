"""HTML building blocks of the reports: escaped cells, tables, inlined figures, the page and its CSS.

Everything from run files passes through :func:`html.escape` here, because config values and
class names are user input. ``mnistkit tune``'s report uses the same blocks.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence


def fmt(value) -> str:
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
    return html.escape(fmt(value), quote=True)


def _cell(value) -> str:
    """One <td>; numbers are right-aligned so their digits line up."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def table(
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


def figure_html(data: bytes, mime: str, caption: str) -> str:
    """One image inlined as a base64 ``data:`` URI (so the report needs no other file), captioned.

    Images shrink to the screen width; plots use large fonts so they stay
    readable on a phone, and the viewport allows pinch-zoom for detail.
    """
    cap = html.escape(caption)
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<figure><img src="{uri}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


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


def page(title: str, body: str) -> str:
    """Wrap ``body`` in a complete, responsive HTML document (viewport meta, inline CSS)."""
    from mnistkit import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="mnistkit {html.escape(__version__)}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )
