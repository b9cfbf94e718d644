"""Runs a validated pipeline on Ray: one task per input shard, resumable, in phases.

Phases.  The stage list is cut at every barrier stage (dedup, tokenizer training).  Phase 0
reads the input shards and runs the per-row stages before the first barrier; each later phase
starts with a barrier: the driver calls ``stage.run_barrier(ctx)``, which sees every part the
previous phase wrote and fans its own work out as Ray tasks; then one task per previous part runs
the barrier stage's ``transform`` (e.g. drop the duplicates it found) followed by the per-row
stages up to the next barrier.  The last phase writes ``data/``, earlier ones ``_work/phase-K/data``.

Tasks.  ``run_task`` is a plain function (the Ray task wraps it; ``bench/`` calls it in a loop
to measure Ray's overhead).  It fuses the phase's stages, writes its Parquet part and its
dropped-row samples atomically, then its marker with its stats.  A rerun skips tasks that have a
marker, so a killed run loses at most the tasks in flight and never writes a document twice.
Ray retries a task whose worker died or that raised (``max_retries``); a task that still fails
stops the run with the task's input named.

Object storage.  With ``output: s3://...`` every process works in its node-local mirror of the
run directory and uploads what it finished (``RunDir.publish``: a task's part and samples, then
its marker); a driver starts from the store's markers only, barrier steps fetch their inputs and
upload their outputs, and the lock is a conditional create (see ``pipeline.rundir`` and ``_Lock``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import registry, storage
from pipeline.atomic import atomic_link, atomic_write_json, write_table_atomic
from pipeline.config import PipelineSpec, StageSpec
from pipeline.rundir import PartWriter, RunDir, part_name, read_json
from pipeline.source import Shard
from pipeline.stage import BarrierContext, Resources, RunFailed, StageRunner, StageStats, Task

__all__ = ["RunFailed", "RunResult", "map_items", "run_pipeline", "run_task"]


@dataclass
class Phase:
    index: int
    stages: list[StageSpec]  # per-row stages; for index > 0 the first one is the barrier stage
    barrier: StageSpec | None = None
    tasks: list[Task] = field(default_factory=list)

    @property
    def links_parts(self) -> bool:
        """A phase that is only a pass-through barrier: its parts are the previous phase's."""
        return (
            self.barrier is not None
            and len(self.stages) == 1
            and registry.STAGES[self.barrier.name].passes_through
        )


def split_phases(stages: list[StageSpec]) -> list[Phase]:
    phases = [Phase(0, [])]
    for spec in stages:
        if registry.STAGES[spec.name].barrier:
            phases.append(Phase(len(phases), [spec], barrier=spec))
        else:
            phases[-1].stages.append(spec)
    return phases


def task_resources(stages: list[StageSpec]) -> Resources:
    """A fused chain needs the most any of its stages needs (they run one after the other)."""
    res = [registry.STAGES[s.name].resources for s in stages] or [Resources()]
    return Resources(
        cpus=max(r.cpus for r in res), memory_mb=max(r.memory_mb for r in res), gpus=max(r.gpus for r in res)
    )


