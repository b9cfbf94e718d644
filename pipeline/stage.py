"""The stage contract: what every stage implements and what the base classes do for it.

A stage receives an Arrow ``RecordBatch`` and returns one (datatrove's document+step idea, but
columnar so stages can vectorise).  Counting is not the stage's job: ``StageRunner`` wraps every
stage and records documents in/out, drop reasons, bytes, time and a bounded sample of dropped rows.

* ``Stage.transform(batch) -> (out_batch, reasons)``: ``reasons`` has one entry per *input* row,
  ``None`` for a row that is in ``out_batch`` and a short reason string for a dropped one.  Rows in
  ``out_batch`` keep their input order.  This one signature covers filters (same columns, fewer
  rows), transforms (extract: ``html`` -> ``text``, failing rows dropped with a reason) and
  annotators (all rows kept, columns added).
* ``FilterStage`` stages implement only ``drop_reason(row)`` (per row) or ``decide(batch)``
  (vectorised); the base class builds the mask.
* Barrier stages (``barrier = True``; dedup, tokenizer training) need all rows of the previous
  phase.  The executor ends the current phase of per-row tasks before one, calls its
  ``run_barrier(ctx)`` on the driver with a ``BarrierContext`` (the previous phase's parts and
  ``ctx.map`` to fan work out as resumable Ray tasks), and starts a new phase whose tasks read the
  parts the previous phase wrote.  A barrier whose per-row side keeps every row unchanged
  (``passes_through = True``: tokenizer training, tokenization) costs no copy: the executor hands
  the previous parts on (hard links) instead of rewriting them.  See ``pipeline.executor``.
* Every task is a ``Task``: its ``index``, and either the input ``shard`` it reads (phase 0) or
  the ``part`` of the previous phase (after a barrier).  A stage sees its task as ``self.task``.

This module is the whole contract a stage author needs: stages import from ``pipeline.stage``,
``pipeline.registry`` and the file helpers in ``pipeline.atomic``, never from the executor.

Stages are constructed from their validated ``Params`` on the driver (cheap, picklable) and
``setup()`` is called in the worker before the first batch, so heavy resources (models, block
lists) are loaded where they are used.  Load such resources through a module-level cache: Ray
reuses worker processes, so a second task on the same worker pays nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from pipeline.config import PipelineSpec
    from pipeline.rundir import RunDir
    from pipeline.source import Shard


class RunFailed(Exception):
    """A run could not finish; the message says which task/input and why (printed as it is)."""


class Params(BaseModel):
    """Base for stage parameters: unknown keys are errors, never silently ignored.

    Document each parameter with ``Field(default, description=...)``: ``winnow stages`` prints
    the description, and a test checks that every built-in parameter has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Task:
    """One task of a phase: it reads ``shard`` (phase 0) or ``part`` (the previous phase's part of
    the same ``index``) and writes part ``index`` of its phase (``data/`` when ``last``)."""

    index: int
    last: bool
    shard: Shard | None = None
    part: str | None = None

    def describe(self) -> str:
        return self.shard.describe() if self.shard is not None else str(self.part)


@dataclass
class BarrierContext:
    """What a barrier stage's ``run_barrier`` gets.

    ``tasks``: the previous phase's parts (each a ``Task`` with ``index`` and ``part``; the next
    phase's task of the same index reads the same part), ``parts`` their paths, ``work`` the
    stage's folder for intermediate files, ``run_dir`` and ``spec`` the run.
    ``map(step, fn, items, resources)`` runs ``fn(**items[key])`` for every key as resumable Ray
    tasks (in this process when Ray is not running) and returns key -> ``fn``'s JSON result plus
    ``seconds``; see ``pipeline.executor.map_items`` for the rules ``fn`` must follow.
    """

    spec: PipelineSpec
    run_dir: RunDir
    phase: int
    tasks: list[Task]
    work: Path
    mapper: Callable[..., dict[str, dict]]
    progress: Callable | None = None

    @property
    def parts(self) -> list[Path]:
        return [Path(t.part) for t in self.tasks if t.part is not None]

    def map(
        self,
        step: str,
        fn: Callable[..., dict],
        items: dict[str, dict],
        resources: Resources | None = None,
    ) -> dict[str, dict]:
        return self.mapper(self, step, fn, items, resources)


@dataclass(frozen=True)
class Resources:
    """What one task running this stage needs; the executor reserves the max over a fused chain."""

    cpus: float = 1.0
    memory_mb: int = 1024
    gpus: float = 0.0


