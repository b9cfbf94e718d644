"""Reading ``stats.json`` back: the ``winnow stats`` table and the ``winnow report`` HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.rundir import RunDir, read_json


def load_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    path = RunDir(run_dir).stats_file
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished winnow run directory?")
    return read_json(path)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def _top_reasons(dropped: dict[str, int], k: int = 3) -> str:
    items = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{r} {n:,}" for r, n in items[:k])
    return shown + (f", +{len(items) - k} more" if len(items) > k else "")


def stats_rows(stats: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in stats:
        kept = 100.0 * s["docs_out"] / s["docs_in"] if s["docs_in"] else 100.0
        rate = f"{s['docs_in'] / s['seconds']:,.0f}" if s["seconds"] > 0 else "-"
        rows.append(
            [
                s["name"],
                f"{s['docs_in']:,}",
                f"{s['docs_out']:,}",
                f"{kept:.1f}",
                _top_reasons(s["dropped"]) or "-",
                _mb(s["bytes_in"]),
                _mb(s["bytes_out"]),
                f"{s['seconds']:,.1f}",
                rate,
            ]
        )
    return rows


HEADERS = [
    "stage",
    "docs in",
    "docs out",
    "% kept",
    "top drop reasons",
    "MB in",
    "MB out",
    "time s",
    "docs/s",
]


def print_stats(stats: list[dict[str, Any]], console: Console | None = None) -> None:
    """The per-stage table; time is summed task time (CPU-seconds of the stage, all workers)."""
    table = Table(title="winnow stats (time: summed over tasks)")
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i in (0, 4) else "right", overflow="fold")
    for row in stats_rows(stats):
        table.add_row(*row)
    # rich falls back to 80 columns when stdout is not a terminal, which folds every cell
    (console or Console(width=max(Console().width, 130))).print(table)


def write_report(run_dir: str | Path, out: str | Path) -> Path:
    """A self-contained HTML page: the stats table, stage extras and samples of dropped rows."""
    import pyarrow.parquet as pq

    rd = RunDir(run_dir)
    stats = load_stats(rd.root)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>winnow report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
        "pre{white-space:pre-wrap;max-width:80em}"
        "</style>",
        f"<h1>winnow run {html.escape(str(rd.root))}</h1><table><tr>",
        "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS) + "</tr>",
    ]
    for row in stats_rows(stats):
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    for s in stats:
        parts.append(f"<h2>{html.escape(s['name'])}</h2>")
        if s["dropped"]:
            parts.append("<p>dropped: " + html.escape(json.dumps(s["dropped"])) + "</p>")
        if s.get("extra"):
            parts.append("<pre>" + html.escape(json.dumps(s["extra"], indent=1)) + "</pre>")
        removed = sorted((rd.root / "removed" / s["name"]).glob("part-*.parquet"))
        if removed:
            rows = pq.read_table(removed[0]).slice(0, 20).to_pylist()
            parts.append("<table><tr><th>reason</th><th>id</th><th>url</th><th>text</th></tr>")
            for r in rows:
                text = (r.get("text") or "")[:500]
                parts.append(
                    "<tr>"
                    + "".join(f"<td>{html.escape(str(r.get(c) or ''))}</td>" for c in ("reason", "id", "url"))
                    + f"<td><pre>{html.escape(text)}</pre></td></tr>"
                )
            parts.append("</table>")
    out = Path(out)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