def map_items(
    ctx: BarrierContext,
    step: str,
    fn: Callable[..., dict],
    items: dict[str, dict],
    resources: Resources | None = None,
) -> dict[str, dict]:
    """``BarrierContext.map``: run ``fn(**items[key])`` for every key and return key -> ``fn``'s
    (JSON) result, with the item's duration added as ``seconds``.

    Each item is one Ray task (run in this process when Ray is not running: tests, benches).
    ``fn`` writes its own files atomically and lists them in its result as ``"files":
    {path: size}``.  The result is kept as a marker under ``_work/phase-K/steps/<step>/``; a
    rerun (resume after a crash) skips an item whose marker exists *and* whose files are all
    there with the recorded sizes, and runs it again otherwise.  Items must be deterministic
    (same input, same output), so a rerun changes nothing.
    """
    run_dir = ctx.run_dir
    folder = run_dir.phase_dir(ctx.phase) / "steps" / step
    results: dict[str, dict] = {}
    todo: list[str] = []
    for key in items:
        marker = folder / f"{key}.json"
        done = read_json(marker) if marker.exists() else None
        if done is not None and _files_intact(run_dir, done.get("files", {})):
            for path in done.get("files", {}):  # on object storage: the driver's code may read them
                run_dir.fetch(path)
            results[key] = done
        else:
            todo.append(key)
    label = f"phase {ctx.phase} {step}"
    if ctx.progress:
        ctx.progress(label, len(results), len(items), 0)
    if not todo:
        return results
    import ray

    def finish(key: str, result: dict) -> None:
        for path in result.get("files", {}):
            run_dir.fetch(path)  # the barrier's driver code may read what a step wrote elsewhere
        atomic_write_json(folder / f"{key}.json", result)
        run_dir.publish(folder / f"{key}.json")
        results[key] = result
        if ctx.progress:
            ctx.progress(label, len(results), len(items), 0)

    if not ray.is_initialized():
        for key in todo:
            finish(key, _timed_call(fn, items[key], run_dir))
        return results
    res = resources or Resources()
    remote = ray.remote(_timed_call).options(
        num_cpus=res.cpus,
        memory=res.memory_mb * 1024 * 1024,
        max_retries=ctx.spec.max_retries,
        retry_exceptions=True,
    )
    pending = {remote.remote(fn, items[key], run_dir): key for key in todo}
    for key, result, exc in _as_completed(pending):
        if exc is not None:
            raise RunFailed(
                _failure_message(
                    ctx.run_dir,
                    f"phase-{ctx.phase}-{step}-{key}",
                    f"{step} task {key} (phase {ctx.phase})",
                    exc,
                    ctx.spec.max_retries,
                )
            ) from None
        finish(key, result)
    return results


def _as_completed(pending: dict) -> Iterator[tuple[Any, Any, Exception | None]]:
    """``(payload, result, None)`` or ``(payload, None, error)`` for Ray object refs (keys of
    ``pending``, mapped to a payload) as they finish.  Refs still pending when the caller stops
    (a failure it raised) are cancelled."""
    import ray

    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                payload = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    yield payload, None, exc
                    continue
                yield payload, result, None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _timed_call(fn: Callable[..., dict], kwargs: dict, run_dir: RunDir | None = None) -> dict:
    """``fn(**kwargs)`` with its duration added as ``seconds`` (summed into the stage's time).

    For a run directory on object storage, paths in ``kwargs`` are mapped into this node's
    mirror and what exists of them in the store is downloaded first; afterwards the files ``fn``
    lists (``"files"``) and the folders it was asked to write are uploaded, and the result's
    paths are mapped back to the driver's."""
    start = time.perf_counter()
    if run_dir is None or run_dir.url is None:
        result = fn(**kwargs)
    else:
        kwargs = run_dir.localize_all(kwargs)
        paths = [p for p in _paths_in(kwargs) if p.is_relative_to(run_dir.root)]
        for path in paths:
            run_dir.fetch(path)
        result = fn(**kwargs)
        run_dir.publish(*result.get("files", {}))
        for path in paths:
            if path.is_dir():
                run_dir.publish_tree(path)
        result = run_dir.originate_all(result)
    return {**result, "seconds": round(time.perf_counter() - start, 3)}


def _paths_in(obj: Any) -> Iterator[Path]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _paths_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _paths_in(v)
    elif isinstance(obj, (str, Path)) and Path(obj).is_absolute():
        yield Path(obj)


def _files_intact(run_dir: RunDir, files: dict[str, int]) -> bool:
    try:
        return all(run_dir.size_of(path) == size for path, size in files.items())
    except OSError:
        return False


def prepare_stages(run_dir: RunDir, specs: list[StageSpec]) -> None:
    """Run every stage's driver-side ``prepare()`` (see ``Stage.prepare``)."""
    registry.load_stages()
    for spec in specs:
        stage = spec.build()
        stage.work = stage_work_dir(run_dir, stage.name)
        stage.work.mkdir(parents=True, exist_ok=True)
        stage.prepare()
        run_dir.publish_tree(stage.work)


