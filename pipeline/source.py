"""Input readers: split input files into shards (one Ray task each) and read a shard as batches.

A reader is the first entry of ``stats.json`` (named ``read``): ``docs_in`` counts the records it
saw, ``docs_out`` the documents it passed on, and ``dropped`` why the others were not documents
(other WARC record types, corrupt records, invalid JSON lines, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from pipeline.stage import Params, StageStats

MiB = 1024 * 1024


class InputParams(Params):
    format: str = Field(description="the input format (a registered reader)")
    paths: list[str] = Field(
        min_length=1, description="input files or glob patterns, relative to the config file"
    )


@dataclass(frozen=True)
class Shard:
    """One task's share of the input: a whole file, or a byte / row-group range of it."""

    path: str
    start: int = 0
    end: int | None = None  # exclusive; None = to the end of the file
    unit: str = "bytes"  # "bytes" or "row_groups"

    def describe(self) -> str:
        if self.start == 0 and self.end is None:
            return self.path
        return f"{self.path} [{self.unit} {self.start}:{'' if self.end is None else self.end}]"


def byte_range_shards(path: str, split_bytes: int) -> list[Shard]:
    """Split a file into ranges of ~``split_bytes``; each reader resynchronises at its start."""
    size = os.path.getsize(path)
    if size <= split_bytes:
        return [Shard(path)]
    bounds = list(range(0, size, split_bytes))
    return [Shard(path, s, e if e < size else None) for s, e in zip(bounds, [*bounds[1:], size])]


class Source:
    """Base class of input readers, registered by ``format`` (the ``input.format`` value)."""

    format: ClassVar[str] = ""
    Params: ClassVar[type[InputParams]] = InputParams
    # Documents per batch handed to the stages; readers also cut a batch at BATCH_BYTES so that a
    # few huge pages cannot overflow Arrow's 2 GiB per-array string offsets.
    BATCH_ROWS: ClassVar[int] = 256
    BATCH_BYTES: ClassVar[int] = 64 * MiB

    def __init__(self, params: InputParams) -> None:
        self.params = params
        self.stats = StageStats("read")

    def plan(self, files: list[str]) -> list[Shard]:
        return [Shard(f) for f in files]

    def read(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def batches(
        self,
        rows: Iterable[dict | None],
        payload: str,
        to_batch: Callable[[list[dict]], pa.RecordBatch],
    ) -> Iterator[pa.RecordBatch]:
        """Group rows (``None`` = not a document) into batches of ``BATCH_ROWS`` rows, cut early
        at ``BATCH_BYTES`` characters of the ``payload`` column."""
        pending: list[dict] = []
        size = 0
        for row in rows:
            if row is None:
                continue
            pending.append(row)
            size += len(row[payload])
            if len(pending) >= self.BATCH_ROWS or size >= self.BATCH_BYTES:
                yield to_batch(pending)
                pending, size = [], 0
        if pending:
            yield to_batch(pending)
