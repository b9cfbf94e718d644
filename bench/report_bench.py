"""`winnow report` robustness and cost: generation time and file size on the shapes that break reports.

Cases (built synthetically under a temp dir, except the demo run when ``runs/demo`` exists):
* ``interrupted``: a run killed after 700 of 1,000 tasks of phase 0 (markers only: no stats.json,
  no manifest), with the data parts and removed samples those tasks wrote;
* ``zero_docs``: a finished run whose last filter dropped everything (no data/ parts);
* ``parts_1000``: a finished run with 1,000 data parts (50 documents each) and 1,000 removed
  parts for each of three stages;
* ``training_100k``: a training directory with 100,000 metric rows (train rows with loss, lr,
  tokens/s, grad norm; a validation row every 100 steps) and one checkpoint config;
* ``demo``: runs/demo as ``make demo`` leaves it.

``--plotly-js FILE`` (plotly.min.js, e.g. from the ``plotly`` wheel's ``package_data``) also
builds the demo report's charts (same data, same chart kinds) as a page with plotly.js inlined,
and loads both pages in headless Chromium: the chart-library comparison (size, render time).

Each case runs ``winnow report`` in a fresh process (``python -m pipeline.cli``: the import of
matplotlib and pyarrow is part of what a user waits for), ``--repeat`` times; the median wall time
and the file size are printed and written to ``bench/results/report_bench.json``.

    .venv/bin/python bench/report_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    ("read", {"not_html": 2}),
    ("language", {"language_not_kept": 10, "low_score": 3}),
    ("gopher_quality", {"short_doc": 4, "below_alpha_threshold": 3}),
    ("c4_quality", {"curly_bracket": 1}),
]
REMOVED_STAGES = ["language", "gopher_quality", "c4_quality"]


def task_stats(docs: int) -> list[dict]:
    """One task's stats: ``docs`` documents read, each stage dropping its reasons' counts."""
    out, n = [], docs
    for name, dropped in STAGES:
        drop = sum(dropped.values())
        out.append(
            {
                "name": name,
                "docs_in": n,
                "docs_out": n - drop,
                "dropped": dropped,
                "bytes_in": n * 4000,
                "bytes_out": (n - drop) * 4000,
                "seconds": 0.5,
                "extra": {"docs_by_language": {"en": n - 10, "de": 10}} if name == "language" else {},
            }
        )
        n -= drop
    return out


def merged(tasks: int, docs: int) -> list[dict]:
    stats = task_stats(docs)
    for s in stats:
        for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
            s[key] *= tasks
        s["dropped"] = {r: n * tasks for r, n in s["dropped"].items()}
        s["seconds"] *= tasks
        if s["extra"]:
            s["extra"] = {
                "docs_by_language": {k: v * tasks for k, v in s["extra"]["docs_by_language"].items()}
            }
    return stats


def write_parts(root: Path, tasks: int, done: int, kept: int) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 80
    for i in range(done):
        if kept:
            rows = [
                {"id": f"{i}-{j}", "url": f"https://site{(i * 7 + j) % 300}.example.com/{j}", "text": text}
                for j in range(kept)
            ]
            part = root / "data" / f"part-{i:05d}.parquet"
            part.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), part)
        for stage in REMOVED_STAGES:
            dropped = dict(STAGES)[stage]
            rows = [
                {
                    "id": f"{stage}-{i}-{r}-{k}",
                    "url": f"https://drop{i % 50}.example.org/",
                    "reason": r,
                    "text_chars": len(text),
                    "text": text,
                }
                for r, n in dropped.items()
                for k in range(n)
            ]
            part = root / "removed" / stage / f"part-{i:05d}.parquet"
            part.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), part)


def make_pipeline_run(root: Path, tasks: int, done: int, finished: bool, kept_per_task: int) -> Path:
    docs = kept_per_task + sum(sum(d.values()) for _, d in STAGES)
    write_parts(root, tasks, done, kept_per_task)
    markers = root / "_work" / "phase-0" / "done"
    markers.mkdir(parents=True, exist_ok=True)
    (root / "_work" / "plan.json").write_text(
        json.dumps(
            {
                "pipeline": "bench",
                "config_hash": "0123456789abcdef",
                "shards": [{"i": i} for i in range(tasks)],
            }
        )
    )
    for i in range(done):
        (markers / f"part-{i:05d}.json").write_text(
            json.dumps({"index": i, "rows": kept_per_task, "stats": task_stats(docs)})
        )
    if finished:
        (root / "stats.json").write_text(json.dumps(merged(done, docs)))
        (root / "manifest.json").write_text(
            json.dumps(
                {
                    "pipeline": "bench",
                    "config_hash": "0123456789abcdef",
                    "config": {"stages": [s for s, _ in STAGES]},
                    "inputs": [{"path": f"in-{i}.warc.gz", "bytes": 10**8} for i in range(tasks)],
                    "outputs": {"data": []},
                    "counts": {},
                    "finished": "2026-12-06T00:00:00Z",
                }
            )
        )
    return root


def make_training(root: Path, rows: int) -> Path:
    root.mkdir(parents=True)
    with (root / "metrics.jsonl").open("w") as f:
        for step in range(1, rows + 1):
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "tokens": step * 4096,
                        "train_loss": 9 / (1 + step / 1e4),
                        "lr": 3e-4,
                        "grad_norm": 1.0,
                        "tokens_per_s": 5000 + step % 97,
                        "elapsed_s": step * 0.8,
                    }
                )
                + "\n"
            )
            if step % 100 == 0:
                f.write(
                    json.dumps({"step": step, "tokens": step * 4096, "val_loss": 9.2 / (1 + step / 1e4)})
                    + "\n"
                )
    ck = root / "checkpoints" / f"step-{rows:08d}"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(
        json.dumps(
            {
                "kind": "pretrain",
                "step": rows,
                "tokens": rows * 4096,
                "train": {"max_steps": rows},
                "model": {"n_layer": 4, "n_embd": 256},
                "data": {"manifests": []},
            }
        )
    )
    (root / "checkpoints" / "latest").write_text(ck.name + "\n")
    return root


def time_report(run: Path, out: Path, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "report", str(run), "-o", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise SystemExit(f"report of {run} failed: {res.stderr}")
    page = out.read_text()
    return {
        "seconds_median": round(statistics.median(times), 2),
        "seconds": [round(t, 2) for t in times],
        "bytes": out.stat().st_size,
        "incomplete": 'data-complete="false"' in page,
    }


def plotly_page(run: Path, plotly_js: Path) -> str:
    """The demo report's charts as plotly.js figures, the library inlined: what the alternative to
    matplotlib SVG would weigh.  Data goes into a script, so ``<`` is escaped as ``\\u003c``."""
    from pipeline import report_data as rdata

    data = rdata.load_run(run)
    stats = data.stats
    labels = ["input"] + [s["name"] for s in stats]
    figs = [
        {
            "type": "bar",
            "orientation": "h",
            "y": labels,
            "x": [stats[0]["docs_in"]] + [s["docs_out"] for s in stats],
        },
        {
            "type": "bar",
            "orientation": "h",
            "y": labels,
            "x": [stats[0]["bytes_in"]] + [s["bytes_out"] for s in stats],
        },
    ]
    langs = next(s["extra"]["docs_by_language"] for s in stats if s["extra"].get("docs_by_language"))
    figs.append({"type": "bar", "orientation": "h", "y": list(langs), "x": list(langs.values())})
    kept = rdata.kept_documents(run, [])
    figs.append({"type": "histogram", "x": kept.lengths})
    hosts, tlds = rdata.domain_counts(kept.urls)
    for counts in (hosts, tlds, hosts, tlds, {"2": 1}):
        top = counts.most_common(15) if hasattr(counts, "most_common") else list(counts.items())
        figs.append({"type": "bar", "orientation": "h", "y": [k for k, _ in top], "x": [v for _, v in top]})
    payload = json.dumps(figs).replace("<", "\\u003c")
    divs = "".join(
        f"<div id='c{i}' class='chart' style='width:640px;height:320px'></div>" for i in range(len(figs))
    )
    script = (
        f"const figs = {payload};"
        "figs.forEach((f, i) => Plotly.newPlot('c' + i, [f], {margin: {l: 120}}, {staticPlot: true}));"
        "window.__rendered = true;"
    )
    return (
        f"<!doctype html><meta charset='utf-8'><body>{divs}<script>{plotly_js.read_text()}</script>"
        f"<script>{script}</script></body>"
    )


def render_times(pages: dict[str, Path], repeat: int) -> dict[str, float]:
    """Median ms from navigation to load (plus, for plotly, until every chart is drawn)."""
    import shutil as _shutil

    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_shutil.which("chromium"), headless=True, args=args)
        for name, path in pages.items():
            times = []
            for _ in range(repeat):
                page = browser.new_page()
                t0 = time.perf_counter()
                page.goto(path.as_uri())
                page.wait_for_load_state("load")
                if "plotly" in name:
                    page.wait_for_function("window.__rendered === true")
                times.append((time.perf_counter() - t0) * 1000)
                page.close()
            out[name] = round(statistics.median(times))
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "report_bench.json"))
    ap.add_argument(
        "--plotly-js", type=Path, default=None, help="plotly.min.js: compare with plotly.js charts"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="report_bench-"))
    try:
        cases = {
            "interrupted": make_pipeline_run(tmp / "interrupted", 1000, 700, False, 20),
            "zero_docs": make_pipeline_run(tmp / "zero", 20, 20, True, 0),
            "parts_1000": make_pipeline_run(tmp / "parts", 1000, 1000, True, 50),
            "training_100k": make_training(tmp / "train", 100_000),
        }
        if (REPO / "runs" / "demo" / "stats.json").exists():
            cases["demo"] = REPO / "runs" / "demo"
        results = {}
        for name, run in cases.items():
            results[name] = time_report(run, tmp / f"{name}.html", args.repeat)
            r = results[name]
            print(
                f"{name:14s} {r['seconds_median']:6.2f} s  {r['bytes'] / 1e3:8.1f} kB"
                f"  incomplete={r['incomplete']}",
                flush=True,
            )
        comparison = None
        demo = REPO / "runs" / "demo"
        if args.plotly_js and "demo" in cases:
            plotly = tmp / "demo_plotly.html"
            plotly.write_text(plotly_page(demo, args.plotly_js))
            ms = render_times({"matplotlib_svg": tmp / "demo.html", "plotly_js": plotly}, max(args.repeat, 5))
            comparison = {
                "matplotlib_svg": {
                    "bytes": (tmp / "demo.html").stat().st_size,
                    "render_ms": ms["matplotlib_svg"],
                },
                "plotly_js": {"bytes": plotly.stat().st_size, "render_ms": ms["plotly_js"]},
            }
            print(f"chart libraries on the demo report: {comparison}", flush=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "repeat": args.repeat,
                    "results": results,
                    "charts": comparison,
                },
                indent=1,
            )
            + "\n"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
