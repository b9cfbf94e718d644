"""The run directory: where every file of a run lives.

Every file is written through ``pipeline.atomic`` (temp name in the same directory, fsync,
rename), so a reader (or a resumed run) sees a whole file or none.  A task is finished exactly when its marker
``_work/phase-K/done/part-NNNNN.json`` exists; the marker is written last, after the part and the
dropped-row samples, and holds the task's stats.

**On object storage** (``output: s3://bucket/prefix``, any fsspec URL) there is no rename, and
nodes share no disk.  Each process then works in a node-local mirror of the run directory
(``scratch``: ``$WINNOW_SCRATCH`` or the temp dir, ``winnow-scratch/<hash of the URL>``): files are
written there exactly as for a local run, then uploaded (``publish``) as whole objects, each
once (an S3 PUT is atomic: a reader sees the object whole or not at all), a task's marker after
its part and samples.  The store is the truth: a driver starts from an empty mirror, downloads
the JSON bookkeeping (plan, markers, barrier and step results), and resumes trusting only the
markers it finds there; a part or file without its marker is rewritten (tasks are deterministic,
so a rewrite is identical).  Paths handed between processes (a task's ``part``, a barrier step's
arguments and results) are the driver's mirror paths; ``localize`` maps them into this process's
mirror and ``fetch`` downloads what is missing there (once per node).  Cost: every byte a task
writes is uploaded once and downloaded by each node that reads it (the next phase's task, and the
driver for a barrier stage that inspects every part: one download of that phase's parts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.atomic import ROW_GROUP_ROWS, atomic_file, commit, temp_path

# Written last, in this order, when a tree is published: what a reader trusts is uploaded after
# what it points to (a marker after its part, the manifest after everything).
_LAST = ("done", "barrier.json", "stats.json", "manifest.json")


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def scratch_dir(url: str) -> Path:
    """This node's mirror of the run directory at ``url``."""
    base = os.environ.get("WINNOW_SCRATCH") or os.path.join(tempfile.gettempdir(), "winnow-scratch")
    return Path(base).resolve() / hashlib.sha256(url.encode()).hexdigest()[:16]


