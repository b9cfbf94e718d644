"""Shared helpers of the pipeline benchmarks: run one measurement in a fresh child process, sample
its whole process tree's memory and CPU with psutil, and describe the machine.

Why a child process per measurement: imports, module-level caches (the URL block list, the
trafilatura module) and a Ray instance would otherwise carry over from one configuration to the
next and make later runs look cheaper.  Every measurement starts from a cold interpreter, as a
user's ``winnow run`` would.

Memory is reported two ways, both summed over the child and all its descendants (Ray's
``gcs_server``, ``raylet`` and worker processes are descendants of the driver that started them;
datatrove's pool workers, its extractor sandboxes, forkserver and manager are too):

* RSS: what ``ps`` shows.  Forked processes share copy-on-write pages, which RSS counts once per
  process, so a sum of RSS overstates what the tree uses.
* PSS (proportional set size, from ``/proc/PID/smaps_rollup``): each shared page is split among
  the processes that map it, so the sum is the tree's real footprint.

CPU seconds are the last ``cpu_times()`` seen for each PID, summed: a process's time after the
last sample before it exits (at most one interval) is missed, so the figure is a slight
underestimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024


def category(proc: psutil.Process, root_pid: int, cmdline: list[str]) -> str:
    """Which part of a run a process belongs to (driver, Ray system, Ray worker, other)."""
    if proc.pid == root_pid:
        return "driver"
    joined = " ".join(cmdline)
    # Ray renames processes with setproctitle: task workers "ray::IDLE", "ray::run_task", ...;
    # its per-node agents "ray::DashboardAgent", "ray::RuntimeEnvAgent" are system processes.
    if cmdline and cmdline[0].startswith("ray::"):
        return "ray_system" if cmdline[0].endswith("Agent") else "ray_worker"
    name = proc.name()
    if name in ("raylet", "gcs_server") or any(
        s in joined for s in ("ray/_private", "ray/dashboard", "ray/autoscaler", "ray/core/src")
    ):
        return "ray_system"
    return "other"


@dataclass
class TreeSample:
    rss: int = 0
    pss: int = 0
    by_category_rss: dict[str, int] = field(default_factory=dict)
    procs: int = 0


class TreeSampler(threading.Thread):
    """Polls a process and all its descendants every ``interval`` seconds until ``stop()``."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self._stop_event = threading.Event()
        self.peak_rss = TreeSample()
        self.peak_pss = TreeSample()
        self.peak_category_rss: dict[str, int] = {}
        self.cpu: dict[int, float] = {}  # pid -> last user+system seconds seen
        self.max_procs = 0
        self.samples = 0
        self._cmdlines: dict[int, tuple[psutil.Process, list[str]]] = {}

    def run(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            self._sample(root)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _sample(self, root: psutil.Process) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        s = TreeSample()
        for p in procs:
            try:
                mem = p.memory_full_info()
                times = p.cpu_times()
                known = self._cmdlines.get(p.pid)
                if known is None or known[0] != p:
                    known = (p, p.cmdline())
                # Ray retitles a worker after it started: re-read the cmdline of unnamed ones.
                if not known[1] or not known[1][0].startswith("ray::"):
                    known = (p, p.cmdline())
                self._cmdlines[p.pid] = known
                cat = category(p, self.root_pid, known[1])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            s.rss += mem.rss
            s.pss += getattr(mem, "pss", mem.rss)
            s.by_category_rss[cat] = s.by_category_rss.get(cat, 0) + mem.rss
            s.procs += 1
            self.cpu[p.pid] = times.user + times.system
        self.samples += 1
        self.max_procs = max(self.max_procs, s.procs)
        if s.rss > self.peak_rss.rss:
            self.peak_rss = s
        if s.pss > self.peak_pss.pss:
            self.peak_pss = s
        for cat, rss in s.by_category_rss.items():
            self.peak_category_rss[cat] = max(self.peak_category_rss.get(cat, 0), rss)

    def summary(self) -> dict[str, Any]:
        return {
            "peak_rss_mb": round(self.peak_rss.rss / MB, 1),
            "peak_pss_mb": round(self.peak_pss.pss / MB, 1),
            # RSS of each kind of process at the moment the total peaked, and each kind's own peak
            "peak_rss_breakdown_mb": {k: round(v / MB, 1) for k, v in self.peak_rss.by_category_rss.items()},
            "peak_rss_by_category_mb": {k: round(v / MB, 1) for k, v in self.peak_category_rss.items()},
            "cpu_s": round(sum(self.cpu.values()), 2),
            "max_procs": self.max_procs,
            "samples": self.samples,
        }


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent not idle since boot (all processes, all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_for_quiet(max_busy_percent: float = 25.0, max_wait_s: float = 300.0) -> float:
    """Wait until the machine is mostly idle (other work shares it); returns the seconds waited.

    Starting a measurement while e.g. a test suite runs would charge its CPU use to us.  We poll
    machine-wide CPU use over 2 s windows and start once it is below ``max_busy_percent``, or
    after ``max_wait_s`` (the run's ``other_cpu_s`` then shows how much it was disturbed).
    """
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        if psutil.cpu_percent(interval=2.0) < max_busy_percent:
            break
    return round(time.perf_counter() - start, 1)


def run_child(
    args: list[str],
    result_file: Path,
    log_file: Path,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Run ``python ARGS`` (the child writes its measurements to ``result_file``), sampling its tree.

    Returns the child's result merged with the tree's memory/CPU figures, ``process_wall_s``
    (spawn to exit: includes interpreter start and imports, which the child's own timer does not)
    and ``other_cpu_s``: CPU time the machine spent on anything but this tree meanwhile (other
    work sharing the machine; near 0 when the measurement was undisturbed).
    """
    result_file.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {})}
    busy_before = busy_cpu_s()
    start = time.perf_counter()
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=full_env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.wait()
            rc = -9
        finally:
            sampler.stop()
    wall = time.perf_counter() - start
    busy = busy_cpu_s() - busy_before
    if rc != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"child {args} exited with {rc}; log {log_file}:\n{tail}")
    result = json.loads(result_file.read_text())
    summary = sampler.summary()
    # The sampler itself and this parent are in "other" too: a few tenths of a CPU-second.
    other = round(max(0.0, busy - summary["cpu_s"]), 1)
    return {**result, "process_wall_s": round(wall, 3), **summary, "other_cpu_s": other}


def measure(
    args: list[str],
    result_file: Path,
    log_file: Path,
    env: dict[str, str] | None = None,
    wait_quiet: bool = True,
    max_attempts: int = 3,
    max_other_fraction: float = 0.1,
) -> dict[str, Any]:
    """``run_child``, repeated while other work on the machine disturbed it.

    A run is "disturbed" when other processes used more than ``max_other_fraction`` of the
    machine's CPU capacity over its duration (``other_cpu_s > fraction * cores * wall``).  It is
    then measured again (after waiting for the machine to be quiet), up to ``max_attempts``
    times; the least disturbed attempt is kept and ``attempts`` / ``other_cpu_fraction`` say so.
    """
    cores = os.cpu_count() or 1
    best: dict[str, Any] | None = None
    for attempt in range(1, max_attempts + 1):
        waited = wait_for_quiet() if wait_quiet else 0.0
        res = run_child(args, result_file, log_file, env)
        res["waited_for_quiet_s"] = waited
        res["other_cpu_fraction"] = round(res["other_cpu_s"] / (cores * res["process_wall_s"]), 3)
        res["attempts"] = attempt
        if best is None or res["other_cpu_fraction"] < best["other_cpu_fraction"]:
            best = {**res}
        best["attempts"] = attempt
        if res["other_cpu_fraction"] <= max_other_fraction:
            break
    assert best is not None
    return best


def time_winnow_ray(timings: dict[str, float]) -> None:
    """Time winnow's Ray start and stop where ``run_pipeline`` does them.

    ``run_pipeline`` starts Ray itself and overlaps the stages' driver-side ``prepare()`` (e.g.
    url_filter's block-list parse) with that start, so starting Ray beforehand to time it would
    serialise the two and misstate the run.  Instead ``pipeline.executor.init_ray`` is wrapped:
    ``timings["ray_start"]`` gets the duration of the call, ``timings["ray_stop"]`` that of the
    returned stop function.  Nothing else changes.
    """
    from pipeline import executor

    original = executor.init_ray

    def init_ray(address: str | None, num_cpus: int | None) -> Any:
        t0 = time.perf_counter()
        stop = original(address, num_cpus)
        timings["ray_start"] = time.perf_counter() - t0

        def timed_stop() -> None:
            t1 = time.perf_counter()
            stop()
            timings["ray_stop"] = time.perf_counter() - t1

        return timed_stop

    executor.init_ray = init_ray  # type: ignore[assignment]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_state() -> dict[str, Any]:
    """The commit measured, and which code files differed from it (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "pipeline", "stages")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_code": dirty.splitlines()}


def machine_info(packages: list[str]) -> dict[str, Any]:
    """CPU model and count, memory, OS, Python and package versions, date, load average."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git": git_state(),
        "cpu_model": model or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in packages},
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def add_measurement_args(ap: argparse.ArgumentParser) -> None:
    """The options every benchmark here shares: re-measure noisy runs, wait for a quiet machine."""
    ap.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="measure a run again, up to this many times, while other work used > 10%% of the CPUs",
    )
    ap.add_argument(
        "--no-wait-quiet",
        dest="wait_quiet",
        action="store_false",
        help="start each run at once instead of waiting (<= 5 min) for the machine to be idle",
    )
