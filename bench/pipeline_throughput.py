"""End-to-end throughput: WARC -> url_filter -> extract, winnow against datatrove 0.10.1.

Input: ``dev_web.warc.gz`` (2,400 records, 2,371 HTML pages, 44.6 MB).  Configurations:

* ``winnow-trafilatura`` / ``winnow-resiliparse``: ``stages: [url_filter: {}, extract: {...}]`` on
  the WARC with winnow's defaults, run by ``run_pipeline(spec, output, fresh=True,
  num_cpus=WORKERS)`` on a private local Ray (started and stopped inside the timed section, as in
  ``winnow run``; ``benchutil.time_winnow_ray`` reports the start and stop apart).  With the
  default ``split_bytes`` of the results in bench/README.md section 1 (32 MiB) the 44.6 MB file
  became 2 tasks of 32 and 12.5 MiB; the default is now 4 MiB (section 11), so these configs
  now run what ``...-4MiB`` does.
* ``...-balanced``: the same with ``split_bytes = ceil(size / WORKERS)``: WORKERS equal byte
  ranges, exactly the partition datatrove gets below.
* ``datatrove-trafilatura``: ``WarcReader -> URLFilter -> Trafilatura(favour_precision=True,
  timeout=5.0) -> ParquetWriter`` on ``LocalPipelineExecutor(tasks=WORKERS, workers=WORKERS)``
  (see ``datatrove_pipeline.py`` for the two benchmark-only adjustments).  datatrove parallelises
  over *files* only, so it gets the WARC cut at record boundaries into WORKERS files (file i holds
  the records that start in byte range i, as winnow's shards).
* ``datatrove-trafilatura-1file``: datatrove on the single WARC, as a user would first run it:
  one task reads everything, the other tasks idle.
* ``...-4MiB`` (winnow, ``split_bytes`` 4 MiB: 11 tasks) and ``datatrove-trafilatura-4x`` (the WARC
  cut into 4 x WORKERS files, tasks = files): more, smaller tasks so that both can balance load.

Usage: ``python bench/pipeline_throughput.py [--workers 2] [--repeats 3] [--configs a,b]
[--json OUT]``; ``--profile-task CONFIG`` instead times each stage's cold and warm ``setup()`` and
cProfiles ``run_task`` on the first shard, in-process.  Needs datatrove's optional imports:
pyahocorasick, fasteners (URLFilter), faust-cchardet, python-magic (WarcReader).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:  # `python bench/pipeline_throughput.py` from anywhere
        sys.path.insert(0, p)

import benchutil  # noqa: E402
import extraction_quality as eq  # noqa: E402

DEV_WARC = Path("/work/shared/data/dev_web.warc.gz")
GOLD = Path("/work/shared/data/extraction_gold_dev.jsonl.gz")

LAYOUTS = ("default", "small")  # winnow layouts --profile-task can reproduce on its own
SMALL_SHARD = 4 * 1024 * 1024  # split_bytes of the "-4MiB" configs: 11 tasks on the dev WARC
TASKS_PER_WORKER = 4  # datatrove "-Nfiles": files = tasks = 4 x workers, for load balance

# name -> (system, extract engine, input layout)
CONFIGS: dict[str, tuple[str, str, str]] = {
    "winnow-trafilatura": ("winnow", "trafilatura", "default"),
    "winnow-trafilatura-balanced": ("winnow", "trafilatura", "balanced"),
    "winnow-trafilatura-4MiB": ("winnow", "trafilatura", "small"),
    "winnow-resiliparse": ("winnow", "resiliparse", "default"),
    "winnow-resiliparse-balanced": ("winnow", "resiliparse", "balanced"),
    "winnow-resiliparse-4MiB": ("winnow", "resiliparse", "small"),
    "datatrove-trafilatura": ("datatrove", "trafilatura", "split"),
    "datatrove-trafilatura-1file": ("datatrove", "trafilatura", "onefile"),
    "datatrove-trafilatura-4x": ("datatrove", "trafilatura", "split4x"),
}
# (numerator, denominator) of the docs/s ratios reported; the goals are >= 1.0 and >= 8.
RATIOS = [
    ("winnow-trafilatura", "datatrove-trafilatura", 1.0),
    ("winnow-trafilatura-balanced", "datatrove-trafilatura", 1.0),
    ("winnow-trafilatura-4MiB", "datatrove-trafilatura", 1.0),
    ("winnow-trafilatura-4MiB", "datatrove-trafilatura-4x", 1.0),
    ("winnow-trafilatura", "datatrove-trafilatura-1file", 1.0),
    ("winnow-resiliparse", "datatrove-trafilatura", 8.0),
    ("winnow-resiliparse-balanced", "datatrove-trafilatura", 8.0),
    ("winnow-resiliparse-4MiB", "datatrove-trafilatura", 8.0),
]
PACKAGES = ["ray", "trafilatura", "resiliparse", "datatrove", "pyarrow", "warcio", "tldextract", "psutil"]


# --- input preparation ---------------------------------------------------------------------------


def record_offsets(path: Path) -> list[int]:
    """Byte offset of every WARC record (= gzip member: the file has one member per record)."""
    from warcio.archiveiterator import ArchiveIterator

    offsets = []
    with open(path, "rb") as f:
        it = ArchiveIterator(f)
        for _ in it:
            offsets.append(it.get_record_offset())
    return offsets


def split_warc(src: Path, dst: Path, n: int) -> tuple[list[Path], int]:
    """Cut ``src`` into ``n`` files at record boundaries; file i holds the records starting in byte
    range i of ``ceil(size / n)`` bytes, the same partition as winnow's ``split_bytes`` shards.
    Returns the files and that ``split_bytes``."""
    size = src.stat().st_size
    split_bytes = math.ceil(size / n)
    offsets = record_offsets(src)
    starts = []
    for i in range(n):
        owned = [o for o in offsets if i * split_bytes <= o < (i + 1) * split_bytes]
        if owned:
            starts.append(owned[0])
    ends = [*starts[1:], size]
    dst.mkdir(parents=True, exist_ok=True)
    files = []
    with open(src, "rb") as f:
        for i, (a, b) in enumerate(zip(starts, ends)):
            f.seek(a)
            out = dst / f"part-{i:03d}.warc.gz"
            out.write_bytes(f.read(b - a))
            files.append(out)
    return files, split_bytes


# --- child: one measurement -----------------------------------------------------------------------


def winnow_spec(engine: str, warc: Path, split_bytes: int | None, out: Path) -> Any:
    """The benchmark pipeline as a validated spec, through a pipelines.yaml like a user's."""
    from pipeline.config import load_pipelines

    extract = {"extract": {"engine": engine}} if engine != "trafilatura" else {"extract": {}}
    input_section: dict[str, Any] = {"format": "warc", "paths": [str(warc)]}
    if split_bytes:
        input_section["split_bytes"] = split_bytes
    config = out.parent / f"{out.name}-pipelines.yaml"
    body = {"input": input_section, "output": str(out), "stages": [{"url_filter": {}}, extract]}
    config.write_text(json.dumps({"pipelines": {"bench": body}}))  # JSON is valid YAML
    return load_pipelines(config, ["bench"])[0]