class RunDir:
    def __init__(self, root: str | Path, scratch: Path | None = None) -> None:
        """``root``: a local path or a URL; ``scratch``: this process's mirror of a URL (default
        ``scratch_dir(url)``)."""
        self.url: str | None = None
        if storage.is_remote(str(root)):
            self.url = str(root).rstrip("/")
            self.root = Path(scratch) if scratch is not None else scratch_dir(self.url)
        else:
            self.root = Path(root).resolve()
        self.origin = self.root  # the driver's root: paths passed between processes are under it

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.url is not None:  # unpickled in a task: this node's own mirror
            self.root = scratch_dir(self.url)

    @property
    def location(self) -> str:
        """Where the run directory is, for messages: the URL, or the local path."""
        return self.url or str(self.root)

    # object storage ----------------------------------------------------------------------------
    def localize(self, path: str | Path) -> Path:
        """A path under the driver's root, as a path in this process's mirror."""
        p = Path(path)
        if self.url is not None and self.origin != self.root and p.is_relative_to(self.origin):
            return self.root / p.relative_to(self.origin)
        return p

    def localize_all(self, obj: Any) -> Any:
        """``localize`` every string path under the driver's root inside a JSON-like value."""
        return _map_paths(obj, self.origin, self.root) if self.url and self.origin != self.root else obj

    def originate_all(self, obj: Any) -> Any:
        """The inverse of ``localize_all``: this mirror's paths as the driver's."""
        return _map_paths(obj, self.root, self.origin) if self.url and self.origin != self.root else obj

    def url_of(self, path: str | Path) -> str:
        assert self.url is not None
        rel = self.localize(path).relative_to(self.root).as_posix()
        return f"{self.url}/{rel}" if rel != "." else self.url

    def publish(self, *paths: str | Path) -> None:
        """Upload these finished local files (in the order given) to the store; no-op locally."""
        if self.url is None:
            return
        for path in paths:
            local = self.localize(path)
            storage.put_file(str(local), self.url_of(local))

    def publish_tree(self, folder: str | Path, exclude: tuple[str, ...] = ()) -> None:
        """Upload every file under ``folder`` that the store lacks or holds at another size;
        markers, barrier results, stats and manifest last.  ``exclude``: top-level names skipped."""
        if self.url is None:
            return
        local = self.localize(folder)
        if not local.is_dir():
            return
        remote = storage.list_files(self.url_of(local))
        todo = []
        for dirpath, dirnames, filenames in os.walk(local):
            if Path(dirpath) == local:
                dirnames[:] = [d for d in dirnames if d not in exclude]
            for name in filenames:
                if name.startswith(".") and ".tmp" in name:
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(local).as_posix()
                if name in exclude and Path(dirpath) == local:
                    continue
                if remote.get(rel) != path.stat().st_size:
                    todo.append(path)
        todo.sort(key=lambda p: max((i + 1 for i, n in enumerate(_LAST) if n in p.parts), default=0))
        self.publish(*todo)

    def fetch(self, path: str | Path) -> Path:
        """This process's copy of a file or folder of the run (downloaded if missing here);
        locally (no URL) the path itself."""
        local = self.localize(path)
        if self.url is None:
            return local
        url = self.url_of(local)
        if local.is_file():
            return local
        fs, key = storage.filesystem(url)
        if storage.retrying(url, lambda: fs.isfile(key)):
            _download(url, local)
            return local
        for rel, size in storage.list_files(url).items():
            target = local / rel
            if not (target.is_file() and target.stat().st_size == size):
                _download(f"{url}/{rel}", target)
        return local

    def exists(self, path: str | Path) -> bool:
        """Does the run's file exist (in the store, for a run on object storage)?"""
        if self.url is None:
            return Path(path).exists()
        return storage.exists(self.url_of(path))

    def size_of(self, path: str | Path) -> int:
        local = self.localize(path)
        if local.is_file() or self.url is None:
            return local.stat().st_size
        return storage.size(self.url_of(local))

    def pull_bookkeeping(self) -> None:
        """Start a driver from the store: an empty mirror, then every JSON file under ``_work``
        (the plan, markers, barrier and step results; not the lock).  Local leftovers of a
        killed driver are dropped, so that only markers in the store count."""
        assert self.url is not None
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = [
            r for r in storage.list_files(f"{self.url}/_work") if r.endswith(".json") and r != "lock.json"
        ]
        # one small GET per marker: 16 at a time (10,000 tasks: ~10 s on S3 rather than minutes)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda rel: _download(f"{self.url}/_work/{rel}", self.work / rel), wanted))

    # layout -------------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def work(self) -> Path:
        return self.root / "_work"

    @property
    def stats_file(self) -> Path:
        return self.root / "stats.json"

    @property
    def manifest_file(self) -> Path:
        return self.root / "manifest.json"

    @property
    def plan_file(self) -> Path:
        return self.work / "plan.json"

    def phase_dir(self, phase: int) -> Path:
        return self.work / f"phase-{phase}"

    def phase_data(self, phase: int, last: bool) -> Path:
        """Where phase ``phase`` writes its parts: ``data/`` for the last phase."""
        return self.data if last else self.phase_dir(phase) / "data"

    def marker(self, phase: int, index: int) -> Path:
        return self.phase_dir(phase) / "done" / f"{part_name(index)}.json"

    def removed(self, stage: str, index: int) -> Path:
        return self.root / "removed" / stage / f"{part_name(index)}.parquet"

    def clear(self) -> None:
        """``--fresh``: remove everything a run writes (and nothing else in the directory)."""
        for name in ("data", "_work", "removed", "dedup", "tokenizer", "tokens"):
            shutil.rmtree(self.root / name, ignore_errors=True)
            if self.url is not None:
                storage.remove(f"{self.url}/{name}", recursive=True)
        for f in (self.stats_file, self.manifest_file):
            f.unlink(missing_ok=True)
            if self.url is not None:
                storage.remove(self.url_of(f))


