"""Charts of the report: matplotlib figures rendered to inline SVG.

matplotlib is imported here only (lazily, by ``pipeline.report``), so ``winnow validate`` and
``winnow stats`` never pay its import.  Text is drawn as paths (``svg.fonttype: path``): the page
needs no font and fetches nothing.  ``svg.hashsalt`` fixes the ids so that the same run gives the
same file.  Callers bound the points they pass (``downsample``), which bounds each SVG's size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

_STYLE = {
    "svg.fonttype": "path",
    "svg.hashsalt": "winnow-report",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    # drop the XML prolog and DOCTYPE: the SVG is inlined into an HTML page
    return text[text.index("<svg") :]


def barh(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str = "") -> str:
    """Horizontal bars, first label on top."""
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.22 * max(len(labels), 1)))
        ys = list(range(len(labels)))
        ax.barh(ys, values, color="#4c78a8")
        ax.set_yticks(ys, [str(label) for label in labels])
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for y, v in zip(ys, values):
            ax.annotate(f"{v:,.0f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center")
        return _svg(fig)


def funnel(
    stages: Sequence[str], series: dict[str, Sequence[float]], title: str, log: Sequence[str] = ()
) -> str:
    """One panel per series (documents, bytes, ...): its value after each stage; series named in
    ``log`` on a log axis (bytes fall from HTML to text by ~15x, which a linear axis flattens)."""
    plt = _plt()
    with plt.rc_context(_STYLE):
        n = len(series)
        fig, axes = plt.subplots(
            1, n, figsize=(3.6 * n, 0.8 + 0.24 * len(stages)), sharey=True, squeeze=False
        )
        ys = list(range(len(stages)))
        for ax, (name, values) in zip(axes[0], series.items()):
            ax.barh(ys, values, color="#54a24b")
            ax.set_title(name)
            ax.set_yticks(ys, list(stages))
            if name in log and min(values, default=0) > 0:
                ax.set_xscale("log")
            else:
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 5))
        axes[0][0].invert_yaxis()
        fig.suptitle(title)
        return _svg(fig)


def histogram(values: Sequence[float], title: str, xlabel: str, log: bool = False, bins: int = 40) -> str:
    plt = _plt()
    import numpy as np

    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 2.6))
        data = np.asarray(values, dtype=float)
        if log:
            data = data[data > 0]
            edges = (
                np.logspace(np.log10(max(data.min(), 1)), np.log10(max(data.max(), 2)), bins)
                if len(data)
                else bins
            )
            ax.set_xscale("log")
            ax.hist(data, bins=edges, color="#4c78a8")
        else:
            ax.hist(data, bins=bins, color="#4c78a8")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("documents")
        return _svg(fig)


def log2_histogram(buckets: dict[int, int], title: str, xlabel: str) -> str:
    """Counts already binned in power-of-two buckets (lower bound -> count, 0 = empty), as the
    stats record them: bars from each bound to the next on a log axis, like ``histogram(log=True)``."""
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 2.6))
        los = sorted(k for k in buckets if k > 0)
        ax.bar(los, [buckets[k] for k in los], width=los, align="edge", color="#4c78a8")
        ax.set_xscale("log", base=2)
        ax.set_title(title)
        empty = buckets.get(0, 0)
        ax.set_xlabel(xlabel + (f" ({empty:,} empty documents not shown)" if empty else ""))
        ax.set_ylabel("documents")
        return _svg(fig)


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points: bucket means, first and last points kept.  100k training
    rows would otherwise make a multi-MB SVG and hide the trend under noise."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    import numpy as np

    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    buckets = np.array_split(np.arange(1, n - 1), max_points - 2)
    out_x = [x[0]] + [float(x[b].mean()) for b in buckets if len(b)] + [x[-1]]
    out_y = [y[0]] + [float(y[b].mean()) for b in buckets if len(b)] + [y[-1]]
    return out_x, out_y


def lines(
    series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, log: bool = False
) -> str:
    """One axes, one line per series (already downsampled)."""
    plt = _plt()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, label=name, linewidth=1.2, marker="o" if len(xs) < 30 else None, markersize=3)
        if log:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if len(series) > 1:
            ax.legend()
        return _svg(fig)
