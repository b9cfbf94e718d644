"""The run directory: where every file of a run lives, and how files are written safely.

Every file is written to a temporary name in the same directory and renamed into place, so a
reader (or a resumed run) sees a whole file or none.  A task is finished exactly when its marker
``_work/phase-K/done/part-NNNNN.json`` exists; the marker is written last, after the part and the
dropped-row samples, and holds the task's stats.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1024


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

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
        for f in (self.stats_file, self.manifest_file):
            f.unlink(missing_ok=True)


class PartWriter:
    """Writes batches to one zstd Parquet part in row groups of ``ROW_GROUP_ROWS``, atomically.

    Batches may differ in schema only where a cast makes them agree (e.g. an all-null column);
    the first batch fixes the schema.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, batch.schema, compression="zstd")
        elif batch.schema != self.writer.schema:
            try:
                batch = batch.select(self.writer.schema.names).cast(self.writer.schema)
            except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise ValueError(
                    f"a batch for {self.path.name} has schema {batch.schema} but the part was "
                    f"started with {self.writer.schema}: {exc}"
                ) from exc
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self.pending_rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int) -> None:
        table = pa.Table.from_batches(self.pending)
        head, rest = table.slice(0, n), table.slice(n)
        self.writer.write_table(head, row_group_size=ROW_GROUP_ROWS)  # type: ignore[union-attr]
        self.pending = rest.to_batches()
        self.pending_rows = rest.num_rows

    def close(self) -> int:
        """Finish the part and rename it into place; returns rows written (0: no file)."""
        if self.writer is None:
            self.path.unlink(missing_ok=True)  # a stale part of an earlier attempt
            return 0
        if self.pending_rows:
            self._flush(self.pending_rows)
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.rows

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_table_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    os.replace(tmp, path)
