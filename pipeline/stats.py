"""The ``winnow stats`` table.  Reading a run directory (finished or not) is
``pipeline.report_data.load_run``, shared with ``winnow report`` (``pipeline.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.report_data import load_run


def load_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per-stage stats of a run: stats.json, or the finished tasks' markers of an unfinished run."""
    return load_run(run_dir).stats


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


def print_stats(
    stats: list[dict[str, Any]], console: Console | None = None, title: str | None = None
) -> None:
    """The per-stage table; time is summed task time (CPU-seconds of the stage, all workers)."""
    table = Table(title=title or "winnow stats (time: summed over tasks)")
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i in (0, 4) else "right", overflow="fold")
    for row in stats_rows(stats):
        table.add_row(*row)
    # rich falls back to 80 columns when stdout is not a terminal, which folds every cell
    (console or Console(width=max(Console().width, 130))).print(table)