def child_winnow(engine: str, warc: Path, split_bytes: int | None, out: Path, workers: int) -> dict[str, Any]:
    import logging

    from pipeline.executor import run_pipeline
    from pipeline.rundir import read_json

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    spec = winnow_spec(engine, warc, split_bytes, out)
    ray_times: dict[str, float] = {}
    benchutil.time_winnow_ray(ray_times)  # Ray start/stop timed inside run_pipeline's own flow
    start = time.perf_counter()
    done_at: list[float] = []  # when the results are written and shown, before Ray's shutdown
    result = run_pipeline(
        spec, output=out, fresh=True, num_cpus=workers, on_done=lambda _: done_at.append(time.perf_counter())
    )
    wall = time.perf_counter() - start
    stats = {s["name"]: s for s in result.stats}
    markers = sorted((out / "_work" / "phase-0" / "done").glob("*.json"))
    ray_start, ray_stop = ray_times.get("ray_start", 0.0), ray_times.get("ray_stop", 0.0)
    return {
        "wall_s": round(wall, 3),
        "results_s": round(done_at[0] - start, 3),
        "phases_s": {
            "ray_start": round(ray_start, 3),
            "run": round(wall - ray_start - ray_stop, 3),
            "ray_stop": round(ray_stop, 3),
        },
        "docs_in": stats["read"]["docs_out"],
        "docs_out": stats["extract"]["docs_out"],
        "tasks": len(markers),
        "task_seconds": [read_json(m)["seconds"] for m in markers],
        "stage_seconds": {name: s["seconds"] for name, s in stats.items()},
        "dropped": {name: s["dropped"] for name, s in stats.items() if name != "read"},
    }


