"""Crawler speed: pages/s against local servers, N hosts in parallel against 1 host, and the
crawler's CPU seconds per page.

Servers: ``tests/crawlserver.py`` sites on 127.0.0.x, run in a separate process (so the
crawler's CPU time, ``time.process_time()`` of this process and all its threads, excludes them),
serving real pages replayed from ``dev_web.warc.gz`` (a comment makes each copy's payload
distinct, so no response becomes a revisit).  Each host has an index page linking its pages and
the next host's index.

Configurations (same total pages in each):

* ``1 host, delay D``: politeness bounds the crawl at 1/D pages/s, whatever the concurrency.
* ``N hosts, delay D``: hosts are crawled in parallel, each still at most 1/D pages/s.
* ``N hosts, delay 0``: no politeness wait: the crawler's own throughput (HTTP, link extraction,
  WARC writing with one fsync per page, the journal's fsync), and its CPU per page.

Usage: ``python bench/crawl_speed.py [--hosts 8] [--pages 160] [--delay 0.05]``; results go to
``bench/results/crawl_speed.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchutil import machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "crawl_speed.json"


def serve(ips: list[str], per_host: int, conn) -> None:
    """Child process: start the sites, send their base URLs, serve until told to stop."""
    from crawlserver import Sites, html, replayed_pages

    pages = replayed_pages(20)
    with Sites(ips) as sites:
        bases = [sites[ip].base for ip in ips]
        for h, ip in enumerate(ips):
            links = [f"/t/p/{i}" for i in range(per_host)] + [f"{bases[(h + 1) % len(ips)]}/"]
            sites[ip].page("/", html(ip, links))
            for i in range(per_host):
                p = pages[(h * per_host + i) % len(pages)]
                body = p.body + f"<!-- copy {h}/{i} -->".encode()
                sites[ip].page(f"/t/p/{i}", body, p.content_type)
        conn.send(bases)
        conn.recv()  # stop


def measure(hosts: int, per_host: int, delay: float, concurrency: int) -> dict:
    from stages.crawl import CrawlParams, run_crawl

    ips = [f"127.0.0.{100 + i}" for i in range(hosts)]
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=serve, args=(ips, per_host, child), daemon=True)
    proc.start()
    try:
        bases = parent.recv()
        params = CrawlParams(
            seeds=[f"{b}/" for b in bases],
            allowed_domains=ips,
            delay=delay,
            concurrency=concurrency,
            max_depth=2,
            max_pages=100_000,
            url_patterns=[r"^http://127\.0\.0\.\d+:\d+/(t/p/\d+)?$"],
            allow_private_addresses=True,
            user_agent="winnow-crawl-bench/0.1 (+http://127.0.0.1/)",
        )
        with tempfile.TemporaryDirectory(prefix="crawlbench") as tmp:
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = run_crawl(params, Path(tmp), Path(tmp))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    pages = result["stats"]["docs_out"]
    return {
        "hosts": hosts,
        "delay_s": delay,
        "concurrency": concurrency,
        "pages": pages,
        "requests": result["stats"]["extra"].get("requests", 0),
        "wall_s": round(wall, 2),
        "pages_per_s": round(pages / wall, 1),
        "politeness_bound_pages_per_s": round(hosts / delay, 1) if delay else None,
        "crawler_cpu_s": round(cpu, 2),
        "cpu_ms_per_page": round(1000 * cpu / max(pages, 1), 2),
        "mb_received": round(result["stats"]["extra"].get("bytes_received", 0) / 1e6, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--pages", type=int, default=160, help="pages in total, split over the hosts")
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (the median is kept)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    info = machine_info(["protego", "w3lib", "warcio", "lxml"])
    configs = [(1, args.delay), (args.hosts, args.delay), (args.hosts, 0.0)]
    samples: dict[tuple[int, float], list[dict]] = {c: [] for c in configs}
    for rep in range(args.repeat):  # configurations alternate, so drifting load hits each alike
        for hosts, delay in configs:
            per_host = args.pages // hosts - 1  # + the index page
            run = measure(hosts, per_host, delay, args.concurrency)
            run["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            samples[(hosts, delay)].append(run)
            print(
                f"[{rep + 1}/{args.repeat}] {hosts:3d} host(s) delay {delay:.2f}s: {run['pages']} pages in "
                f"{run['wall_s']} s = {run['pages_per_s']} pages/s "
                f"(bound {run['politeness_bound_pages_per_s']}), "
                f"crawler CPU {run['cpu_ms_per_page']} ms/page",
                flush=True,
            )
    runs = []
    for (hosts, delay), got in samples.items():
        best = sorted(got, key=lambda r: r["pages_per_s"])[len(got) // 2]  # the median run
        runs.append(
            {
                **best,
                "pages_per_s_all": [r["pages_per_s"] for r in got],
                "cpu_ms_per_page_all": [r["cpu_ms_per_page"] for r in got],
            }
        )
        print(
            f"median: {hosts} host(s) delay {delay}: {best['pages_per_s']} pages/s, "
            f"{best['cpu_ms_per_page']} ms CPU/page"
        )
    write_json(args.out, {"machine": info, "runs": runs})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
