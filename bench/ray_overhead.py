"""What running on Ray costs: the winnow pipeline on a local Ray with one CPU against the same task
code called in a plain loop in one process.

Pipeline: ``input: warc`` -> ``url_filter: {}`` -> ``extract: {}`` (trafilatura), winnow defaults.
Inputs: the bundled ``samples/sample.warc.gz`` (3.4 MB: one task with the default ``split_bytes``),
the same with ``split_bytes: 524288`` as in ``pipelines.yaml``'s demo (7 tasks), and
``dev_web.warc.gz`` (44.6 MB: 2 tasks).

Modes, each measured in a fresh child process (``benchutil.run_child``), interleaved per repeat:

* ``ray``: ``run_pipeline(spec, output, fresh=True, num_cpus=1)``, which starts a private local
  Ray, runs the tasks and shuts Ray down: what ``winnow run --num-cpus 1`` costs beyond
  interpreter start ("with startup").  ``benchutil.time_winnow_ray`` times its ``init_ray`` call
  ("startup"; the stages' driver-side ``prepare()`` runs in a thread meanwhile) and the shutdown
  ("stop"); "without startup" = total - startup - stop.
* ``loop``: what ``run_pipeline`` does with Ray taken out: clear the run dir, plan the shards,
  run the stages' ``prepare_stages`` (no Ray start to overlap with), build the phase's task dicts
  exactly as ``run_pipeline`` does (``{"index": i, "shard": shard.__dict__, "last": True}``), call
  ``run_task(spec, out, phase, task)`` for each in turn, then merge and write ``stats.json``.
  Same stage code, same outputs, no Ray.

Both modes import winnow's modules before their timer starts; a Ray worker has to import them
(and pyarrow) itself, inside the timed run: that is part of what Ray costs.  In both modes the
driver parses url_filter's block list once (``prepare``), and ``setup()`` inside ``run_task`` maps
it and imports trafilatura once per process (the loop's process, or the one Ray worker that runs
every task with ``num_cpus=1``).

Usage: ``python bench/ray_overhead.py [--repeats 3] [--inputs sample,sample-7tasks,dev]
[--json OUT] [--profile]``.  ``--profile`` also runs the loop once on the sample under cProfile
and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:  # `python bench/ray_overhead.py` from anywhere
        sys.path.insert(0, p)

import benchutil  # noqa: E402

SAMPLE = ROOT / "samples" / "sample.warc.gz"
DEV_WARC = Path("/work/shared/data/dev_web.warc.gz")
# name -> (WARC, split_bytes or None for winnow's default)
INPUTS: dict[str, tuple[Path, int | None]] = {
    "sample": (SAMPLE, None),
    "sample-7tasks": (SAMPLE, 524288),
    "dev": (DEV_WARC, None),
}
MODES = ("ray", "loop")
GOAL = 1.15  # Ray/loop wall-time ratio on the sample, startup included
PACKAGES = ["ray", "trafilatura", "pyarrow", "warcio", "tldextract", "psutil"]


def load_spec(warc: Path, split_bytes: int | None, out: Path) -> Any:
    from pipeline.config import load_pipelines

    input_section: dict[str, Any] = {"format": "warc", "paths": [str(warc)]}
    if split_bytes:
        input_section["split_bytes"] = split_bytes
    config = out.parent / f"{out.name}-pipelines.yaml"
    body = {"input": input_section, "output": str(out), "stages": [{"url_filter": {}}, {"extract": {}}]}
    config.write_text(json.dumps({"pipelines": {"bench": body}}))  # JSON is YAML
    return load_pipelines(config, ["bench"])[0]


def run_loop(spec: Any, out: Path) -> int:
    """``run_pipeline`` without Ray (``in_process=True``): the same driver, tasks and files, each
    task called in turn in this process.  Returns rows."""
    from pipeline.executor import run_pipeline

    result = run_pipeline(spec, out, fresh=True, in_process=True)
    return result.stats[-1]["docs_out"]


def child_main(args: argparse.Namespace) -> int:
    import logging

    # Imported before any timer in both modes (see the module docstring).
    from pipeline.executor import run_pipeline
    from pipeline.rundir import read_json

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    out = Path(args.out)
    spec = load_spec(Path(args.input), args.split_bytes, out)
    res: dict[str, Any] = {"mode": args.child}
    if args.child == "ray":
        ray_times: dict[str, float] = {}
        benchutil.time_winnow_ray(ray_times)  # run_pipeline starts Ray itself (overlapping prepare)
        t0 = time.perf_counter()
        result = run_pipeline(spec, output=out, fresh=True, num_cpus=1)
        total = time.perf_counter() - t0
        startup, stop = ray_times["ray_start"], ray_times["ray_stop"]
        res |= {
            "startup_s": round(startup, 3),
            "run_s": round(total - startup - stop, 3),
            "stop_s": round(stop, 3),
            "total_s": round(total, 3),
            "rows": sum(p["rows"] for p in read_json(out / "manifest.json")["outputs"]["data"]),
            "tasks": result.tasks_run,
        }
    else:
        t0 = time.perf_counter()
        rows = run_loop(spec, out)
        t1 = time.perf_counter()
        res |= {"startup_s": 0.0, "run_s": round(t1 - t0, 3), "stop_s": 0.0, "total_s": round(t1 - t0, 3)}
        res |= {"rows": rows}
    markers = sorted((out / "_work" / "phase-0" / "done").glob("*.json"))
    res["tasks"] = len(markers)
    res["task_seconds"] = [read_json(m)["seconds"] for m in markers]
    res["stage_seconds"] = {s["name"]: s["seconds"] for s in read_json(out / "stats.json")}
    res["wall_s"] = res["total_s"]
    Path(args.result).write_text(json.dumps(res))
    return 0


def profile_loop(warc: Path, work: Path, top: int = 25) -> str:
    """cProfile one loop run in this process; the top functions by cumulative time."""
    import logging

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    out = work / "profile"
    spec = load_spec(warc, None, out)
    prof = cProfile.Profile()
    prof.enable()
    run_loop(spec, out)
    prof.disable()
    dump = work / "profile.txt"
    with open(dump, "w") as f:
        pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(top)
    return dump.read_text()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inputs", default=",".join(INPUTS), help=f"comma-separated: {', '.join(INPUTS)}")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", action="store_true", help="cProfile one loop run on the sample")
    benchutil.add_measurement_args(ap)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--split-bytes", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)

    names = [n.strip() for n in args.inputs.split(",") if n.strip()]
    unknown = [n for n in names if n not in INPUTS]
    if unknown:
        ap.error(f"unknown input(s) {unknown}; choose from {list(INPUTS)}")
    missing = [n for n in names if not INPUTS[n][0].is_file()]
    for n in missing:
        print(f"SKIP {n}: {INPUTS[n][0]} not found", file=sys.stderr)
    names = [n for n in names if n not in missing]

    info = benchutil.machine_info(PACKAGES)
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-ray-"))
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    log = work / "children.log"
    try:
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {m: [] for m in MODES} for n in names}
        for rep in range(args.repeats):
            for name in names:
                warc, split_bytes = INPUTS[name]
                for mode in MODES:
                    out = work / f"{name}-{mode}-r{rep}"
                    cmd = [str(Path(__file__).resolve()), "--child", mode, "--input", str(warc)]
                    cmd += ["--out", str(out), "--result", str(work / "result.json")]
                    if split_bytes:
                        cmd += ["--split-bytes", str(split_bytes)]
                    res = benchutil.measure(
                        cmd, work / "result.json", log, env, args.wait_quiet, args.attempts
                    )
                    runs[name][mode].append(res)
                    print(
                        f"[{rep + 1}/{args.repeats}] {name} {mode}: total {res['total_s']:.2f} s "
                        f"(startup {res['startup_s']:.2f}, run {res['run_s']:.2f}, "
                        f"stop {res['stop_s']:.2f}), "
                        f"{res['rows']} rows, other CPU {res['other_cpu_s']:.1f} s, try {res['attempts']}",
                        file=sys.stderr,
                    )
                    shutil.rmtree(out, ignore_errors=True)

        summaries = {}
        med = benchutil.median
        for name in names:
            ray_runs, loop_runs = runs[name]["ray"], runs[name]["loop"]
            rows = {r["rows"] for r in ray_runs + loop_runs}
            if len(rows) != 1:  # same code, same input: a difference would be a bug
                raise RuntimeError(f"{name}: ray and loop wrote different row counts {rows}")
            with_startup = [r["total_s"] / lp["total_s"] for r, lp in zip(ray_runs, loop_runs)]
            without = [r["run_s"] / lp["total_s"] for r, lp in zip(ray_runs, loop_runs)]
            summaries[name] = {
                "tasks": ray_runs[0]["tasks"],
                "rows": rows.pop(),
                "loop_s": round(med([r["total_s"] for r in loop_runs]), 2),
                "ray_total_s": round(med([r["total_s"] for r in ray_runs]), 2),
                "ray_startup_s": round(med([r["startup_s"] for r in ray_runs]), 2),
                "ray_run_s": round(med([r["run_s"] for r in ray_runs]), 2),
                "ray_stop_s": round(med([r["stop_s"] for r in ray_runs]), 2),
                "ray_task_s_sum": round(med([sum(r["task_seconds"]) for r in ray_runs]), 2),
                "loop_task_s_sum": round(med([sum(r["task_seconds"]) for r in loop_runs]), 2),
                "ratio_with_startup": round(med(with_startup), 3),
                "ratio_without_startup": round(med(without), 3),
                "ratios_with_startup_all": [round(x, 3) for x in with_startup],
                "ratios_without_startup_all": [round(x, 3) for x in without],
                "ray_peak_rss_mb": round(med([r["peak_rss_mb"] for r in ray_runs])),
                "loop_peak_rss_mb": round(med([r["peak_rss_mb"] for r in loop_runs])),
                "ray_peak_pss_mb": round(med([r["peak_pss_mb"] for r in ray_runs])),
                "loop_peak_pss_mb": round(med([r["peak_pss_mb"] for r in loop_runs])),
                "ray_cpu_s": round(med([r["cpu_s"] for r in ray_runs]), 1),
                "loop_cpu_s": round(med([r["cpu_s"] for r in loop_runs]), 1),
                "loop_stage_seconds": loop_runs[0]["stage_seconds"],
                "ray_stage_seconds": ray_runs[0]["stage_seconds"],
            }
        lines = [
            "| input | tasks | loop s | Ray total s | Ray startup s | Ray run s | Ray stop s "
            "| Ray/loop with startup | Ray/loop without startup "
            "| peak RSS MB Ray / loop | CPU s Ray / loop |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in summaries.items():
            lines.append(
                f"| {name} | {s['tasks']} | {s['loop_s']:.2f} | {s['ray_total_s']:.2f} "
                f"| {s['ray_startup_s']:.2f} | {s['ray_run_s']:.2f} | {s['ray_stop_s']:.2f} "
                f"| {s['ratio_with_startup']:.2f} "
                f"| {s['ratio_without_startup']:.2f} | {s['ray_peak_rss_mb']} / {s['loop_peak_rss_mb']} "
                f"| {s['ray_cpu_s']:.1f} / {s['loop_cpu_s']:.1f} |"
            )
        if "sample" in summaries:
            ok = summaries["sample"]["ratio_with_startup"] <= GOAL
            lines.append(
                f"\ngoal Ray/loop <= {GOAL} on the sample (startup included): {'met' if ok else 'MISSED'}"
            )
        print("\n".join(lines))
        profile = profile_loop(SAMPLE, work) if args.profile else None
        if profile:
            print(profile)
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.json:
            benchutil.write_json(
                args.json,
                {
                    "machine": info,
                    "repeats": args.repeats,
                    "summaries": summaries,
                    "runs": runs,
                    "profile": profile,
                },
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
