"""JSON Lines and Parquet readers: documents that are already text.

``text_field`` and ``id_field`` name the source columns (renamed to ``text`` / ``id``); every other
field is carried through as a column.  A record without an id gets ``<file name>:<line or row>``,
stable across runs.  Bad records are counted, never fatal: a line that is not JSON
(``invalid_json``), a record that is not an object, a missing or non-string text
(``missing_text`` / ``invalid_text``).

Splitting: an uncompressed ``.jsonl`` larger than ``split_bytes`` is read by several tasks, each
owning the lines that *start* in its byte range; a Parquet file is split by row groups.
Compressed JSON Lines (``.gz``, ``.zst``, ...; pyarrow detects the codec) are one task per file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.registry import register_source
from pipeline.source import InputParams, MiB, Shard, Source, byte_range_shards

COMPRESSED = (".gz", ".bz2", ".zst", ".zstd", ".lz4", ".xz")


class TabularParams(InputParams):
    text_field: str = "text"
    id_field: str = "id"
    split_bytes: int = Field(64 * MiB, ge=4096, description="target bytes (or row-group bytes) per task")


class JsonlParams(TabularParams):
    format: Literal["jsonl"] = "jsonl"


class ParquetParams(TabularParams):
    format: Literal["parquet"] = "parquet"


class _TabularSource(Source):
    def _row(self, record: object, fallback_id: str) -> dict | None:
        """Map one source record to a row, or count why it is not a document."""
        p = self.params
        self.stats.docs_in += 1
        if not isinstance(record, dict):
            self.stats.dropped["not_an_object"] += 1
            return None
        text = record.get(p.text_field)
        if text is None:
            self.stats.dropped["missing_text"] += 1
            return None
        if not isinstance(text, str):
            self.stats.dropped["invalid_text"] += 1
            return None
        row = {k: v for k, v in record.items() if k not in (p.text_field, p.id_field)}
        doc_id = record.get(p.id_field)
        row["id"] = fallback_id if doc_id is None else str(doc_id)
        row["text"] = text
        self.stats.docs_out += 1
        return row

    def _emit(self, rows: Iterator[dict | None], path: str) -> Iterator[pa.RecordBatch]:
        pending: list[dict] = []
        nbytes = 0
        for row in rows:
            if row is None:
                continue
            pending.append(row)
            nbytes += len(row["text"])
            if len(pending) >= self.BATCH_ROWS or nbytes >= self.BATCH_BYTES:
                yield self._to_batch(pending, path)
                pending, nbytes = [], 0
        if pending:
            yield self._to_batch(pending, path)

    def _to_batch(self, rows: list[dict], path: str) -> pa.RecordBatch:
        try:
            batch = pa.RecordBatch.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{path}: records have columns of mixed types ({exc})") from exc
        order = ["id", "text"] + [c for c in batch.schema.names if c not in ("id", "text")]
        batch = batch.select(order)
        self.stats.bytes_out += int(pa.compute.sum(pa.compute.binary_length(batch.column("text"))).as_py() or 0)
        return batch


@register_source
class JsonlSource(_TabularSource):
    format = "jsonl"
    Params = JsonlParams

    def plan(self, files: list[str]) -> list[Shard]:
        shards: list[Shard] = []
        for path in files:
            if path.endswith(COMPRESSED):
                shards.append(Shard(path))
            else:
                shards += byte_range_shards(path, self.params.split_bytes)
        return shards

    def read(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        yield from self._emit(self._records(shard), shard.path)

    def _records(self, shard: Shard) -> Iterator[dict | None]:
        name = os.path.basename(shard.path)
        if shard.path.endswith(COMPRESSED):
            stream = pa.input_stream(shard.path, compression="detect")
            self.stats.bytes_in += os.path.getsize(shard.path)
            for lineno, line in enumerate(_lines(stream), 1):
                yield self._parse(line, f"{name}:{lineno}")
            return
        end = shard.end if shard.end is not None else os.path.getsize(shard.path)
        self.stats.bytes_in += end - shard.start
        with open(shard.path, "rb") as f:
            pos = shard.start
            if pos > 0:  # the line that straddles our start belongs to the previous shard
                f.seek(pos - 1)
                pos += len(f.readline()) - 1
            while pos < end:
                line = f.readline()
                if not line:
                    break
                # Byte offsets identify lines independently of how the file was split.
                yield self._parse(line, f"{name}@{pos}")
                pos += len(line)

    def _parse(self, line: bytes, fallback_id: str) -> dict | None:
        if not line.strip():
            return None  # blank lines are not records
        try:
            record = json.loads(line)
        except ValueError:  # includes UnicodeDecodeError
            self.stats.docs_in += 1
            self.stats.dropped["invalid_json"] += 1
            return None
        return self._row(record, fallback_id)


def _lines(stream) -> Iterator[bytes]:
    rest = b""
    while chunk := stream.read(4 * MiB):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


@register_source
class ParquetSource(_TabularSource):
    format = "parquet"
    Params = ParquetParams

    def plan(self, files: list[str]) -> list[Shard]:
        shards: list[Shard] = []
        for path in files:
            meta = pq.ParquetFile(path).metadata
            start, acc = 0, 0
            for rg in range(meta.num_row_groups):
                acc += meta.row_group(rg).total_byte_size
                if acc >= self.params.split_bytes and rg + 1 < meta.num_row_groups:
                    shards.append(Shard(path, start, rg + 1, unit="row_groups"))
                    start, acc = rg + 1, 0
            shards.append(Shard(path, start, None if start == 0 else meta.num_row_groups, unit="row_groups"))
        return shards

    def read(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        pf = pq.ParquetFile(shard.path)
        if self.params.text_field not in pf.schema_arrow.names:
            raise ValueError(
                f"{shard.path}: no column {self.params.text_field!r} (input.text_field); "
                f"columns: {pf.schema_arrow.names}"
            )
        groups = list(range(shard.start, shard.end if shard.end is not None else pf.metadata.num_row_groups))
        self.stats.bytes_in += sum(pf.metadata.row_group(g).total_compressed_size for g in groups)
        name = os.path.basename(shard.path)
        first_row = sum(pf.metadata.row_group(g).num_rows for g in range(shard.start))

        def records() -> Iterator[dict | None]:
            n = first_row
            for batch in pf.iter_batches(batch_size=self.BATCH_ROWS, row_groups=groups):
                for record in batch.to_pylist():
                    yield self._row(record, f"{name}#{n}")
                    n += 1

        yield from self._emit(records(), shard.path)
