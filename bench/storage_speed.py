"""Object storage against local disk: what reading WARCs from S3 and keeping the run directory there cost.

Everything runs against a local S3 server (moto, started here on 127.0.0.1 and ended by PID; the
same ``tests/s3server.py`` the tests use), so the numbers are the client side's cost (range GETs,
retries bookkeeping, uploads, the mirror) plus moto's, not a real network's: S3 adds ~20-50 ms per
request and its bandwidth per connection.  The machine is shared (2 cores, other jobs running):
read medians and ratios, not absolute times.

Measurements (each configuration ``--repeats`` times, configurations alternated, medians):

* ``read``: the WARC reader alone over every shard (no stages), MB/s of compressed input, from
  local disk and from the bucket.  ``--baseline REV`` also times the local read with the code of
  git revision REV (extracted to a temp dir, run in a child process): "local stays fast".
* ``pipeline``: ``[url_filter, extract]`` with ``run_pipeline(in_process=True)`` (same task code as
  on Ray, without Ray's start-up noise), for input local|s3 x run directory local|s3.

Usage: ``python bench/storage_speed.py [--input FILE] [--repeats 3] [--baseline 3f384b9] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

READ_SCRIPT = """
import json, sys, time
from stages.warc import WarcParams, WarcSource
path, split = sys.argv[1], int(sys.argv[2])
if "://" in path:  # fsspec/s3fs/botocore imports and the client (~0.5 s, once per process): not timed
    from pipeline import storage
    storage.filesystem(path)
src = WarcSource(WarcParams(format="warc", paths=[path], split_bytes=split))
t0, c0 = time.perf_counter(), time.process_time()
rows = sum(b.num_rows for shard in src.plan([path]) for b in src.read(shard))
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "rows": rows}))
"""


def time_read(path: str, split: int, pythonpath: Path = REPO) -> dict:
    """The reader over every shard of ``path``, in a fresh interpreter (no warm caches)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-c", READ_SCRIPT, path, str(split)],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_pipeline(inp: str, out: str, split: int) -> dict:
    from helpers import write_config

    from pipeline import storage
    from pipeline.config import load_pipelines
    from pipeline.executor import run_pipeline

    storage._SIZES.clear()  # no size cached from the previous configuration
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(
            Path(tmp) / "p.yaml",
            {
                "p": {
                    "input": {"format": "warc", "paths": [inp], "split_bytes": split},
                    "output": out,
                    "stages": [{"url_filter": {}}, {"extract": {}}],
                }
            },
        )
        spec = load_pipelines(cfg, ["p"])[0]
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_pipeline(spec, fresh=True, in_process=True)
        return {
            "wall": time.perf_counter() - t0,
            "cpu": time.process_time() - c0,
            "docs_out": result.stats[-1]["docs_out"],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=str(REPO / "samples" / "sample.warc.gz"))
    ap.add_argument("--split-bytes", type=int, default=512 * 1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", help="git revision whose local read speed to compare with")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    from s3server import S3Server

    server = S3Server().start()
    os.environ.update(server.env)
    results: dict = {
        "input": args.input,
        "bytes": os.path.getsize(args.input),
        "split_bytes": args.split_bytes,
    }
    baseline_tree = None
    try:
        client = server.client()
        for bucket in ("bench-in", "bench-out"):
            client.create_bucket(Bucket=bucket)
        client.upload_file(args.input, "bench-in", "in.warc.gz")
        remote_in = "s3://bench-in/in.warc.gz"
        if args.baseline:
            baseline_tree = Path(tempfile.mkdtemp(prefix="winnow-baseline-"))
            archive = subprocess.run(
                ["git", "archive", args.baseline], cwd=REPO, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline_tree)], input=archive, check=True)

        reads: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            reads.setdefault("local", []).append(time_read(args.input, args.split_bytes))
            reads.setdefault("s3", []).append(time_read(remote_in, args.split_bytes))
            if baseline_tree is not None:
                reads.setdefault(f"local@{args.baseline}", []).append(
                    time_read(args.input, args.split_bytes, baseline_tree)
                )
        results["read"] = {k: _summary(v, results["bytes"]) for k, v in reads.items()}

        if not args.skip_pipeline:
            runs: dict[str, list[dict]] = {}
            with tempfile.TemporaryDirectory() as tmp:
                configs = {
                    "local->local": (args.input, f"{tmp}/run"),
                    "s3->local": (remote_in, f"{tmp}/run"),
                    "local->s3": (args.input, "s3://bench-out/run"),
                    "s3->s3": (remote_in, "s3://bench-out/run"),
                }
                for _ in range(args.repeats):
                    for name, (inp, out) in configs.items():
                        runs.setdefault(name, []).append(time_pipeline(inp, out, args.split_bytes))
            results["pipeline"] = {k: _summary(v, results["bytes"]) for k, v in runs.items()}
    finally:
        server.stop()
        if baseline_tree is not None:
            subprocess.run(["rm", "-rf", str(baseline_tree)], check=False)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _summary(runs: list[dict], nbytes: int) -> dict:
    wall = statistics.median(r["wall"] for r in runs)
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(statistics.median(r["cpu"] for r in runs), 3),
        "mb_per_s": round(nbytes / wall / 1e6, 2),
        "runs_wall_s": [round(r["wall"], 3) for r in runs],
        **{k: v for k, v in runs[0].items() if k not in ("wall", "cpu")},
    }


if __name__ == "__main__":
    main()
