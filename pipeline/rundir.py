"""The run directory: where every file of a run lives.

Every file is written through ``pipeline.atomic`` (temp name in the same directory, fsync,
rename), so a reader (or a resumed run) sees a whole file or none.  A task is finished exactly when its marker
``_work/phase-K/done/part-NNNNN.json`` exists; the marker is written last, after the part and the
dropped-row samples, and holds the task's stats.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import ROW_GROUP_ROWS, commit, temp_path


def part_name(index: int) -> str:
    return f"part-{index:05d}"


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