def child_main(args: argparse.Namespace) -> int:
    system, engine, _layout = CONFIGS[args.child]
    out = Path(args.out)
    if system == "winnow":
        res = child_winnow(engine, Path(args.input), args.split_bytes, out, args.workers)
    else:
        import datatrove_pipeline

        res = datatrove_pipeline.run(Path(args.input), out, args.workers, tasks=args.tasks)
    Path(args.result).write_text(json.dumps(res))
    return 0


PREPARE = """
import sys, time
from pipeline.config import load_pipelines
from pipeline.executor import prepare_stages
from pipeline.rundir import RunDir
spec = load_pipelines(sys.argv[1], ["bench"])[0]
t0 = time.perf_counter()
prepare_stages(RunDir(spec.output), spec.stages)
print(f"{time.perf_counter() - t0:.2f}")
"""


def profile_task(name: str, warc: Path, top: int = 30) -> str:
    """Where one winnow task's time goes, in this process (no Ray), as a fresh worker sees it: the
    driver-side ``prepare_stages`` (in a separate process, as on the driver), each stage's
    ``setup()`` timed with its RSS growth, then ``run_task`` on the first shard under cProfile."""
    import cProfile
    import io
    import logging
    import pstats
    import resource

    import psutil

    from pipeline import registry
    from pipeline.executor import run_task, split_phases, stage_work_dir
    from pipeline.rundir import RunDir
    from pipeline.stage import Task

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    registry.load_stages()
    _system, engine, layout = CONFIGS[name]
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-profile-"))
    lines = []
    try:
        spec = winnow_spec(engine, warc, SMALL_SHARD if layout == "small" else None, work / "out")
        config = work / "out-pipelines.yaml"  # written by winnow_spec
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        prep = subprocess.run(
            [sys.executable, "-c", PREPARE, str(config)], env=env, capture_output=True, text=True, check=True
        )
        lines.append(f"driver prepare_stages (overlaps Ray start in run_pipeline): {prep.stdout.strip()} s")
        run_dir = RunDir(work / "out")
        me = psutil.Process()
        for stage_spec in spec.stages:  # a cold setup of each stage, as in a fresh worker
            stage = stage_spec.build()
            stage.work = stage_work_dir(run_dir, stage.name)  # as run_task sets it
            rss0, t0 = me.memory_info().rss, time.perf_counter()
            stage.setup()
            dt, rss1 = time.perf_counter() - t0, me.memory_info().rss
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            lines.append(
                f"setup {stage_spec.name}: {dt:.2f} s, RSS +{(rss1 - rss0) / 2**20:.0f} MB "
                f"(now {rss1 / 2**20:.0f} MB, process peak {peak:.0f} MB)"
            )
            # Second setup in the same process: what a reused Ray worker pays for its next task.
            t0 = time.perf_counter()
            again = stage_spec.build()
            again.work = stage.work
            again.setup()
            lines.append(f"setup {stage_spec.name} again (warm process): {time.perf_counter() - t0:.2f} s")
        source = registry.SOURCES[spec.input.format](spec.input)
        shard = source.plan(spec.input_files)[0]
        phase = split_phases(spec.stages)[0]
        task = Task(0, True, shard=shard)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        marker = run_task(spec, str(work / "out"), phase, task)
        prof.disable()
        lines.append(
            f"run_task on {shard.describe()} (warm process): {time.perf_counter() - t0:.2f} s, "
            f"{marker['rows']} rows; per stage: "
            + ", ".join(f"{st['name']} {st['seconds']:.2f} s" for st in marker["stats"])
        )
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
        lines.append(buf.getvalue())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines)


# --- parent ------------------------------------------------------------------------------------------


def read_outputs(out: Path) -> dict[str, str]:
    """id -> extracted text of every document a run wrote."""
    import pyarrow.parquet as pq

    texts: dict[str, str] = {}
    for f in sorted((out / "data").glob("*.parquet")):
        table = pq.read_table(f, columns=["id", "text"])
        texts.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    return texts


