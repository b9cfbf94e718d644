"""Reading a pipeline run directory back: the one loader behind ``winnow stats`` and ``winnow report``.

A finished run has ``stats.json`` and ``manifest.json``.  An unfinished one (killed, still running,
or failed) has neither, but every finished task left a marker ``_work/phase-K/done/part-*.json``
holding its stats, and every finished barrier a ``_work/phase-K/barrier.json``: summing those
(as ``pipeline.executor.merge_stats`` does at the end of a run) gives the stats of what finished.
Such a run is reported as incomplete, never refused.

Everything read from data and sample files is bounded (parts, rows, samples per reason) so that a
report of a run with thousands of parts stays fast and small; each bound is a module constant and
the page says when one was hit.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.rundir import RunDir, read_json
from pipeline.stage import StageStats

# Bounds on what a report reads (the page names them when they cut something).
MAX_REMOVED_PARTS = 2000  # removed/<stage>/part-*.parquet files scanned per stage
SAMPLES_PER_REASON = 5  # dropped documents shown per (stage, reason)
SAMPLE_CHARS = 2000  # characters of a sampled document shown
MAX_DATA_PARTS = 200  # data/part-*.parquet files read for lengths, domains, scores
MAX_DATA_ROWS = 200_000  # rows read from those parts
MAX_DATA_TEXT_BYTES = 256 << 20  # text read from them (a batch at a time): bounds time, not just memory

_PHASE_RE = re.compile(r"^phase-(\d+)$")


@dataclass
class PhaseTimes:
    """Wall-clock times a phase's markers record (stage times in stats are summed task time)."""

    index: int
    stages: list[str]  # the stages its tasks ran, read included
    tasks: int
    task_wall_s: float  # summed over tasks (each task's start to its marker)
    longest_task_s: float
    barrier_s: float | None  # the barrier's own driver-side work, when the phase has one


@dataclass
class RunData:
    """What a run directory holds, finished or not."""

    root: Path
    stats: list[dict[str, Any]]
    complete: bool
    manifest: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    tokens: dict[str, Any] | None = None  # tokens/manifest.json
    # per phase: (tasks with a marker, tasks planned or None when unknown)
    progress: list[tuple[int, int | None]] = field(default_factory=list)
    phases: list[PhaseTimes] = field(default_factory=list)

    @property
    def pipeline(self) -> str:
        for source in (self.manifest, self.plan):
            if source and source.get("pipeline"):
                return str(source["pipeline"])
        return self.root.name

    @property
    def config_hash(self) -> str | None:
        for source in (self.manifest, self.plan):
            if source and source.get("config_hash"):
                return str(source["config_hash"])
        return None


