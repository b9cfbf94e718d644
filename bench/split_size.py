"""The WARC reader's ``split_bytes``: wall time on 2 cores vs parts per GB vs documents out.

One multi-member gzip WARC becomes ``ceil(size / split_bytes)`` tasks (Ray tasks, one output part
each).  Smaller splits let both cores work until the end; they also cost a part file per task and
change the output a little, because ``extract`` keeps trafilatura's dedup memory per task (a text
segment seen several times *within a task* is removed).  This script runs ``[url_filter: {},
extract: {}]`` on ``dev_web.warc.gz`` for several split sizes, each in a fresh child process
(``benchutil.measure``: waits for a quiet machine, re-measures a disturbed run), configurations
interleaved within each repeat, and reports per split size: tasks, parts, parts per GB of input,
median wall time, the per-repeat ratio to the 32 MiB split (same repeat, similar load), documents
out, and how many documents differ from the 32 MiB run (missing, extra, or different text).

Usage: ``python bench/split_size.py [--sizes 1,2,4,8,32] [--repeats 3] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import benchutil  # noqa: E402

DEV_WARC = Path("/work/shared/data/dev_web.warc.gz")
MiB = 1024 * 1024
REFERENCE_MIB = 32.0  # the previous default: ratios and output differences are against it


def child(warc: Path, split_bytes: int, out: Path, workers: int, result: Path) -> None:
    import logging

    from pipeline.config import load_pipelines
    from pipeline.executor import run_pipeline

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    config = out.parent / f"{out.name}-pipelines.yaml"
    body = {
        "input": {"format": "warc", "paths": [str(warc)], "split_bytes": split_bytes},
        "output": str(out),
        "stages": [{"url_filter": {}}, {"extract": {}}],
    }
    config.write_text(json.dumps({"pipelines": {"bench": body}}))  # JSON is valid YAML
    spec = load_pipelines(config, ["bench"])[0]
    start = time.perf_counter()
    run = run_pipeline(spec, output=out, fresh=True, num_cpus=workers)
    wall = time.perf_counter() - start
    stats = {s["name"]: s for s in run.stats}
    parts = sorted((out / "data").glob("part-*.parquet"))
    markers = sorted((out / "_work" / "phase-0" / "done").glob("*.json"))
    result.write_text(
        json.dumps(
            {
                "wall_s": round(wall, 3),
                "tasks": len(markers),
                "parts": len(parts),
                "part_bytes": sorted(p.stat().st_size for p in parts),
                "task_seconds": sorted(json.loads(m.read_text()).get("seconds", 0) for m in markers),
                "docs_in": stats["read"]["docs_out"],
                "docs_out": stats["extract"]["docs_out"],
                "extract_dropped": stats["extract"]["dropped"],
                "extract_extra": stats["extract"].get("extra", {}),
            }
        )
    )


def model(warc: Path, sizes: list[float], workers: int) -> dict[str, Any]:
    """Per split size, in this process (no Ray): every task's CPU seconds (``time.thread_time()``
    around read + url_filter + extract of its shard; a fresh ``extract`` per task, as a worker
    builds one), its documents out and texts; then the makespan on ``workers`` cores by list
    scheduling in plan order (Ray hands queued tasks to whichever worker frees up first).  CPU
    time barely depends on other work on the machine (within ~10%, see
    ``extract_cpu_time.py``), so on a shared machine this is the stable half of the comparison;
    Ray's fixed start/stop (~4 s) and per-task cost (not measurable: README section 2) are not in it."""
    import heapq
    import logging

    from stages.extract import Extract, ExtractParams
    from stages.url_filter import UrlFilter, UrlFilterParams
    from stages.warc import WarcParams, WarcSource

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    url_filter = UrlFilter(UrlFilterParams())
    url_filter.work = Path(tempfile.mkdtemp(prefix="winnow-bench-split-uf-"))
    url_filter.setup()  # once: a reused worker process pays it once, whatever the split
    result: dict[str, Any] = {}
    for size in sizes:
        source = WarcSource(WarcParams(paths=[str(warc)], split_bytes=int(size * MiB)))
        task_cpu: list[float] = []
        found: dict[str, str] = {}
        for shard in source.plan([str(warc)]):
            start = time.thread_time()
            extract = Extract(ExtractParams())
            extract.setup()
            for batch in source.read(shard):
                kept, _ = url_filter.transform(batch)
                out, _ = extract.transform(kept)
                found.update(zip(out.column("id").to_pylist(), out.column("text").to_pylist()))
            task_cpu.append(time.thread_time() - start)
        free = [0.0] * workers
        for cost in task_cpu:
            heapq.heappush(free, heapq.heappop(free) + cost)
        result[f"{size:g}"] = {
            "tasks": len(task_cpu),
            "task_cpu_s": [round(x, 2) for x in task_cpu],
            "cpu_s": round(sum(task_cpu), 1),
            "makespan_s": round(max(free), 1),
            "ideal_s": round(sum(task_cpu) / workers, 1),
            "docs_out": len(found),
            "texts": found,
        }
        print(
            f"model {size:g} MiB: {result[f'{size:g}']['makespan_s']} s makespan, {len(found)} docs",
            file=sys.stderr,
        )
    return result