def quality(texts: dict[str, str], gold: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Snippet and article-body scores over the gold pages; a page not in the output has no text."""
    snippets, articles = [], []
    for rid, item in gold.items():
        text = texts.get(rid)
        if item["gold_type"] == "snippets":
            snippets.append(eq.count_snippets(item, text))
        else:
            articles.append(eq.shingle_matching(item["text"], text or ""))
    return {
        "gold_pages_in_output": sum(rid in texts for rid in gold),
        "snippet_f1": round(eq.snippet_scores(snippets)["f1"], 4),
        "article_f1": round(eq.article_scores(articles)["f1"], 4),
    }


def summarize(name: str, runs: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    med = benchutil.median
    walls = [r["wall_s"] for r in runs]
    docs_in = runs[0]["docs_in"]
    docs_per_s = [r["docs_in"] / r["wall_s"] for r in runs]
    return {
        "config": name,
        "runs": len(runs),
        "docs_in": docs_in,
        "docs_out": runs[0]["docs_out"],
        "tasks": runs[0]["tasks"],
        "wall_s": round(med(walls), 2),
        "wall_s_all": walls,
        "docs_per_s": round(med(docs_per_s), 1),
        "docs_per_s_per_core": round(med(docs_per_s) / workers, 1),
        "process_wall_s": round(med([r["process_wall_s"] for r in runs]), 2),
        "cpu_s": round(med([r["cpu_s"] for r in runs]), 1),
        "other_cpu_s_all": [r["other_cpu_s"] for r in runs],
        "other_cpu_fraction_all": [r["other_cpu_fraction"] for r in runs],
        "attempts_all": [r["attempts"] for r in runs],
        "docs_per_cpu_s": round(med([r["docs_in"] / r["cpu_s"] for r in runs if r["cpu_s"]]), 1),
        "peak_rss_mb": round(med([r["peak_rss_mb"] for r in runs])),
        "peak_pss_mb": round(med([r["peak_pss_mb"] for r in runs])),
        "peak_rss_breakdown_mb": runs[len(runs) // 2]["peak_rss_breakdown_mb"],
        "peak_rss_by_category_mb": runs[len(runs) // 2]["peak_rss_by_category_mb"],
        "max_task_s": round(med([max(r["task_seconds"]) for r in runs]), 2),
        "task_seconds_median_run": sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]["task_seconds"],
        "stage_seconds": runs[0]["stage_seconds"],
        "phases_s": {k: round(med([r["phases_s"][k] for r in runs]), 2) for k in runs[0].get("phases_s", {})},
        "dropped": runs[0]["dropped"],
        "quality": runs[0].get("quality"),
    }


def markdown(summaries: dict[str, dict[str, Any]], ratios: list[dict[str, Any]]) -> str:
    lines = [
        "| config | tasks | docs in | docs out | wall s | docs/s | docs/s/core | CPU s | docs/CPU-s "
        "| peak RSS MB | peak PSS MB | snippet F1 | article F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries.values():
        q = s["quality"] or {}
        lines.append(
            f"| {s['config']} | {s['tasks']} | {s['docs_in']} | {s['docs_out']} | {s['wall_s']:.1f} "
            f"| {s['docs_per_s']:.1f} | {s['docs_per_s_per_core']:.1f} | {s['cpu_s']:.0f} "
            f"| {s['docs_per_cpu_s']:.1f} | {s['peak_rss_mb']} | {s['peak_pss_mb']} "
            f"| {q.get('snippet_f1', float('nan')):.3f} | {q.get('article_f1', float('nan')):.3f} |"
        )
    lines += [
        "",
        "| ratio (docs/s) | median of per-repeat ratios | ratio of medians | goal | met |",
        "|---|---|---|---|---|",
    ]
    for r in ratios:
        lines.append(
            f"| {r['num']} / {r['den']} | {r['per_repeat_median']:.2f} | {r['of_medians']:.2f} "
            f"| >= {r['goal']:g} | {'yes' if r['per_repeat_median'] >= r['goal'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="cores / Ray CPUs / datatrove workers and tasks")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated: {', '.join(CONFIGS)}")
    ap.add_argument("--warc", type=Path, default=DEV_WARC)
    ap.add_argument("--json", type=Path, default=None, help="write every run and the summaries here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (outputs, logs)")
    benchutil.add_measurement_args(ap)
    ap.add_argument(
        "--profile-task",
        choices=[
            c for c, (system, _e, layout) in CONFIGS.items() if system == "winnow" and layout in LAYOUTS
        ],
        help="instead of the benchmark: time each stage's setup, cProfile one task of this config",
    )
    # child mode (internal): one measurement, written to --result
    ap.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--split-bytes", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tasks", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.profile_task:
        print(profile_task(args.profile_task, args.warc.resolve()))
        return 0

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    args.warc = args.warc.resolve()  # the generated pipelines.yaml lives elsewhere
    if not args.warc.is_file():
        print(f"SKIP: {args.warc} not found; nothing to measure.")
        return 0

    info = benchutil.machine_info(PACKAGES)
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-throughput-"))
    env = {
        # datatrove unpacks its URL block list under the HF assets cache: keep it in our temp dir.
        "HF_ASSETS_CACHE": str(work / "hf-assets"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    log = work / "children.log"
    try:
        split_dir = work / "split"
        _, split_bytes = split_warc(args.warc, split_dir, args.workers)
        split4x_dir = work / "split4x"
        split_warc(args.warc, split4x_dir, TASKS_PER_WORKER * args.workers)
        onefile_dir = work / "onefile"
        onefile_dir.mkdir()
        os.symlink(args.warc, onefile_dir / args.warc.name)
        if any(CONFIGS[c][0] == "datatrove" for c in configs):
            print("unpacking datatrove's URL block list (one-time, untimed) ...", file=sys.stderr)
            os.environ["HF_ASSETS_CACHE"] = env["HF_ASSETS_CACHE"]
            import datatrove_pipeline

            datatrove_pipeline.prepare_assets()
        gold = eq.load_gold(GOLD) if GOLD.is_file() else {}

        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
        for rep in range(args.repeats):
            for name in configs:
                system, _engine, layout = CONFIGS[name]
                out = work / f"{name}-r{rep}"
                cmd = [str(Path(__file__).resolve()), "--child", name, "--out", str(out)]
                cmd += ["--workers", str(args.workers), "--result", str(work / "result.json")]
                if system == "winnow":
                    cmd += ["--input", str(args.warc)]
                    if layout == "balanced":
                        cmd += ["--split-bytes", str(split_bytes)]
                    elif layout == "small":
                        cmd += ["--split-bytes", str(SMALL_SHARD)]
                else:
                    dirs = {"split": split_dir, "split4x": split4x_dir, "onefile": onefile_dir}
                    cmd += ["--input", str(dirs[layout])]
                    if layout == "split4x":
                        cmd += ["--tasks", str(TASKS_PER_WORKER * args.workers)]
                res = benchutil.measure(
                    cmd,
                    work / "result.json",
                    log,
                    env=env,
                    wait_quiet=args.wait_quiet,
                    max_attempts=args.attempts,
                )
                if rep == 0 and gold:
                    res["quality"] = quality(read_outputs(out), gold)
                runs[name].append(res)
                print(
                    f"[{rep + 1}/{args.repeats}] {name}: {res['wall_s']:.1f} s, {res['docs_in']} docs in, "
                    f"{res['docs_out']} out, peak RSS {res['peak_rss_mb']:.0f} MB, CPU {res['cpu_s']:.0f} s, "
                    f"other CPU {res['other_cpu_s']:.0f} s, attempt {res['attempts']}",
                    file=sys.stderr,
                )
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)

        summaries = {c: summarize(c, runs[c], args.workers) for c in configs}
        ratios = []
        for num, den, goal in RATIOS:
            if num in runs and den in runs:
                # Ratio per repeat (configs of one repeat ran back to back, under similar load).
                per_rep = [
                    (a["docs_in"] / a["wall_s"]) / (b["docs_in"] / b["wall_s"])
                    for a, b in zip(runs[num], runs[den])
                ]
                ratios.append(
                    {
                        "num": num,
                        "den": den,
                        "goal": goal,
                        "per_repeat": [round(x, 3) for x in per_rep],
                        "per_repeat_median": round(benchutil.median(per_rep), 3),
                        "of_medians": round(summaries[num]["docs_per_s"] / summaries[den]["docs_per_s"], 3),
                    }
                )
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(markdown(summaries, ratios))
        if args.json:
            benchutil.write_json(
                args.json,
                {
                    "machine": info,
                    "workers": args.workers,
                    "repeats": args.repeats,
                    "warc": str(args.warc),
                    "balanced_split_bytes": split_bytes,
                    "summaries": summaries,
                    "ratios": ratios,
                    "runs": runs,
                },
            )
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