def _phases(rd: RunDir) -> list[Path]:
    if not rd.work.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in rd.work.iterdir() if (m := _PHASE_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def merge_markers(
    rd: RunDir,
) -> tuple[list[dict[str, Any]], list[tuple[int, int | None]], list[PhaseTimes]]:
    """Stats summed over the task markers and barrier summaries present, in pipeline order.

    The order is the order stages first appear in (phase, task, position in the marker): a
    marker lists ``read`` then its phase's stages in order, and phases run in order."""
    merged: dict[str, StageStats] = {}
    progress: list[tuple[int, int | None]] = []
    times: list[PhaseTimes] = []
    plan = read_json(rd.plan_file) if rd.plan_file.exists() else None
    for i, phase in enumerate(_phases(rd)):
        markers = sorted((phase / "done").glob("part-*.json"))
        names: list[str] = []
        walls: list[float] = []
        for path in markers:
            marker = read_json(path)
            walls.append(float(marker.get("seconds") or 0.0))
            for entry in marker["stats"]:
                part = StageStats.from_dict(entry)
                merged.setdefault(part.name, StageStats(part.name)).merge(part)
                if part.name not in names:
                    names.append(part.name)
        barrier = phase / "barrier.json"
        barrier_s = None
        if barrier.exists():
            b = read_json(barrier)
            stage = merged.setdefault(b["stage"], StageStats(b["stage"]))
            stage.merge(StageStats(b["stage"], extra=b.get("extra", {}), seconds=b.get("seconds", 0.0)))
            barrier_s = float(b.get("seconds", 0.0))
            if b["stage"] not in names:
                names.append(b["stage"])
        times.append(PhaseTimes(i, names, len(markers), sum(walls), max(walls, default=0.0), barrier_s))
        # phase 0 has one task per planned shard; later phases' task counts are not recorded
        total = len(plan["shards"]) if plan and i == 0 else None
        progress.append((len(markers), total))
    return [s.to_dict() for s in merged.values()], progress, times


def local_copy(run_dir: str | Path) -> Path:
    """The folder ``winnow stats`` and ``winnow report`` read: ``run_dir`` itself, or for a URL a
    node-local copy of what they read (a private mirror, ``pipeline.rundir.scratch_dir``): the JSON
    bookkeeping under ``_work/`` (plan, markers), ``stats.json``, ``manifest.json``, the dropped-row
    samples ``removed/``, ``tokens/manifest.json``, and at most ``MAX_DATA_PARTS`` parts of
    ``data/`` (the report reads no more).  A training output folder: ``metrics.jsonl``,
    ``samples.jsonl`` and the latest checkpoint's ``config.json``, never its weights."""
    from pipeline import storage
    from pipeline.rundir import scratch_dir

    url = str(run_dir).rstrip("/")
    if not storage.is_remote(url):
        return Path(run_dir)
    rd = RunDir(url, scratch=scratch_dir(f"report:{url}"))
    files = storage.list_files(url)
    if not files:
        raise FileNotFoundError(f"{url}: nothing stored under it")
    if "metrics.jsonl" in files or "checkpoints/latest" in files:  # a training output folder
        wanted = [f for f in ("metrics.jsonl", "samples.jsonl", "checkpoints/latest") if f in files]
        for rel in wanted:
            rd.fetch(rd.root / rel)
        latest = rd.root / "checkpoints" / "latest"
        if latest.is_file() and f"checkpoints/{latest.read_text().strip()}/config.json" in files:
            rd.fetch(rd.root / "checkpoints" / latest.read_text().strip() / "config.json")
        return rd.root
    rd.pull_bookkeeping()  # a fresh mirror with the _work JSON files
    data = sorted(f for f in files if f.startswith("data/") and f.endswith(".parquet"))[:MAX_DATA_PARTS]
    top = ("stats.json", "manifest.json", "tokens/manifest.json")
    for rel in [f for f in files if f in top or f.startswith("removed/")] + data:
        rd.fetch(rd.root / rel)
    return rd.root


def load_run(run_dir: str | Path) -> RunData:
    """The stats of a run directory: ``stats.json`` when the run finished, else its markers."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a directory")
    plan = read_json(rd.plan_file) if rd.plan_file.exists() else None
    tokens_file = rd.root / "tokens" / "manifest.json"
    tokens = read_json(tokens_file) if tokens_file.exists() else None
    if rd.stats_file.exists():
        manifest = read_json(rd.manifest_file) if rd.manifest_file.exists() else None
        _, progress, times = merge_markers(rd) if rd.work.is_dir() else ([], [], [])
        return RunData(rd.root, read_json(rd.stats_file), True, manifest, plan, tokens, progress, times)
    if not rd.work.is_dir():
        raise FileNotFoundError(
            f"{rd.root} has neither stats.json nor _work/: is {run_dir} a winnow run directory?"
        )
    stats, progress, times = merge_markers(rd)
    return RunData(rd.root, stats, False, None, plan, tokens, progress, times)


# --- samples of dropped documents ----------------------------------------------------------------


@dataclass
class Samples:
    """Dropped (or changed) documents of one stage, up to ``SAMPLES_PER_REASON`` per reason."""

    by_reason: dict[str, list[dict[str, Any]]]
    parts_total: int
    parts_read: int
    rows_seen: Counter  # sampled rows on disk per reason (the stage keeps a bounded sample)
    urls: list[str]  # urls of every sampled row on disk (for the dropped documents' domains)


def removed_samples(run_dir: str | Path, stage: str, per_reason: int = SAMPLES_PER_REASON) -> Samples:
    """Samples of each drop reason drawn from every ``removed/<stage>/part-*.parquet``.

    Only the ``reason`` column of each part is read first; the rows shown are then spread evenly
    over all the candidates (so over the parts), and only those rows' text is read."""
    import pyarrow.parquet as pq

    parts = sorted((Path(run_dir) / "removed" / stage).glob("part-*.parquet"))
    read = parts[:MAX_REMOVED_PARTS]
    candidates: dict[str, list[tuple[int, int]]] = {}
    urls: list[str] = []
    for p_i, path in enumerate(read):
        try:
            cols = [c for c in ("reason", "url") if c in pq.read_schema(path).names]
            table = pq.read_table(path, columns=cols)
            reasons = table.column("reason").to_pylist()
        except (OSError, KeyError, ValueError):  # a part being written or of an older layout
            continue
        if "url" in cols:
            urls += [u for u in table.column("url").to_pylist() if u]
        for r_i, reason in enumerate(reasons):
            candidates.setdefault(str(reason), []).append((p_i, r_i))
    wanted: dict[int, list[tuple[int, str]]] = {}
    for reason, cands in candidates.items():
        n = min(per_reason, len(cands))
        for k in range(n):
            p_i, r_i = cands[(k * len(cands)) // n]
            wanted.setdefault(p_i, []).append((r_i, reason))
    by_reason: dict[str, list[dict[str, Any]]] = {r: [] for r in candidates}
    for p_i, rows in sorted(wanted.items()):
        table = pq.read_table(read[p_i])
        for r_i, reason in rows:
            row = table.slice(r_i, 1).to_pylist()[0]
            row["part"] = read[p_i].name
            for key in ("text", "before", "after"):
                if isinstance(row.get(key), str):
                    row[key] = row[key][:SAMPLE_CHARS]
            by_reason[reason].append(row)
    seen = Counter({r: len(c) for r, c in candidates.items()})
    return Samples(by_reason, len(parts), len(read), seen, urls)


# --- kept documents: lengths, domains, scores ----------------------------------------------------


@dataclass
class KeptData:
    lengths: list[int]  # characters per document
    urls: list[str]
    scores: dict[str, list[float]]  # annotate-mode score columns (<stage>_<score>)
    parts_total: int
    parts_read: int
    rows_read: int
    source: str  # the folder read, relative to the run directory


def documents_folder(run_dir: str | Path) -> Path:
    """Where the latest documents of a run are: ``data/`` once the last phase wrote parts; before
    that (an unfinished run with barriers) the last ``_work/phase-K/data`` holding parts."""
    rd = RunDir(run_dir)
    if any(rd.data.glob("part-*.parquet")):
        return rd.data
    for phase in reversed(_phases(rd)):
        if any((phase / "data").glob("part-*.parquet")):
            return phase / "data"
    return rd.data


def kept_documents(run_dir: str | Path, score_prefixes: list[str]) -> KeptData:
    """Lengths, URLs and annotate-mode scores of the documents in ``documents_folder``, bounded."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = documents_folder(run_dir)
    parts = sorted(folder.glob("part-*.parquet"))
    lengths: list[int] = []
    urls: list[str] = []
    scores: dict[str, list[float]] = {}
    read = 0
    rows = 0
    text_bytes = 0
    for path in parts[:MAX_DATA_PARTS]:
        if rows >= MAX_DATA_ROWS or text_bytes >= MAX_DATA_TEXT_BYTES:
            break
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            score_cols = [
                n
                for n in names
                if any(n.startswith(p + "_") for p in score_prefixes) and not n.endswith("_reason")
            ]
            cols = [c for c in ("text", "url") if c in names] + score_cols
            # batch by batch: only one batch of text is in memory, and the byte budget can stop
            # inside a part of large documents
            for batch in pf.iter_batches(batch_size=1024, columns=cols):
                batch = batch.slice(0, MAX_DATA_ROWS - rows)
                rows += batch.num_rows
                if "text" in cols:
                    text = batch.column(cols.index("text"))
                    lengths += [int(x or 0) for x in pc.utf8_length(text).to_pylist()]
                    text_bytes += text.nbytes
                if "url" in cols:
                    urls += [u for u in batch.column(cols.index("url")).to_pylist() if u]
                for c in score_cols:
                    try:
                        values = batch.column(cols.index(c)).cast("double").to_pylist()
                    except (ValueError, TypeError, NotImplementedError):
                        continue
                    scores.setdefault(c, []).extend(v for v in values if v is not None)
                if rows >= MAX_DATA_ROWS or text_bytes >= MAX_DATA_TEXT_BYTES:
                    break
        except (OSError, ValueError):  # a part being written by a live run
            continue
        read += 1
    source = str(folder.relative_to(RunDir(run_dir).root))
    return KeptData(lengths, urls, scores, len(parts), read, rows, source)


def host_of(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().removeprefix("www.") if host else None


def domain_counts(urls: list[str]) -> tuple[Counter, Counter]:
    """(registered-domain counts, public-suffix counts): ``news.bbc.co.uk`` counts for
    ``bbc.co.uk`` and ``.co.uk``.  tldextract reads the public-suffix snapshot it ships (never the
    network, as url_filter does); a host without a public suffix (``intranet``, an IP address)
    counts under its own name."""
    import tldextract

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=False, fallback_to_snapshot=True)
    hosts: Counter = Counter()
    tlds: Counter = Counter()
    for u in urls:
        h = host_of(u)
        if not h:
            continue
        ext = extract(h)
        if ext.suffix and ext.domain:
            hosts[ext.top_domain_under_public_suffix] += 1
            tlds["." + ext.suffix] += 1
        else:
            hosts[h] += 1
            tlds["(IP address)" if ext.ipv4 or ext.ipv6 else "(no public suffix)"] += 1
    return hosts, tlds
