"""The page shell and the small HTML helpers both halves of ``winnow report`` use.

Everything interpolated from a run goes through ``e`` (``html.escape``, quotes included, so it is
also safe inside attribute values).  The Content-Security-Policy forbids every script and every
fetch: even a markup bug could not make a document's text run or load anything.
"""

from __future__ import annotations

import html
from typing import Any

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:76em;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;vertical-align:top}}
td.n,th.n{{text-align:right;font-variant-numeric:tabular-nums}}
pre{{white-space:pre-wrap;word-break:break-word;max-width:100%;margin:.2em 0;font-size:90%}}
.status{{padding:.6em 1em;border-radius:4px;font-weight:bold}}
.incomplete{{background:#fde2c8;border:1px solid #e08a2c}}
.complete{{background:#d8f0d8;border:1px solid #5a5}}
details{{margin:.3em 0}} summary{{cursor:pointer}}
del{{background:#fcc;text-decoration:line-through}} ins{{background:#cfc;text-decoration:none}}
.note{{color:#555;font-size:90%}} svg{{max-width:100%;height:auto}}
section{{border-top:2px solid #ddd;margin-top:1.5em}}
.scroll{{overflow-x:auto}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(30em,1fr));gap:.5em}}
</style></head>
<body>
{body}
</body></html>
"""

e = html.escape


def fmt_int(n: Any) -> str:
    """A count as shown: an integer with thousands separators."""
    return f"{int(n):,}"


def num_cell(n: int, key: str, stage: str | None = None) -> str:
    """A table cell with the count shown and, for tests and scripts, ``data-key``/``data-value``."""
    attr = f' data-stage="{e(stage)}"' if stage is not None else ""
    return f'<td class="n" data-key="{e(key)}"{attr} data-value="{int(n)}">{fmt_int(n)}</td>'


def num_span(n: int, key: str) -> str:
    return f'<span data-key="{e(key)}" data-value="{int(n)}">{fmt_int(n)}</span>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{e(title)}</h2>\n{body}\n</section>'
