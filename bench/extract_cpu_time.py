"""Per-page CPU time of ``extract`` on ``dev_web.warc.gz``: what the ``timeout`` budget must clear.

The ``extract`` budget counts CPU seconds of the extracting thread (``time.thread_time()``), so
the default has to sit above what real pages cost with room to spare.  This script reads the WARC
in one task (one dedup cache, as a single shard would), applies ``url_filter`` and runs every page
through ``Extract.extract_one`` with the budget out of the way (``timeout`` = 1e9), recording the
CPU seconds each page took (``Extract.last_cpu_seconds``, the value the budget decides on).

``--load N`` then extracts the same pages again, in the same order (so the same dedup state),
next to N CPU-bound processes this script starts and stops (by PID): the per-page ratio
loaded / idle is what contention (shared caches, SMT siblings, frequency) does to *CPU* time,
i.e. the variance the budget still has.  The wall-clock ratio is printed too, for contrast.

Usage: ``python bench/extract_cpu_time.py [--load 2] [--json bench/results/extract_cpu_time.json]``
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
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
WARMUP_PAGES = 50


def load_pages(warc: Path) -> list[dict[str, Any]]:
    """Rows of the WARC that pass ``url_filter`` (one shard: the whole file), in file order."""
    from stages.url_filter import UrlFilter, UrlFilterParams
    from stages.warc import WarcParams, WarcSource

    source = WarcSource(WarcParams(paths=[str(warc)], split_bytes=2**40))
    url_filter = UrlFilter(UrlFilterParams())
    with tempfile.TemporaryDirectory() as work:
        url_filter.work = Path(work)
        url_filter.setup()
        rows: list[dict[str, Any]] = []
        for shard in source.plan([str(warc)]):
            for batch in source.read(shard):
                kept, _ = url_filter.transform(batch)
                rows += kept.select(["id", "url", "html"]).to_pylist()
    return rows


def extract_pass(pages: list[dict[str, Any]]) -> tuple[list[float], list[str | None], float]:
    """(CPU seconds per page, drop reason per page, wall seconds) with a fresh per-task stage."""
    from stages.extract import Extract, ExtractParams

    stage = Extract(ExtractParams(timeout=1e9))
    stage.setup()
    cpu, reasons = [], []
    start = time.perf_counter()
    for page in pages:
        _, reason = stage.extract_one(page["html"], page["url"])
        cpu.append(stage.last_cpu_seconds)
        reasons.append(reason)
    return cpu, reasons, time.perf_counter() - start


def quantiles(values: list[float]) -> dict[str, float]:
    s = sorted(values)

    def q(f: float) -> float:
        return s[min(len(s) - 1, int(f * len(s)))]

    return {
        "p50": round(q(0.50), 4),
        "p90": round(q(0.90), 4),
        "p99": round(q(0.99), 4),
        "p999": round(q(0.999), 4),
        "max": round(s[-1], 4),
        "mean": round(sum(s) / len(s), 4),
        "sum": round(sum(s), 2),
    }


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:  # our own children, by their handles
        proc.kill()
    for proc in procs:
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warc", type=Path, default=DEV_WARC)
    ap.add_argument("--load", type=int, default=0, help="also extract next to N busy processes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.warc.is_file():
        print(f"SKIP: {args.warc} not found; nothing to measure.")
        return 0
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    info = benchutil.machine_info(["trafilatura", "lxml"])
    pages = load_pages(args.warc)
    extract_pass(pages[:WARMUP_PAGES])  # imports, lxml and trafilatura's own lazy set-up
    cpu, reasons, wall = extract_pass(pages)
    sizes = [len(p["html"].encode("utf-8", "surrogatepass")) for p in pages]
    slowest = sorted(range(len(pages)), key=lambda i: -cpu[i])[:10]
    result: dict[str, Any] = {
        "machine": info,
        "warc": str(args.warc),
        "pages": len(pages),
        "idle": {"cpu_s": quantiles(cpu), "wall_s": round(wall, 2), "loadavg": os.getloadavg()},
        "slowest": [
            {"id": pages[i]["id"], "url": pages[i]["url"], "html_bytes": sizes[i], "cpu_s": round(cpu[i], 4)}
            for i in slowest
        ],
        "reasons": {r or "kept": reasons.count(r) for r in set(reasons)},
    }
    print(f"{len(pages)} pages; CPU s per page, idle: {result['idle']['cpu_s']}; wall {wall:.1f} s")
    for row in result["slowest"]:
        print(f"  {row['cpu_s']:.3f} s  {row['html_bytes']:>9} B  {row['url']}")
    if args.load:
        procs = start_load(args.load)
        try:
            time.sleep(1.0)  # let the scheduler spread them
            cpu2, reasons2, wall2 = extract_pass(pages)
        finally:
            stop_load(procs)
        # Ratios on pages long enough for the clock's granularity and scheduling noise not to matter.
        ratios = [b / a for a, b in zip(cpu, cpu2) if a >= 0.05]
        result["loaded"] = {
            "busy_processes": args.load,
            "cpu_s": quantiles(cpu2),
            "wall_s": round(wall2, 2),
            "same_reasons": reasons == reasons2,
            "cpu_ratio_pages_over_50ms": {"n": len(ratios), **quantiles(ratios)},
            "total_cpu_ratio": round(sum(cpu2) / sum(cpu), 3),
            "wall_ratio": round(wall2 / wall, 3),
        }
        print(f"next to {args.load} busy processes: {result['loaded']}")
    if args.json:
        benchutil.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