def texts(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    found: dict[str, str] = {}
    for f in sorted((out / "data").glob("part-*.parquet")):
        t = pq.read_table(f, columns=["id", "text"])
        found.update(zip(t.column("id").to_pylist(), t.column("text").to_pylist()))
    return found


def diff(a: dict[str, str], b: dict[str, str]) -> dict[str, int]:
    common = a.keys() & b.keys()
    return {
        "only_here": len(b.keys() - a.keys()),
        "only_in_reference": len(a.keys() - b.keys()),
        "text_differs": sum(a[k] != b[k] for k in common),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warc", type=Path, default=DEV_WARC)
    ap.add_argument("--sizes", default="1,2,4,8,32", help="split_bytes values in MiB (the model)")
    ap.add_argument("--run-sizes", default=None, help="sizes also run on Ray, timed (default: --sizes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed Ray runs per size (0: the model only)")
    ap.add_argument("--json", type=Path, default=None)
    benchutil.add_measurement_args(ap)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # split_bytes
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.warc, args.child, Path(args.out), args.workers, Path(args.result))
        return 0
    args.warc = args.warc.resolve()
    if not args.warc.is_file():
        print(f"SKIP: {args.warc} not found; nothing to measure.")
        return 0
    sizes = sorted({float(x) for x in args.sizes.split(",")} | {REFERENCE_MIB})
    run_sizes = sorted({float(x) for x in (args.run_sizes or args.sizes).split(",")} | {REFERENCE_MIB})
    gb = args.warc.stat().st_size / 1e9
    info = benchutil.machine_info(["ray", "trafilatura", "pyarrow", "warcio"])
    info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]

    modelled = model(args.warc, sizes, args.workers)
    ref_texts = modelled[f"{REFERENCE_MIB:g}"]["texts"]
    for m in modelled.values():
        m["vs_32mib_output"] = diff(ref_texts, m.pop("texts"))

    work = Path(tempfile.mkdtemp(prefix="winnow-bench-split-"))
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH)]), "RAY_USAGE_STATS_ENABLED": "0"}
    runs: dict[float, list[dict[str, Any]]] = {x: [] for x in run_sizes}
    try:
        for rep in range(args.repeats):
            order = run_sizes if rep % 2 == 0 else run_sizes[::-1]  # alternate: no size always first
            for size in order:
                out = work / f"s{size:g}-r{rep}"
                cmd = [str(Path(__file__).resolve()), "--child", str(int(size * MiB))]
                cmd += ["--warc", str(args.warc), "--out", str(out), "--result", str(work / "result.json")]
                cmd += ["--workers", str(args.workers)]
                res = benchutil.measure(
                    cmd, work / "result.json", work / "children.log", env=env,
                    wait_quiet=args.wait_quiet, max_attempts=args.attempts,
                )  # fmt: skip
                runs[size].append(res)
                print(
                    f"[{rep + 1}/{args.repeats}] {size:g} MiB: {res['wall_s']:.1f} s, {res['tasks']} tasks, "
                    f"{res['docs_out']} docs out, other CPU {res['other_cpu_fraction']:.0%}, "
                    f"attempt {res['attempts']}",
                    file=sys.stderr,
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = benchutil.median
    ref_model = modelled[f"{REFERENCE_MIB:g}"]
    rows = []
    for size in sizes:
        m = modelled[f"{size:g}"]
        row: dict[str, Any] = {
            "split_mib": size,
            "tasks": m["tasks"],
            "tasks_per_gb": round(m["tasks"] / gb, 1),
            "model_makespan_s": m["makespan_s"],
            "model_vs_32mib": round(m["makespan_s"] / ref_model["makespan_s"], 3),
            "model_ideal_s": m["ideal_s"],
            "model_cpu_s": m["cpu_s"],
            "longest_task_cpu_s": max(m["task_cpu_s"]),
            "docs_out": m["docs_out"],
            "vs_32mib_output": m["vs_32mib_output"],
        }
        rs = runs.get(size) or []
        if rs:
            ratio = [r["wall_s"] / b["wall_s"] for r, b in zip(rs, runs[REFERENCE_MIB])]
            row.update(
                {
                    "parts": rs[0]["parts"],
                    "parts_per_gb": round(rs[0]["parts"] / gb, 1),
                    "wall_s": round(med([r["wall_s"] for r in rs]), 1),
                    "wall_s_all": [r["wall_s"] for r in rs],
                    "wall_vs_32mib": round(med(ratio), 3),
                    "wall_vs_32mib_all": [round(x, 3) for x in ratio],
                    "peak_pss_mb": round(med([r["peak_pss_mb"] for r in rs])),
                    "other_cpu_fraction_all": [r["other_cpu_fraction"] for r in rs],
                    "ray_docs_out": rs[0]["docs_out"],
                }
            )
        rows.append(row)
    lines = [
        "| split_bytes | tasks | tasks per GB | model: 2-core makespan s | model / 32 MiB | measured wall s "
        "(median) | measured / 32 MiB | docs out | docs differing from 32 MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["vs_32mib_output"]
        wall = f"{r['wall_s']:.1f} | {r['wall_vs_32mib']:.2f}" if "wall_s" in r else "- | -"
        lines.append(
            f"| {r['split_mib']:g} MiB | {r['tasks']} | {r['tasks_per_gb']:g} | {r['model_makespan_s']:.1f} "
            f"| {r['model_vs_32mib']:.2f} | {wall} | {r['docs_out']} "
            f"| {d['only_here'] + d['only_in_reference'] + d['text_differs']} |"
        )
    print("\n".join(lines))
    if args.json:
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        summary = {"machine": info, "warc": str(args.warc), "workers": args.workers, "rows": rows}
        model_tasks = {k: v["task_cpu_s"] for k, v in modelled.items()}
        runs_json = {f"{k:g}": v for k, v in runs.items()}
        benchutil.write_json(args.json, {**summary, "model_task_cpu_s": model_tasks, "runs": runs_json})
    return 0


if __name__ == "__main__":
    sys.exit(main())
