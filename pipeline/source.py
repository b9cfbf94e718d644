"""Input readers: split input files into shards (one Ray task each) and read a shard as batches.

A reader is the first entry of ``stats.json`` (named ``read``): ``docs_in`` counts the records it
saw, ``docs_out`` the documents it passed on, and ``dropped`` why the others were not documents
(other WARC record types, corrupt records, invalid JSON lines, ...).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, ClassVar

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline import storage
from pipeline.stage import Params, StageStats

MiB = 1024 * 1024


# Input keys added with remote paths; left out of the config hash while unset, so that the hash
# (and the resume of a run directory) of a config that does not use them is unchanged.
OPTIONAL_INPUT_KEYS = (
    "paths_file",
    "base_url",
    "max_files",
    "sample_files",
    "sample_seed",
    "skip_unreadable",
)
# Keys that do not change what a finished task wrote: left out of the hash even when set.
UNHASHED_INPUT_KEYS = ("skip_unreadable",)


class InputParams(Params):
    format: str = Field(description="the input format (a registered reader)")
    paths: list[str] = Field(
        default_factory=list,
        description="input files or glob patterns, relative to the config file, or URLs (s3://, "
        "gs://, https://, ...; globs where the store can list)",
    )
    paths_file: str | None = Field(
        None,
        description="a text file (local or URL, gzip allowed) listing one input per line, e.g. "
        "Common Crawl's warc.paths.gz; each line is appended to base_url",
    )
    base_url: str | None = Field(None, description="prefix of every line of paths_file")
    max_files: int | None = Field(None, ge=1, description="keep the first N input files (listing order)")
    sample_files: int | None = Field(
        None, ge=1, description="keep N input files chosen by a seeded hash of their path (any listing order)"
    )
    sample_seed: int | None = Field(None, description="seed of sample_files (default 0)")
    skip_unreadable: bool | None = Field(
        None,
        description="a file that stays unreadable after retries (404, 403, repeated 5xx) is counted "
        "(read stats: dropped.unreadable, extra.unreadable_files) instead of failing the run; "
        "not part of the config hash, so it can be added to resume a failed run",
    )

    @model_validator(mode="after")
    def _some_input(self) -> InputParams:
        if not self.paths and not self.paths_file:
            raise ValueError("set 'paths' (files, globs or URLs) or 'paths_file' (a list of inputs)")
        if self.base_url and not self.paths_file:
            raise ValueError("'base_url' prefixes the lines of 'paths_file', which is not set")
        return self


def select_files(files: list[str], params: InputParams) -> list[str]:
    """The deterministic subset of ``files`` the params ask for.

    ``sample_files`` ranks every path by ``sha256(seed:path)`` and keeps the N lowest, so the
    same files are chosen whatever order the store listed them in (and a longer list keeps a
    superset's share: adding files does not reshuffle the others); the kept files stay in listing
    order.  ``max_files`` then keeps the first N."""
    if params.sample_files is not None and params.sample_files < len(files):
        seed = params.sample_seed or 0

        def rank(path: str) -> bytes:
            return hashlib.sha256(f"{seed}:{path}".encode()).digest()

        keep = set(sorted(files, key=rank)[: params.sample_files])
        files = [f for f in files if f in keep]
    if params.max_files is not None:
        files = files[: params.max_files]
    return files


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
    size = storage.size(path)
    if size <= split_bytes:
        return [Shard(path)]
    bounds = list(range(0, size, split_bytes))
    return [Shard(path, s, e if e < size else None) for s, e in zip(bounds, [*bounds[1:], size])]


class Source:
    """Base class of input readers, registered by ``format`` (the ``input.format`` value)."""

    format: ClassVar[str] = ""
    Params: ClassVar[type[InputParams]] = InputParams
    # False for an input that fetches its own files in ``prepare`` (a crawl): no paths to expand
    reads_files: ClassVar[bool] = True
    # Set by the executor before ``prepare``: starts Ray (or joins the cluster) and returns the
    # function that stops it, for a ``prepare`` that fans out (a crawl's host groups)
    start_ray: Callable[[], Callable[[], None]] | None = None
    # Documents per batch handed to the stages; readers also cut a batch at BATCH_BYTES so that a
    # few huge pages cannot overflow Arrow's 2 GiB per-array string offsets.
    BATCH_ROWS: ClassVar[int] = 256
    BATCH_BYTES: ClassVar[int] = 64 * MiB

    def __init__(self, params: InputParams) -> None:
        self.params = params
        self.stats = StageStats("read")

    def plan(self, files: list[str]) -> list[Shard]:
        return [Shard(f) for f in files]

    def prepare(self, run_root: str, config_dir: str, files: list[str]) -> list[str]:
        """Hook for an input that is fetched before it is read (``format: crawl``): called on the
        driver under the run directory's lock, before planning, until a plan is recorded (so a
        resumed run calls it again and it must skip what it already did); returns the files to
        plan over.  Default: the config's files, unchanged."""
        return files

    def prepared_stats(self, run_root: str) -> list[dict]:
        """The stats entries of ``prepare`` (e.g. ``crawl``), put before ``read`` in stats.json."""
        return []

    @contextmanager
    def open(self, path: str, block_size: int = storage.READ_BLOCK, raw: bool = False) -> Iterator[IO[bytes]]:
        """``path`` opened for reading: the plain local file, or range reads of a URL whose
        transient errors are retried and counted (``extra.read_retries``), with the GETs and
        bytes fetched counted too (``extra.remote_requests`` / ``remote_bytes``: a byte-range
        task fetches its range, not the file).  ``raw``: unbuffered (the caller buffers)."""
        if not storage.is_remote(path):
            with open(path, "rb", buffering=0 if raw else -1) as f:
                yield f
            return
        remote = storage.RemoteFile(path, None, block_size, lambda: self.stats.count("read_retries"))
        try:
            yield remote if raw else io.BufferedReader(remote, 64 * 1024)  # type: ignore[misc]
        finally:
            self.stats.count("remote_requests", remote.requests)
            self.stats.count("remote_bytes", remote.fetched)

    def read(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def read_checked(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        """``read``, where a file that cannot be read (``OSError`` after the retries: 404, 403,
        5xx that persist) either fails the task naming the file (default) or, with
        ``skip_unreadable``, ends the shard there: rows read before stand, the shard is counted
        under ``dropped.unreadable`` and its file under ``extra.unreadable_files``."""
        try:
            yield from self.read(shard)
        except OSError:
            if not self.params.skip_unreadable:
                raise  # storage's errors name the URL (open() the local path)
            self.stats.docs_in += 1
            self.stats.dropped["unreadable"] += 1
            self.stats.count(shard.path, 1, group="unreadable_files")

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