def _download(url: str, local: Path) -> None:
    """Download through ``atomic_file``: a killed download leaves no partial file."""
    with atomic_file(local) as tmp:
        storage.download(url, str(tmp))


def _map_paths(obj: Any, src: Path, dst: Path) -> Any:
    if isinstance(obj, dict):
        return {_map_paths(k, src, dst): _map_paths(v, src, dst) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_paths(v, src, dst) for v in obj)
    if isinstance(obj, (str, Path)) and Path(obj).is_absolute() and Path(obj).is_relative_to(src):
        out = dst / Path(obj).relative_to(src)
        return str(out) if isinstance(obj, str) else out
    return obj


class PartWriter:
    """Writes batches to one zstd Parquet part in row groups of ``ROW_GROUP_ROWS``, atomically.

    Sources such as JSON Lines do not know their columns up front: a field may first appear, or
    first be non-null, in a later batch.  So the file's schema is decided late: batches are held
    until ``SCHEMA_BUFFER_BYTES`` (or the end of the part) and the file is opened with the
    unified schema of everything seen so far (a column missing from a batch becomes nulls, an
    all-null column takes the type it has elsewhere).  A batch after that point that brings a new
    column or an incompatible type is an error naming the column.
    """

    SCHEMA_BUFFER_BYTES = 128 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temp_path(path)
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.writer is not None:
            batch = self._conform(batch)
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self.writer is None and self.pending_bytes >= self.SCHEMA_BUFFER_BYTES:
            self._open()
        if self.writer is not None:
            while self.pending_rows >= ROW_GROUP_ROWS:
                self._flush(ROW_GROUP_ROWS)

    def _open(self) -> None:
        try:
            self.schema = pa.unify_schemas([b.schema for b in self.pending], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{self.path.name}: rows have incompatible column types: {exc}") from exc
        self.pending = [self._conform(b) for b in self.pending]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        schema = self.schema
        assert schema is not None
        if batch.schema == schema:
            return batch
        new = [n for n in batch.schema.names if n not in schema.names]
        if new:
            raise ValueError(
                f"{self.path.name}: column(s) {new} first appear after the part's schema was fixed "
                f"({self.SCHEMA_BUFFER_BYTES >> 20} MiB in); declare them in earlier records or use "
                "smaller input shards"
            )
        columns = []
        for field in schema:
            if field.name in batch.schema.names:
                col = batch.column(field.name)
                try:
                    columns.append(col.cast(field.type) if col.type != field.type else col)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(
                        f"{self.path.name}: column {field.name!r} is {col.type} here but {field.type} "
                        f"earlier: {exc}"
                    ) from exc
            else:
                columns.append(pa.nulls(batch.num_rows, field.type))
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def _flush(self, n: int) -> None:
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        head, rest = table.slice(0, n), table.slice(n)
        self.writer.write_table(head, row_group_size=ROW_GROUP_ROWS)  # type: ignore[union-attr]
        self.pending = rest.to_batches()
        self.pending_rows = rest.num_rows
        self.pending_bytes = 0

    def close(self) -> int:
        """Finish the part and rename it into place; returns rows written (0: no file)."""
        if self.rows == 0:
            self.path.unlink(missing_ok=True)  # a stale part of an earlier attempt
            return 0
        if self.writer is None:
            self._open()
        while self.pending_rows:
            self._flush(min(self.pending_rows, ROW_GROUP_ROWS))
        self.writer.close()  # type: ignore[union-attr]
        commit(self.tmp, self.path)
        return self.rows

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)