@dataclass
class StageStats:
    """Counters of one stage in one task; merged by summing (``merge``) across tasks."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # documents entering the stage by text length in characters, in power-of-two buckets keyed by
    # their lower bound (0 = empty, 1, 2, 4, ...): ~25 numbers a stage, enough for the report's
    # length distribution before the first filter (stats otherwise hold sums only); costs ~0.3 ms per
    # 256-document batch (~1.2 µs a document and stage, against ~290 µs a document for pii alone)
    text_chars_in: Counter = field(default_factory=Counter)

    def count(self, key: str, n: int | float = 1, group: str | None = None) -> None:
        """Add ``n`` to ``extra[key]`` (or ``extra[group][key]``)."""
        target = self.extra.setdefault(group, {}) if group else self.extra
        target[key] = target.get(key, 0) + n

    def merge(self, other: StageStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.dropped.update(other.dropped)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.seconds += other.seconds
        _merge_extra(self.extra, other.extra)
        self.text_chars_in.update(other.text_chars_in)

    def count_lengths(self, text: pa.Array | pa.ChunkedArray) -> None:
        """Add a batch's ``text`` column to ``text_chars_in`` (nulls count as empty)."""
        n = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
        buckets = np.where(n > 0, 2 ** np.floor(np.log2(np.maximum(n, 1))), 0).astype(np.int64)
        values, counts = np.unique(buckets, return_counts=True)
        self.text_chars_in.update(dict(zip(values.tolist(), counts.tolist())))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            # sorted by count then name, so the file is stable across runs and merges
            "dropped": dict(sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 3),
            "extra": _sorted_extra(self.extra),
            **(
                {"text_chars_in": {str(k): v for k, v in sorted(self.text_chars_in.items())}}
                if self.text_chars_in
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        return cls(
            name=d["name"],
            docs_in=d["docs_in"],
            docs_out=d["docs_out"],
            dropped=Counter(d["dropped"]),
            bytes_in=d["bytes_in"],
            bytes_out=d["bytes_out"],
            seconds=d["seconds"],
            extra=d.get("extra", {}),
            text_chars_in=Counter({int(k): v for k, v in d.get("text_chars_in", {}).items()}),
        )


def _merge_extra(into: dict, other: dict) -> None:
    """Sum numbers, recurse into dicts; other values keep the first one seen (e.g. a label)."""
    for key, value in other.items():
        if isinstance(value, dict):
            _merge_extra(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
        else:
            into.setdefault(key, value)


def _sorted_extra(extra: dict) -> dict:
    return {k: _sorted_extra(v) if isinstance(v, dict) else v for k, v in sorted(extra.items())}


def content_bytes(batch: pa.RecordBatch) -> int:
    """UTF-8 bytes of the document payload: ``text`` when present, else ``html``."""
    for column in ("text", "html"):
        if column in batch.schema.names:
            return int(pc.sum(pc.binary_length(batch.column(column))).as_py() or 0)
    return 0


# before/after excerpts of rewritten rows (Stage.sample_change)
CHANGE_CONTEXT = 200
CHANGE_CHARS = 1500


class Stage:
    """A per-row stage.  Subclasses set ``name`` (the YAML key), ``Params`` and ``resources``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    resources: ClassVar[Resources] = Resources()
    barrier: ClassVar[bool] = False
    # Barriers only: ``transform`` returns every row unchanged, so the next phase's parts can be the
    # previous phase's (hard-linked, not rewritten) when nothing else runs in that phase.
    passes_through: ClassVar[bool] = False

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.stats = StageStats(self.name)
        # ``_work/stages/<name>/`` of the run, set by the executor before ``setup()``/``run_barrier``
        self.work: Path | None = None
        # the task this stage runs in, set by the executor before ``setup()``
        self.task: Task | None = None
        # Stages that rewrite rows instead of dropping them (pii) append before/after samples here
        # (``id``, ``reason``, ...), at most ``sample_limit`` per reason; they land with the
        # dropped-row samples in ``removed/<stage>/``.
        self.changed_samples: list[dict[str, Any]] = []
        self.sample_limit = 20

    def sample_change(self, reason: str, doc_id: str | None, before: str, after: str) -> None:
        """Keep a before/after excerpt of a rewritten row (``changed_samples``), at most
        ``sample_limit`` per ``reason`` in this task.  The excerpt starts ``CHANGE_CONTEXT``
        characters before the first difference and keeps ``CHANGE_CHARS`` of each side: enough for
        the report to highlight the change, bounded so that a 1 MB page costs 2 KB of sample."""
        seen = sum(1 for s in self.changed_samples if s["reason"] == reason)
        if seen >= self.sample_limit:
            return
        # character-wise on purpose (text, not paths): the length of the equal start of both sides
        first = len(os.path.commonprefix([before, after]))  # noqa: RUF071
        lo = max(0, first - CHANGE_CONTEXT)
        self.changed_samples.append(
            {
                "id": doc_id,
                "reason": reason,
                "before": before[lo : lo + CHANGE_CHARS],
                "after": after[lo : lo + CHANGE_CHARS],
                "text_chars": len(before),
            }
        )

    @classmethod
    def check_pipeline(cls, params: Params, before: list[str]) -> list[str]:
        """Config-time checks that need the pipeline: ``before`` names the stages that run
        earlier.  Returns problems (one line each); ``winnow validate`` reports them."""
        return []

    def prepare(self) -> None:
        """Driver side, once per run before any task, while Ray starts: build what every task
        would otherwise rebuild (e.g. a parsed block list) into ``self.work``.  Must be
        idempotent; ``setup()`` must still work without it (``run_task`` outside the executor)."""
        return None

    def setup(self) -> None:
        """Load heavy resources in the worker.  Called once per task before ``transform``."""

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Sequence[str | None]]:
        raise NotImplementedError

    def run_barrier(self, ctx: BarrierContext) -> None:
        """Barrier stages only: the whole-dataset phase (see module docstring)."""
        raise NotImplementedError(f"{self.name} is not a barrier stage")


class FilterStage(Stage):
    """A stage that only keeps or drops rows.  Implement ``drop_reason`` or ``decide``."""

    def drop_reason(self, row: dict[str, Any]) -> str | None:
        """``None`` keeps the row; a short reason string drops it."""
        raise NotImplementedError

    def decide(self, batch: pa.RecordBatch) -> Sequence[str | None]:
        return [self.drop_reason(row) for row in batch.to_pylist()]

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Sequence[str | None]]:
        reasons = self.decide(batch)
        if not any(reasons):
            return batch, reasons
        keep = pa.array([r is None for r in reasons], type=pa.bool_())
        return batch.filter(keep), reasons


# Columns kept in the dropped-row sample, and how much text of each row is kept there.
SAMPLE_COLUMNS = ("id", "url")
SAMPLE_TEXT_CHARS = 2000


class StageRunner:
    """Runs one stage over batches, doing the bookkeeping every stage gets for free."""

    def __init__(self, stage: Stage, sample_per_reason: int = 20) -> None:
        self.stage = stage
        stage.sample_limit = sample_per_reason
        self.stats = stage.stats
        self.sample_per_reason = sample_per_reason
        self.samples: list[dict[str, Any]] = []
        self._sampled: Counter = Counter()

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        start = perf_counter()
        out, reasons = self.stage.transform(batch)
        self.stats.seconds += perf_counter() - start
        if len(reasons) != batch.num_rows:
            raise RuntimeError(
                f"stage {self.stage.name!r} returned {len(reasons)} reasons for {batch.num_rows} rows"
            )
        n_dropped = sum(r is not None for r in reasons)
        if out.num_rows != batch.num_rows - n_dropped:
            raise RuntimeError(
                f"stage {self.stage.name!r} dropped {n_dropped} rows with a reason but returned "
                f"{out.num_rows} of {batch.num_rows}"
            )
        self.stats.docs_in += batch.num_rows
        self.stats.docs_out += out.num_rows
        # not for barriers: their per-row side is the identity, and a pass-through barrier's linked
        # parts are never read (pipeline/executor.py's link_task), so it could not count them
        if "text" in batch.schema.names and not self.stage.barrier:
            self.stats.count_lengths(batch.column("text"))
        self.stats.bytes_in += content_bytes(batch)
        self.stats.bytes_out += content_bytes(out)
        if n_dropped:
            self._record_drops(batch, reasons)
        return out

    def _record_drops(self, batch: pa.RecordBatch, reasons: Sequence[str | None]) -> None:
        self.stats.dropped.update(r for r in reasons if r is not None)
        wanted = []
        for i, reason in enumerate(reasons):
            if reason is not None and self._sampled[reason] < self.sample_per_reason:
                self._sampled[reason] += 1
                wanted.append((i, reason))
        if not wanted:
            return
        names = batch.schema.names
        text_col = "text" if "text" in names else ("html" if "html" in names else None)
        cols = {c: batch.column(c) for c in SAMPLE_COLUMNS if c in names}
        for i, reason in wanted:
            row = {c: col[i].as_py() for c, col in cols.items()}
            row["reason"] = reason
            text = batch.column(text_col)[i].as_py() if text_col else None
            row["text_chars"] = len(text) if text is not None else None
            row["text"] = text[:SAMPLE_TEXT_CHARS] if text is not None else None
            self.samples.append(row)
