"""Shared by the engine tests: paths, a pipelines.yaml writer, reading a run's output back, busy
processes to load the machine with."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sample.warc.gz"
SHARED = REPO.parent / "shared" / "data"
WINNOW = [sys.executable, "-m", "pipeline.cli"]


def write_config(path: Path, pipelines: dict) -> Path:
    path.write_text(yaml.safe_dump({"pipelines": pipelines}, sort_keys=False))
    return path


def sample_pipeline(output: Path, split_bytes: int = 524288, stages: list | None = None, **extra) -> dict:
    return {
        "input": {"format": "warc", "paths": [str(SAMPLE)], "split_bytes": split_bytes},
        "output": str(output),
        "stages": stages if stages is not None else [{"url_filter": {}}, {"extract": {}}],
        **extra,
    }


def winnow(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [*WINNOW, *args], capture_output=True, text=True, cwd=REPO, env=full_env, timeout=timeout
    )


def read_docs(run_dir: Path) -> list[dict]:
    """All output rows, ordered by part then row."""
    rows: list[dict] = []
    for part in sorted((run_dir / "data").glob("part-*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def stats_without_time(run_dir: Path) -> list[dict]:
    stats = json.loads((run_dir / "stats.json").read_text())
    for s in stats:
        s.pop("seconds")
    return stats


def markers(run_dir: Path, phase: int = 0) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted((run_dir / "_work" / f"phase-{phase}" / "done").glob("*.json"))
    ]


def kill_tree(pid: int) -> None:
    """SIGKILL a process this test started and all its descendants (its Ray, if it started one)."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def kill_run_when(args: list[str], ready: Callable[[], bool], poll: float = 0.02) -> None:
    """Start ``winnow ARGS`` (own session, own Ray temp dir), wait until ``ready()``, then SIGKILL
    the driver and everything it started.  Fails if the run ends before ``ready()``."""
    # A SIGKILLed driver cannot remove its Ray temp dir: give it one removed here.
    ray_tmp = tempfile.mkdtemp(prefix="wk")  # short: Ray's unix socket paths are limited
    proc = subprocess.Popen(
        [*WINNOW, *args],
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "TMPDIR": ray_tmp},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(poll)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        kill_tree(proc.pid)  # the driver, its raylet/GCS and every worker: all started by this test
        proc.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


# Ray starts its workers at nice 15 (``RAY_worker_niceness``).  Busy processes at nice 0 would leave
# a worker ~2% of a core (CFS weights 36 vs 1024) and make a test minutes long; at the workers'
# own niceness they compete with them as equals, like the workers of another Ray job would.
HOG_NICENESS = 15


@contextlib.contextmanager
def cpu_hogs(n: int, niceness: int = HOG_NICENESS) -> Iterator[list[psutil.Process]]:
    """``n`` CPU-bound processes (``while True: pass``) for the duration of the block: a machine
    as busy as one shared with other work.  Started here and killed here, by their PIDs."""
    code = f"import os\nos.nice({niceness})\nwhile True: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        yield [psutil.Process(p.pid) for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)