def stage_work_dir(run_dir: RunDir, stage: str) -> Path:
    """A stage's own folder for intermediate files (a barrier's results, read by later tasks)."""
    return run_dir.work / "stages" / stage


# --- the task ------------------------------------------------------------------------------------


def _timed(it: Iterator[pa.RecordBatch], stats: StageStats) -> Iterator[pa.RecordBatch]:
    while True:
        start = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            stats.seconds += time.perf_counter() - start
            return
        stats.seconds += time.perf_counter() - start
        yield batch


def run_task(spec: PipelineSpec, root: str | RunDir, phase: Phase, task: Task) -> dict[str, Any]:
    """Run one task to completion and return its marker (also written to disk, or uploaded last
    for a run directory on object storage)."""
    registry.load_stages()
    run_dir = root if isinstance(root, RunDir) else RunDir(root)
    index = task.index
    started = time.time()
    stages = [s.build() for s in phase.stages]
    for stage in stages:
        stage.work = run_dir.fetch(stage_work_dir(run_dir, stage.name))
        stage.work.mkdir(parents=True, exist_ok=True)  # on another node's mirror it may not exist yet
        stage.task = task
        t0 = time.perf_counter()
        stage.setup()  # model / block-list loading is part of a stage's cost
        stage.stats.seconds += time.perf_counter() - t0
    runners = [StageRunner(s, spec.removed_sample) for s in stages]

    read_stats: StageStats | None = None
    if phase.index == 0:
        source = registry.SOURCES[spec.input.format](spec.input)
        read_stats = source.stats
        assert task.shard is not None
        batches = _timed(source.read_checked(task.shard), read_stats)
    else:
        batches = pq.ParquetFile(run_dir.fetch(task.part)).iter_batches(batch_size=256)

    writer = PartWriter(run_dir.phase_data(phase.index, task.last) / f"{part_name(index)}.parquet")
    try:
        for batch in batches:
            for runner in runners:
                if batch.num_rows == 0:
                    break
                batch = runner(batch)
            writer.write(batch)
        rows = writer.close()
    except BaseException:
        writer.abort()
        raise
    written = [writer.path] if rows else []
    for runner in runners:
        path = run_dir.removed(runner.stage.name, index)
        samples = runner.samples + runner.stage.changed_samples
        if samples:
            written.append(path)
            # every key of every row: from_pylist alone takes the columns of the first row only, and a
            # dropped-row sample first would lose a later changed sample's before/after
            columns = list(dict.fromkeys(k for row in samples for k in row))
            write_table_atomic(path, pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in samples]))
        else:
            path.unlink(missing_ok=True)
    run_dir.publish(*written)

    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:  # run_task also runs outside Ray (benchmarks)
        pass
    marker = {
        "index": index,
        "input": _task_input(task),
        "rows": rows,
        "stats": ([read_stats.to_dict()] if read_stats else []) + [r.stats.to_dict() for r in runners],
        "seconds": round(time.time() - started, 3),
        "node_id": node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    atomic_write_json(run_dir.marker(phase.index, index), marker)
    run_dir.publish(run_dir.marker(phase.index, index))  # last: the task is done once this exists
    return marker


def _task_input(task: Task) -> dict[str, Any]:
    return dict(task.shard.__dict__) if task.shard is not None else {"part": task.part}


def link_task(run_dir: RunDir, phase: Phase, task: Task) -> dict[str, Any]:
    """A pass-through barrier's task (``Phase.links_parts``): the previous phase's part becomes
    this phase's part by a hard link (a copy where links are not supported), and the marker
    holds the stats the barrier stage's identity ``transform`` would have counted.  On the demo
    this saves two full copies of the corpus (tokenizer_train and tokenize both pass through)."""
    started = time.time()
    assert task.part is not None and phase.barrier is not None
    src = run_dir.fetch(task.part)
    dst = run_dir.phase_data(phase.index, task.last) / f"{part_name(task.index)}.parquet"
    atomic_link(src, dst)
    if run_dir.url is not None:  # no links on a store: a server-side copy (no bytes through here)
        storage.copy(run_dir.url_of(src), run_dir.url_of(dst))
    meta = pq.ParquetFile(dst).metadata
    # The bytes StageRunner would have counted (content_bytes of every batch): what the stage that
    # wrote the part counted going out, from its marker (no read of the corpus on the driver);
    # only a part written by the reader alone has no such count, and its text column is summed.
    written = read_json(run_dir.marker(phase.index - 1, task.index))["stats"][-1]
    if written["name"] != "read" and written["docs_out"] == meta.num_rows:
        nbytes = written["bytes_out"]
    else:
        payload = [c for c in ("text", "html") if c in meta.schema.names][:1]
        column = pq.read_table(dst, columns=payload).column(0) if payload else None
        nbytes = int(pc.sum(pc.binary_length(column)).as_py() or 0) if column is not None else 0
    stats = StageStats(phase.barrier.name, docs_in=meta.num_rows, docs_out=meta.num_rows)
    stats.bytes_in = stats.bytes_out = nbytes
    marker = {
        "index": task.index,
        "input": _task_input(task),
        "rows": meta.num_rows,
        "stats": [stats.to_dict()],
        "seconds": round(time.time() - started, 3),
        "node_id": "",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "linked": True,
    }
    atomic_write_json(run_dir.marker(phase.index, task.index), marker)
    run_dir.publish(run_dir.marker(phase.index, task.index))
    return marker


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    run_dir: RunDir
    stats: list[dict]
    tasks_run: int
    tasks_skipped: int
    node_ids: set[str]


class _Lock:
    """One driver per run directory (``_work/lock.json``: host, pid and the pid's start time).

    A lock is taken over only when its holder is provably dead: same host, and that pid is gone
    or now belongs to a process started at another time (pid reuse).  A lock held from another
    host is never taken over silently, since that driver may be alive and two drivers would write
    one run directory: ``--force-unlock`` (``force=True``) says the user checked it is dead.
    """

    def __init__(self, run_dir: RunDir, force: bool = False) -> None:
        self.run_dir = run_dir
        self.path = run_dir.work / "lock.json"
        self.force = force

    def _holder(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _pid_started(os.getpid())}

    def _check_held(self, held: dict[str, Any], where: str) -> None:
        """Raise unless the holder is provably dead (see the class docstring)."""
        if held.get("host") != socket.gethostname():
            raise RunFailed(
                f"{where} is locked by a winnow run on host {held.get('host', '?')!r} "
                f"(pid {held.get('pid', '?')}), which this host cannot check: if that run is "
                "no longer running, rerun with --force-unlock"
            )
        if _pid_alive(held.get("pid", -1), held.get("pid_started")):
            raise RunFailed(f"another winnow run (pid {held['pid']}) is writing {where}")

    def _enter_remote(self) -> None:
        """On object storage: create ``_work/lock.json`` only if absent (S3 ``If-None-Match: *``,
        which S3, MinIO and moto honour), so of two drivers starting at once exactly one wins.
        A store without conditional writes falls back to check-then-write: a race of two
        drivers started within the same second is then not excluded (README: run one driver)."""
        url = self.run_dir.url_of(self.path)
        body = json.dumps(self._holder()).encode()
        for _ in range(2):
            try:
                if storage.put_if_absent(url, body):
                    return
            except NotImplementedError:
                if not storage.exists(url) or self.force:
                    storage.put_bytes(url, body)
                    return
            if self.force:
                storage.remove(url)
                continue
            try:
                held = json.loads(storage.read_bytes(url))
            except (OSError, ValueError):
                held = {}
            self._check_held(held, self.run_dir.location)
            storage.remove(url)  # its holder is dead: take it over
        raise RunFailed(f"could not take the lock {url}: another driver took it meanwhile")

    def __enter__(self) -> _Lock:
        if self.run_dir.url is not None:
            self._enter_remote()
            return self
        if self.path.exists() and not self.force:
            try:
                held = read_json(self.path)
            except (OSError, ValueError):
                held = {}
            where = self.path.parent.parent
            if held.get("host") != socket.gethostname():
                raise RunFailed(
                    f"{where} is locked by a winnow run on host {held.get('host', '?')!r} "
                    f"(pid {held.get('pid', '?')}), which this host cannot check: if that run is "
                    "no longer running, rerun with --force-unlock"
                )
            if _pid_alive(held.get("pid", -1), held.get("pid_started")):
                raise RunFailed(f"another winnow run (pid {held['pid']}) is writing {where}")
        atomic_write_json(
            self.path,
            {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _pid_started(os.getpid())},
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.run_dir.url is not None:
            storage.remove(self.run_dir.url_of(self.path))
            return
        self.path.unlink(missing_ok=True)


def _pid_started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_alive(pid: int, started: int | None = None) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _pid_started(pid)
    return started is None or now is None or now == started


def _clean_temp_files(run_dir: RunDir) -> None:
    """Temporary files of tasks killed mid-write (never read: they start with a dot)."""
    for base in (run_dir.data, run_dir.work, run_dir.root / "removed"):
        if base.exists():
            for tmp in base.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _check_plan(run_dir: RunDir, spec: PipelineSpec, shards: Callable[[], list[Shard]]) -> list[Shard]:
    """The shard list of this run: planned now, or the one a previous attempt recorded."""
    if run_dir.plan_file.exists():
        plan = read_json(run_dir.plan_file)
        if plan["config_hash"] != spec.config_hash():
            raise RunFailed(
                f"{run_dir.location} holds a run of a different configuration (config hash "
                f"{plan['config_hash']}, now {spec.config_hash()}): rerun with --fresh to start over, "
                "or choose another --output"
            )
        return [Shard(**s) for s in plan["shards"]]
    planned = shards()
    atomic_write_json(
        run_dir.plan_file,
        {"pipeline": spec.name, "config_hash": spec.config_hash(), "shards": [s.__dict__ for s in planned]},
    )
    run_dir.publish(run_dir.plan_file)
    return planned


def init_ray(address: str | None, num_cpus: int | None) -> Callable[[], None]:
    """Connect to a cluster (``address`` / ``RAY_ADDRESS``) or start a private local instance.

    A local instance keeps every file in a fresh temp dir and is shut down (and the dir removed)
    by the returned callable.  Usage stats are off: these machines may have no network.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return lambda: None
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        return ray.shutdown
    # Local: no auth token under ~/.ray, no dashboard, files in our temp dir only.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = tempfile.mkdtemp(prefix="winnow-ray-")
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        _temp_dir=tmp,
        object_store_memory=256 * 1024 * 1024,
        log_to_driver=False,
        logging_level="WARNING",
    )

    def stop() -> None:
        import shutil

        ray.shutdown()
        # Ray processes may still be closing their logs for a moment after shutdown() returns.
        for _ in range(5):
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.exists(tmp):
                break
            time.sleep(0.2)

    return stop


def run_pipeline(
    spec: PipelineSpec,
    output: str | Path | None = None,
    address: str | None = None,
    fresh: bool = False,
    num_cpus: int | None = None,
    progress: Callable[[str, int, int, int], None] | None = None,
    on_done: Callable[[RunResult], None] | None = None,
    force_unlock: bool = False,
    in_process: bool = False,
) -> RunResult:
    """Run (or resume) a pipeline; returns when every task finished, else raises ``RunFailed``.

    ``progress(phase_label, tasks_done, tasks_total, docs_out)`` is called as tasks finish, and
    ``on_done(result)`` once the run's files are written, before a local Ray is stopped.
    ``force_unlock`` takes over a lock whose holder this host cannot check (see ``_Lock``).
    ``in_process`` runs every task and barrier step in this process, one after another, without
    Ray: the same task code and files, for tests and for stepping through a stage in a debugger.
    """
    registry.load_stages()
    run_dir = RunDir(output or spec.output)
    if fresh:
        run_dir.clear()
    run_dir.work.mkdir(parents=True, exist_ok=True)
    with _Lock(run_dir, force=force_unlock):
        if run_dir.url is not None:
            run_dir.pull_bookkeeping()  # the store is the truth: only its markers count
        _clean_temp_files(run_dir)
        source = registry.SOURCES[spec.input.format](spec.input)
        source.start_ray = lambda: init_ray(address, num_cpus)
        try:
            shards = _check_plan(
                run_dir,
                spec,
                lambda: source.plan(
                    source.prepare(str(run_dir.root), str(spec.config_file.parent), spec.input_files)
                ),
            )
        except OSError as exc:  # an input gone or unreadable since validation (the error names it)
            raise RunFailed(f"planning the input failed: {storage.redact(str(exc))}") from None
        phases = split_phases(spec.stages)
        ray_up: list[Callable[[], None]] = []

        def ensure_ray() -> None:
            """Started only when a task is left to run, so a finished run resumes instantly."""
            if not ray_up:
                if in_process:
                    prepare_stages(run_dir, spec.stages)
                    ray_up.append(lambda: None)
                    return
                # stages' driver-side preparation overlaps Ray's start-up (seconds each)
                with ThreadPoolExecutor(1) as pool:
                    prepared = pool.submit(prepare_stages, run_dir, spec.stages)
                    ray_up.append(init_ray(address, num_cpus))
                    prepared.result()

        try:
            run, skipped, nodes = 0, 0, set()
            for phase in phases:
                last = phase is phases[-1]
                if phase.index == 0:
                    phase.tasks = [Task(i, last, shard=s) for i, s in enumerate(shards)]
                else:
                    phase.tasks = _tasks_after(run_dir, phases[phase.index - 1], last)
                    ensure_ray()
                    _run_barrier(spec, run_dir, phase, progress)
                r, s, n = _run_phase(spec, run_dir, phase, progress, ensure_ray, in_process)
                run, skipped, nodes = run + r, skipped + s, nodes | n
            stats = source.prepared_stats(str(run_dir.root)) + merge_stats(run_dir, phases)
            atomic_write_json(run_dir.stats_file, stats)
            run_dir.publish(run_dir.stats_file)
            _write_manifest(spec, run_dir, phases, stats)
            run_dir.publish(run_dir.manifest_file)
            _remove_intermediates(run_dir)
            result = RunResult(run_dir, stats, run, skipped, nodes)
            if on_done is not None:  # the user sees the results before Ray's ~1 s shutdown
                on_done(result)
        finally:
            for stop in ray_up:
                stop()
    return result


def prepare_input(
    spec: PipelineSpec,
    output: str | Path | None = None,
    fresh: bool = False,
    force_unlock: bool = False,
    address: str | None = None,
) -> list[dict]:
    """``winnow crawl``: only the input's ``Source.prepare`` step (a crawl), under the run
    directory's lock, resumable like a run; returns its stats entries."""
    registry.load_stages()
    run_dir = RunDir(output or spec.output)
    if fresh:
        run_dir.clear()
    run_dir.work.mkdir(parents=True, exist_ok=True)
    with _Lock(run_dir, force=force_unlock):
        source = registry.SOURCES[spec.input.format](spec.input)
        source.start_ray = lambda: init_ray(address, None)
        source.prepare(str(run_dir.root), str(spec.config_file.parent), spec.input_files)
        return source.prepared_stats(str(run_dir.root))


def _tasks_after(run_dir: RunDir, prev: Phase, last: bool) -> list[Task]:
    tasks = []
    for t in prev.tasks:
        marker = read_json(run_dir.marker(prev.index, t.index))
        if marker["rows"]:
            path = run_dir.phase_data(prev.index, False) / f"{part_name(t.index)}.parquet"
            tasks.append(Task(t.index, last, part=str(path)))
    return tasks


def _remove_intermediates(run_dir: RunDir) -> None:
    """Once the run is complete (stats and manifest written), remove its bulk intermediate files:
    the parts of earlier phases (``_work/phase-K/data``) and the files barrier stages kept under
    ``_work/stages/`` (signatures, samples, ...).  JSON bookkeeping stays: markers, the plan, step
    results and barrier summaries are all a rerun of a finished run reads (it runs nothing)."""
    for data in run_dir.work.glob("phase-*/data"):
        shutil.rmtree(data, ignore_errors=True)
    stages = run_dir.work / "stages"
    if stages.is_dir():
        for path in sorted(stages.rglob("*"), reverse=True):  # files before their folders
            if path.is_file() and path.suffix != ".json":
                path.unlink(missing_ok=True)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    if run_dir.url is not None:
        for rel in storage.list_files(f"{run_dir.url}/_work"):
            top = rel.split("/")
            if (top[0].startswith("phase-") and len(top) > 1 and top[1] == "data") or (
                top[0] == "stages" and not rel.endswith(".json")
            ):
                storage.remove(f"{run_dir.url}/_work/{rel}")


def _run_barrier(spec: PipelineSpec, run_dir: RunDir, phase: Phase, progress: Callable | None = None) -> None:
    done = run_dir.phase_dir(phase.index) / "barrier.json"
    if done.exists():
        return
    stage = phase.barrier.build()  # type: ignore[union-attr]
    work = run_dir.fetch(stage_work_dir(run_dir, stage.name))
    work.mkdir(parents=True, exist_ok=True)
    stage.work = work
    for task in phase.tasks:  # a barrier's driver code may read every part (object storage: fetched)
        run_dir.fetch(task.part)  # type: ignore[arg-type]
    ctx = BarrierContext(spec, run_dir, phase.index, list(phase.tasks), work, map_items, progress)
    stage.run_barrier(ctx)
    # what the barrier wrote on the driver (its work folder, dedup/, tokenizer/, tokens/, ...)
    run_dir.publish_tree(run_dir.root, exclude=("data", "removed", "_work"))
    run_dir.publish_tree(run_dir.work / "stages")
    atomic_write_json(done, {"stage": stage.name, "extra": stage.stats.extra, "seconds": stage.stats.seconds})
    run_dir.publish(done)


def _run_phase(
    spec: PipelineSpec,
    run_dir: RunDir,
    phase: Phase,
    progress: Callable | None,
    ensure_ray: Callable,
    in_process: bool = False,
) -> tuple[int, int, set[str]]:
    label = f"phase {phase.index}" if phase.index else "running"
    finished = {t.index for t in phase.tasks if run_dir.marker(phase.index, t.index).exists()}
    todo = [t for t in phase.tasks if t.index not in finished]
    # Largest inputs first, so that a big shard does not start last and leave the other CPUs idle.
    todo.sort(key=lambda t: -_task_bytes(run_dir, t))
    skipped = len(finished)
    docs = sum(read_json(run_dir.marker(phase.index, i))["rows"] for i in finished)
    done = skipped
    if progress:
        progress(label, done, len(phase.tasks), docs)
    if not todo:
        return 0, skipped, set()
    nodes: set[str] = set()
    for _task, marker in _dispatch(spec, run_dir, phase, todo, ensure_ray, in_process):
        nodes.add(marker["node_id"])
        done += 1
        docs += marker["rows"]
        if progress:
            progress(label, done, len(phase.tasks), docs)
    return len(todo), skipped, nodes - {""}


def _dispatch(
    spec: PipelineSpec,
    run_dir: RunDir,
    phase: Phase,
    todo: list[Task],
    ensure_ray: Callable,
    in_process: bool,
) -> Iterator[tuple[Task, dict]]:
    """Run the phase's tasks; yields ``(task, marker)`` as each finishes."""
    if phase.links_parts:  # no stage work to do: the driver links the parts itself
        for task in todo:
            yield task, link_task(run_dir, phase, task)
        return
    ensure_ray()
    if in_process:
        for task in todo:
            try:
                marker = run_task(spec, run_dir, phase, task)
            except Exception as exc:
                raise RunFailed(_describe_failure(run_dir, phase, task, exc, 0)) from exc
            yield task, marker
        return
    import ray

    res = task_resources(phase.stages)
    remote = ray.remote(run_task).options(
        num_cpus=res.cpus,
        num_gpus=res.gpus,
        memory=res.memory_mb * 1024 * 1024,
        max_retries=spec.max_retries,
        retry_exceptions=True,
    )
    spec_ref = ray.put(spec)
    pending = {remote.remote(spec_ref, run_dir, phase, t): t for t in todo}
    for task, marker, exc in _as_completed(pending):
        if exc is not None:
            raise RunFailed(_describe_failure(run_dir, phase, task, exc, spec.max_retries)) from None
        if run_dir.url is not None:
            run_dir.fetch(run_dir.marker(phase.index, task.index))  # uploaded by the task, or missing
        if not run_dir.marker(phase.index, task.index).exists():
            raise RunFailed(
                f"task {part_name(task.index)} finished on node {marker['node_id']} "
                f"(host {marker['host']}) but its files are not visible here: the run "
                f"directory {run_dir.root} must be on storage shared by every node"
            )
        yield task, marker


def _task_bytes(run_dir: RunDir, task: Task) -> int:
    if task.part is not None:
        return run_dir.size_of(task.part)
    shard = task.shard
    assert shard is not None
    if shard.unit != "bytes":  # row-group ranges: the file size is a fair enough proxy
        return storage.size(shard.path)
    end = shard.end if shard.end is not None else storage.size(shard.path)
    return end - shard.start


def _describe_failure(run_dir: RunDir, phase: Phase, task: Task, exc: Exception, retries: int) -> str:
    name = part_name(task.index)
    return _failure_message(
        run_dir,
        f"phase-{phase.index}-{name}",
        f"task {name} (phase {phase.index}, input {task.describe()})",
        exc,
        retries,
    )


def _failure_message(run_dir: RunDir, log_name: str, title: str, exc: Exception, retries: int) -> str:
    """Keep the full traceback under ``_work/errors/`` and say in one line what failed and why."""
    log = run_dir.work / "errors" / f"{log_name}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(storage.redact("".join(traceback.format_exception(exc))))
    where = str(log)
    if run_dir.url is not None:
        with contextlib.suppress(OSError):  # the failure message matters more than its upload
            run_dir.publish(log)
            where = f"{run_dir.url_of(log)} (and {log})"
    cause = getattr(exc, "cause", None) or exc
    short = storage.redact(f"{type(cause).__name__}: {cause}").strip().splitlines()
    return (
        f"{title} failed after {retries + 1} attempt(s): {short[-1] if short else type(exc).__name__}\n"
        f"full traceback: {where}"
    )


def merge_stats(run_dir: RunDir, phases: list[Phase]) -> list[dict]:
    """Sum every task's stats per stage, in pipeline order (read first)."""
    merged: dict[str, StageStats] = {}
    for phase in phases:
        for t in sorted(phase.tasks, key=lambda t: t.index):
            for entry in read_json(run_dir.marker(phase.index, t.index))["stats"]:
                part = StageStats.from_dict(entry)
                merged.setdefault(part.name, StageStats(part.name)).merge(part)
        if phase.barrier is not None:
            barrier = read_json(run_dir.phase_dir(phase.index) / "barrier.json")
            merged.setdefault(phase.barrier.name, StageStats(phase.barrier.name)).merge(
                StageStats(phase.barrier.name, extra=barrier["extra"], seconds=barrier.get("seconds", 0.0))
            )
    order = ["read"] + [s.name for p in phases for s in p.stages]
    return [merged[name].to_dict() for name in order if name in merged]


def _write_manifest(spec: PipelineSpec, run_dir: RunDir, phases: list[Phase], stats: list[dict]) -> None:
    parts = []
    for t in sorted(phases[-1].tasks, key=lambda t: t.index):
        rows = read_json(run_dir.marker(phases[-1].index, t.index))["rows"]
        if rows:
            parts.append({"path": f"data/{part_name(t.index)}.parquet", "rows": rows})
    atomic_write_json(
        run_dir.manifest_file,
        {
            "pipeline": spec.name,
            "winnow_version": metadata.version("winnow"),
            "config_file": str(spec.config_file),
            "config_hash": spec.config_hash(),
            "config": spec.resolved(),
            "inputs": [{"path": f, "bytes": storage.size(f)} for f in spec.input_files],
            "outputs": {"data": parts},
            "counts": {
                "docs_in": stats[0]["docs_in"] if stats else 0,
                "docs_out": sum(p["rows"] for p in parts),
                "parts": len(parts),
            },
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
