"""JSON Lines and Parquet readers: documents that are already text.

``text_field`` and ``id_field`` name the source columns (renamed to ``text`` / ``id``); every other
field is carried through as a column.  A record without an id gets ``NAME@BYTE_OFFSET``
(``.jsonl``), ``NAME:LINE`` (compressed JSON Lines) or ``NAME#ROW`` (Parquet): stable across runs
and splits.  Bad records are counted, never fatal: a line that is not JSON
(``invalid_json``), a record that is not an object, a missing or non-string text
(``missing_text`` / ``invalid_text``).

Every field seen in a batch becomes a column (a field missing from a record is null there).
JSON Lines columns are typed per batch from their values; Parquet columns keep the file's types.

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
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from pipeline import storage
from pipeline.registry import register_source
from pipeline.source import InputParams, MiB, Shard, Source, byte_range_shards

COMPRESSED = (".gz", ".bz2", ".zst", ".zstd", ".lz4", ".xz")


class TabularParams(InputParams):
    text_field: str = Field("text", description="field holding the document text (becomes column text)")
    id_field: str = Field("id", description="field holding the document id (becomes column id)")
    split_bytes: int = Field(64 * MiB, ge=4096, description="target bytes (or row-group bytes) per task")


class JsonlParams(TabularParams):
    format: Literal["jsonl"] = "jsonl"


class ParquetParams(TabularParams):
    format: Literal["parquet"] = "parquet"


def _text_bytes(batch: pa.RecordBatch) -> int:
    return int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)


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

    def _to_batch(self, rows: list[dict], path: str) -> pa.RecordBatch:
        # Columns are the union of the rows' fields (from_pylist alone would keep only the first
        # row's keys and silently lose fields that appear later).
        names = ["id", "text"]
        seen = set(names)
        for row in rows:
            for k in row:
                if k not in seen:
                    seen.add(k)
                    names.append(k)
        try:
            batch = pa.RecordBatch.from_pydict({k: [row.get(k) for row in rows] for k in names})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{path}: records have columns of mixed types ({exc})") from exc
        self.stats.bytes_out += _text_bytes(batch)
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
        yield from self.batches(self._records(shard), "text", lambda rows: self._to_batch(rows, shard.path))

    def _records(self, shard: Shard) -> Iterator[dict | None]:
        name = os.path.basename(shard.path)
        if shard.path.endswith(COMPRESSED):
            self.stats.bytes_in += storage.size(shard.path)
            with self.open(shard.path, block_size=4 * MiB) as f:
                # a local file keeps pyarrow's native reader (no Python file in between)
                source = f if storage.is_remote(shard.path) else shard.path
                stream = pa.input_stream(source, compression=pa.Codec.detect(shard.path).name)
                for lineno, line in enumerate(_lines(stream), 1):
                    yield self._parse(line, f"{name}:{lineno}")
            return
        end = shard.end if shard.end is not None else storage.size(shard.path)
        self.stats.bytes_in += end - shard.start
        with self.open(shard.path) as f:
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
        except (ValueError, RecursionError):  # ValueError includes UnicodeDecodeError
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
    """Vectorised: each Arrow batch is masked and renamed, other columns keep their types."""

    format = "parquet"
    Params = ParquetParams

    def plan(self, files: list[str]) -> list[Shard]:
        shards: list[Shard] = []
        for path in files:
            if storage.is_remote(path):
                with storage.open_input(path) as f:
                    meta = pq.ParquetFile(f).metadata
            else:
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
        if not storage.is_remote(shard.path):
            yield from self._read(shard, pq.ParquetFile(shard.path))  # pyarrow's native local reader
            return
        with self.open(shard.path, block_size=4 * MiB) as f:
            yield from self._read(shard, pq.ParquetFile(f))

    def _read(self, shard: Shard, pf: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
        p = self.params
        names = pf.schema_arrow.names
        if p.text_field not in names:
            raise ValueError(f"{shard.path}: no column {p.text_field!r} (input.text_field); columns: {names}")
        groups = list(range(shard.start, shard.end if shard.end is not None else pf.metadata.num_row_groups))
        self.stats.bytes_in += sum(_compressed_size(pf.metadata.row_group(g)) for g in groups)
        if not groups:
            return
        name = os.path.basename(shard.path)
        first = sum(pf.metadata.row_group(g).num_rows for g in range(shard.start))
        others = [c for c in names if c not in (p.text_field, p.id_field)]
        for batch in pf.iter_batches(batch_size=self.BATCH_ROWS, row_groups=groups):
            out = self._convert(batch, others, name, first)
            first += batch.num_rows
            if out is not None:
                self.stats.bytes_out += _text_bytes(out)
                yield out

    def _convert(
        self, batch: pa.RecordBatch, others: list[str], name: str, first: int
    ) -> pa.RecordBatch | None:
        p = self.params
        n = batch.num_rows
        self.stats.docs_in += n
        text = batch.column(p.text_field)
        present = pc.is_valid(text)
        n_present = int(pc.sum(present).as_py() or 0)
        if n - n_present:
            self.stats.dropped["missing_text"] += n - n_present
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            if n_present:
                self.stats.dropped["invalid_text"] += n_present
            return None
        if not n_present:
            return None
        if p.id_field in batch.schema.names:
            ids = _ids_as_strings(batch.column(p.id_field))
        else:
            ids = pa.nulls(n, pa.string())
        if ids.null_count:
            fallback = pa.array([f"{name}#{first + i}" for i in range(n)], pa.string())
            ids = pc.coalesce(ids, fallback)
        columns = [ids, pc.cast(text, pa.string()), *(batch.column(c) for c in others)]
        out = pa.RecordBatch.from_arrays(columns, names=["id", "text", *others])
        if n_present < n:
            out = out.filter(present)
        self.stats.docs_out += out.num_rows
        return out


def _compressed_size(rg) -> int:
    """Bytes a row group takes in the file (``RowGroupMetaData`` has only the uncompressed total)."""
    return sum(rg.column(i).total_compressed_size for i in range(rg.num_columns))


def _ids_as_strings(col: pa.Array) -> pa.Array:
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
