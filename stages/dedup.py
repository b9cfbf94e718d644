"""``minhash_dedup`` and ``exact_dedup``: barrier stages that find duplicates over the whole corpus
and drop them from every part, keeping one document per cluster.

Both run the same resumable plan of Ray tasks (``BarrierContext.map``), over the parts the previous
phase wrote.  Documents are named by a key ``part_index << 32 | row`` (input order: the same for
any cluster size, since parts come from the fixed shard plan):

1. ``sign`` (a task per part): each document's keys.  MinHash: the signature (``num_perm``
   minima, ``stages.minhash``), saved per part for verification, and one hash per LSH band.
   Exact: one hash of the normalised text (or URL).  Each (band, hash range) gets its own small
   file per part, so that the next step reads only its slice.
2. ``band`` (a task per band and hash range): sort the slice by hash; every bucket of equal hashes
   is a set of candidates, emitted as stars of pairs to its 3 first documents (< 3n pairs, not
   n(n-1)/2: one huge cluster stays linear; ``minhash.star_pairs``); MinHash pairs are verified
   by estimated Jaccard
   (signatures gathered from the memory-mapped per-part files, in bounded chunks).  Hash ranges
   are chosen so a slice holds at most ``max_partition_mb``: the banding memory does not grow
   with the corpus, the number of tasks does.
3. ``cluster`` (one task): connected components over the verified pairs (their number grows with
   the duplicates, not the corpus); the kept document of a cluster is its first in input order
   (``keep: first``) or its longest text (``keep: longest``, ties to the first); writes the rows
   to drop per part and ``OUTPUT/dedup/<stage>.parquet`` (``id``, ``kept_id``).
   ``OUTPUT/dedup/duplicates.parquet`` is the union of the dedup stages of the pipeline so far
   (with a ``stage`` column).

Then each task of the next phase drops its part's rows (reason ``near_duplicate`` /
``exact_duplicate``) and runs the per-row stages that follow.

Every file is written atomically (temp + rename) with its size and xxh3 checksum in the step's
marker; readers check both, and a rerun redoes a step item whose files are missing or short.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.atomic import atomic_write_bytes, write_table_atomic
from pipeline.registry import register_stage
from pipeline.rundir import part_name
from pipeline.stage import BarrierContext, Params, Resources, Stage

ROW_MASK = np.int64(0xFFFFFFFF)
BAND_DTYPE = np.dtype([("hash", "<u8"), ("doc", "<i8")])
# Memory per band-slice row in a band task: measured heap peak 106-122 B/row (the row, the sort,
# 3-hub star pairs; bench/dedup_scale.py, tracemalloc); verification chunks come on top.
BYTES_PER_SLICE_ROW = 128
# Candidate pairs verified per chunk: 2 x 100k x 112 x 4 B = 90 MB of gathered signatures.
VERIFY_CHUNK = 100_000


class CorruptIntermediate(RuntimeError):
    """An intermediate file does not match the size/checksum its writer recorded."""


def save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` atomically; returns what a reader needs to check it."""
    import xxhash

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return {"path": str(path), "size": len(data), "xxh3": xxhash.xxh3_64_hexdigest(data)}


def load_npy(ref: dict[str, Any]) -> np.ndarray:
    """Read a file written by ``save_npy``, checking its size and checksum."""
    import xxhash

    path = Path(ref["path"])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptIntermediate(f"{path} is missing") from None
    if len(data) != ref["size"] or xxhash.xxh3_64_hexdigest(data) != ref["xxh3"]:
        raise CorruptIntermediate(f"{path} is damaged (size or checksum differs from when it was written)")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _files(*refs: dict[str, Any]) -> dict[str, int]:
    return {r["path"]: r["size"] for r in refs}


def part_key(index: int) -> str:
    return part_name(index).removeprefix("part-")


# --- step 1: keys per part ----------------------------------------------------------------------


def sign_part(
    kind: str,
    options: dict[str, Any],
    index: int,
    part: str,
    work: str,
    partitions: int,
    keep_lengths: bool,
) -> dict[str, Any]:
    """Keys of one part's documents, split into (band, hash range) slices."""
    import pyarrow.parquet as pq

    from stages import minhash

    work_dir = Path(work)
    name = part_name(index)
    columns = ["text"] + (["url"] if kind == "exact" and options["by"] != "text" else [])
    table = pq.read_table(part, columns=columns)
    texts = table.column("text").to_pylist()
    refs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"rows": len(texts)}
    if kind == "minhash":
        hasher = minhash.MinHasher(options["num_perm"], options["seed"], options["ngram"])
        sigs = np.concatenate(
            [hasher.signatures(texts[i : i + 1024]) for i in range(0, len(texts), 1024)]
            or [np.zeros((0, options["num_perm"]), np.uint32)]
        )
        valid = ~minhash.empty_rows(sigs)
        keys = minhash.band_keys(sigs, options["bands"], options["rows"], options["band_sets"])
        sig_ref = save_npy(work_dir / "sig" / f"{name}.npy", sigs)
        refs.append(sig_ref)
        result["signatures"] = sig_ref
    else:
        urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * len(texts)
        keys, valid = exact_keys(texts, urls, options["by"], options["normalize"])
    result["empty"] = int((~valid).sum())
    if keep_lengths:
        lengths = np.array([len(t) if t else 0 for t in texts], np.int64)
        result["lengths"] = save_npy(work_dir / "len" / f"{name}.npy", lengths)
        refs.append(result["lengths"])

    docs = (np.int64(index) << np.int64(32)) | np.arange(len(texts), dtype=np.int64)
    shift = np.uint64(64 - max(partitions.bit_length() - 1, 0))
    slices: dict[str, dict[str, Any]] = {}
    for band in range(keys.shape[1]):
        h = keys[valid, band]
        d = docs[valid]
        ranges = (h >> shift).astype(np.int64) if partitions > 1 else np.zeros(len(h), np.int64)
        for r in range(partitions):
            sel = ranges == r
            rows = np.empty(int(sel.sum()), BAND_DTYPE)
            rows["hash"], rows["doc"] = h[sel], d[sel]
            ref = save_npy(work_dir / "bands" / f"b{band:03d}-r{r:04d}" / f"{name}.npy", rows)
            slices[f"b{band:03d}-r{r:04d}"] = ref
            refs.append(ref)
    result["slices"] = slices
    result["files"] = _files(*refs)
    return result


def exact_keys(
    texts: list[str | None], urls: list[str | None], by: str, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1) uint64 keys and a validity mask: the key of the (normalised) text, of the URL
    (``stages.minhash.url_key``), or of both; a document missing either has no key."""
    import xxhash

    from stages.minhash import EMPTY_KEY, exact_key, url_key

    def raw_key(text: str | None) -> int:
        return xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass")) or 1 if text else EMPTY_KEY

    text_key = exact_key if normalize else raw_key
    keys = np.zeros((len(texts), 1), np.uint64)
    for i, (text, url) in enumerate(zip(texts, urls)):
        parts = ([text_key(text)] if by != "url" else []) + ([url_key(url)] if by != "text" else [])
        if EMPTY_KEY in parts:
            continue
        keys[i, 0] = (
            parts[0]
            if len(parts) == 1
            else xxhash.xxh3_64_intdigest(np.array(parts, np.uint64).tobytes()) or 1
        )
    return keys, keys[:, 0] != EMPTY_KEY


# --- step 2: candidates per band slice ----------------------------------------------------------


def band_slice(
    slices: list[dict[str, Any]], signatures: dict[str, dict], verify: float | None, out: str
) -> dict:
    """Candidate pairs of one (band, hash range) slice: stars to each bucket's first documents,
    verified by estimated Jaccard when ``verify`` is set."""
    from stages import minhash

    arrays = [load_npy(ref) for ref in slices]
    rows = np.concatenate(arrays) if arrays else np.empty(0, BAND_DTYPE)
    del arrays  # the per-part copies: 16 B/row more for the whole task otherwise
    pairs = np.stack(minhash.star_pairs(rows["hash"], rows["doc"], hubs=minhash.DEFAULT_HUBS), axis=1)
    candidates = len(pairs)
    if verify is not None and len(pairs):
        pairs = verified(pairs, signatures, verify)
    ref = save_npy(Path(out), pairs)
    return {
        "rows": len(rows),
        "candidates": candidates,
        "verified": len(pairs),
        "pairs": ref,
        "files": _files(ref),
    }


def verified(pairs: np.ndarray, signatures: dict[str, dict], cut: float) -> np.ndarray:
    """The pairs whose signatures agree on at least ``cut`` of their positions.

    Signatures are gathered from the memory-mapped per-part files one part at a time, and each
    map is dropped before the next: touching a few random rows faults in most of a file (kernel
    fault-around), so keeping every part mapped made a band worker's RSS grow with the corpus
    (+456 MB at 1 M documents, bench/dedup_scale.py) although its own memory did not."""
    from stages import minhash

    def gather(docs: np.ndarray) -> np.ndarray:
        parts = docs >> np.int64(32)
        order = np.argsort(parts, kind="stable")
        bounds = np.flatnonzero(np.diff(parts[order])) + 1
        out = None
        for idx in np.split(order, bounds):
            ref = signatures[part_key(int(parts[idx[0]]))]
            _check_file(ref)
            sig = np.load(ref["path"], mmap_mode="r")
            if out is None:
                out = np.empty((len(docs), sig.shape[1]), sig.dtype)
            rows = docs[idx] & ROW_MASK
            ascending = np.argsort(rows)  # read the file front to back
            out[idx[ascending]] = sig[rows[ascending]]
            del sig
        assert out is not None
        return out

    kept = []
    for start in range(0, len(pairs), VERIFY_CHUNK):
        chunk = pairs[start : start + VERIFY_CHUNK]
        est = minhash.estimated_jaccard(gather(chunk[:, 0]), gather(chunk[:, 1]))
        kept.append(chunk[est >= cut])
    return np.concatenate(kept)


def _check_file(ref: dict[str, Any]) -> None:
    """Size check for files read memory-mapped (their checksum would cost a full read)."""
    path = Path(ref["path"])
    if not path.exists() or path.stat().st_size != ref["size"]:
        raise CorruptIntermediate(f"{path} is missing or damaged")


# --- step 3: clusters ---------------------------------------------------------------------------


def cluster(
    pair_refs: list[dict[str, Any]],
    parts: dict[str, str],
    lengths: dict[str, dict] | None,
    work: str,
    out: str,
) -> dict[str, Any]:
    """Connected components of the verified pairs; writes what to drop per part and (id, kept_id)."""
    import pyarrow.parquet as pq

    from stages import minhash

    arrays = [load_npy(ref) for ref in pair_refs]
    pairs = np.concatenate(arrays) if arrays else np.empty((0, 2), np.int64)
    if len(pairs):
        pairs = np.unique(pairs, axis=0)
    docs, roots = minhash.connected_components(pairs[:, 0], pairs[:, 1])
    kept = roots if lengths is None else _longest(docs, roots, lengths)
    dup = docs != kept
    dups, kept_of = docs[dup], kept[dup]
    order = np.lexsort((dups, kept_of))
    dups, kept_of = dups[order], kept_of[order]

    refs = []
    removed: dict[str, dict] = {}
    dup_parts = dups >> np.int64(32)
    for p in np.unique(dup_parts):
        rows = np.sort(dups[dup_parts == p] & ROW_MASK)
        ref = save_npy(Path(work) / "remove" / f"{part_name(int(p))}.npy", rows)
        removed[part_key(int(p))] = ref
        refs.append(ref)

    # ids, one part's id column at a time
    ids_of: dict[int, str] = {}
    wanted = np.concatenate([dups, kept_of])
    wanted_parts = wanted >> np.int64(32)
    for p in np.unique(wanted_parts):
        column = pq.read_table(parts[part_key(int(p))], columns=["id"]).column("id")
        for doc in np.unique(wanted[wanted_parts == p]).tolist():
            ids_of[doc] = column[doc & 0xFFFFFFFF].as_py()
    table = pa.table(
        {
            "id": pa.array([ids_of[d] for d in dups.tolist()], pa.string()),
            "kept_id": pa.array([ids_of[d] for d in kept_of.tolist()], pa.string()),
        }
    )
    write_table_atomic(Path(out), table)

    sizes = np.unique(roots, return_counts=True)[1] if len(roots) else np.empty(0, np.int64)
    return {
        "unique_pairs": len(pairs),
        "clusters": len(sizes),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "cluster_sizes": size_histogram(sizes),
        "documents_removed": int(dup.sum()),
        "removed": removed,
        "files": {**_files(*refs), out: Path(out).stat().st_size},
    }


def _longest(docs: np.ndarray, roots: np.ndarray, lengths: dict[str, dict]) -> np.ndarray:
    """Per document, the longest document of its component (ties: the first in input order)."""
    length = np.empty(len(docs), np.int64)
    parts = docs >> np.int64(32)
    for p in np.unique(parts):
        sel = parts == p
        length[sel] = load_npy(lengths[part_key(int(p))])[docs[sel] & ROW_MASK]
    order = np.lexsort((docs, -length, roots))  # per root: longest first, then input order
    first_of_root = np.ones(len(order), bool)
    first_of_root[1:] = roots[order][1:] != roots[order][:-1]
    best = dict(zip(roots[order][first_of_root].tolist(), docs[order][first_of_root].tolist()))
    return np.array([best[r] for r in roots.tolist()], np.int64)


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Cluster sizes (documents, the kept one included) in power-of-two bins: 2, 3-4, 5-8, ..."""
    hist: dict[str, int] = {}
    for size in sizes.tolist():
        hi = 2
        while hi < size:
            hi *= 2
        label = "2" if hi == 2 else f"{hi // 2 + 1}-{hi}"
        hist[label] = hist.get(label, 0) + 1
    return hist


# --- the stages ---------------------------------------------------------------------------------


class DedupParams(Params):
    keep: Literal["first", "longest"] = Field(
        "first", description="the document kept per cluster: first in input order, or longest text"
    )
    max_partition_mb: int = Field(
        256, ge=16, description="memory bound of one banding task; more hash ranges when exceeded"
    )


class DedupStage(Stage):
    """The shared plan (module docstring); subclasses say how documents are keyed."""

    barrier = True
    resources = Resources(cpus=1, memory_mb=2048)
    KIND: ClassVar[str] = ""
    REASON: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        raise NotImplementedError

    def bands(self) -> int:
        return 1

    def verify_cut(self) -> float | None:
        return None

    def run_barrier(self, ctx: BarrierContext) -> None:
        import pyarrow.parquet as pq

        assert self.work is not None
        work = self.work
        tasks = sorted(ctx.tasks, key=lambda t: t.index)
        total_rows = sum(pq.ParquetFile(t.part).metadata.num_rows for t in tasks)
        partitions = 1
        while total_rows * BYTES_PER_SLICE_ROW / partitions > self.params.max_partition_mb * 2**20:
            partitions *= 2
        keep_lengths = self.params.keep == "longest"
        res = Resources(cpus=1, memory_mb=max(1024, 2 * self.params.max_partition_mb + 512))
        signed = ctx.map(
            "sign",
            sign_part,
            {
                part_key(t.index): {
                    "kind": self.KIND,
                    "options": self.options(),
                    "index": t.index,
                    "part": t.part,
                    "work": str(work),
                    "partitions": partitions,
                    "keep_lengths": keep_lengths,
                }
                for t in tasks
            },
            res,
        )
        signatures = {k: v["signatures"] for k, v in signed.items() if "signatures" in v}
        slice_names = sorted({name for v in signed.values() for name in v["slices"]})
        banded = ctx.map(
            "band",
            band_slice,
            {
                name: {
                    "slices": [signed[k]["slices"][name] for k in sorted(signed)],
                    "signatures": signatures,
                    "verify": self.verify_cut(),
                    "out": str(work / "pairs" / f"{name}.npy"),
                }
                for name in slice_names
            },
            res,
        )
        out = ctx.run_dir.root / "dedup" / f"{self.name}.parquet"
        clustered = ctx.map(
            "cluster",
            cluster,
            {
                "all": {
                    "pair_refs": [banded[name]["pairs"] for name in sorted(banded)],
                    "parts": {part_key(t.index): t.part for t in tasks},
                    "lengths": {k: v["lengths"] for k, v in signed.items()} if keep_lengths else None,
                    "work": str(work),
                    "out": str(out),
                }
            },
            res,
        )["all"]
        # what the next phase's tasks read: the rows to drop per part, and the row counts signed
        plan = {
            "rows": {k: v["rows"] for k, v in signed.items()},
            "removed": clustered["removed"],
        }
        atomic_write_bytes(work / "filter.json", json.dumps(plan).encode())
        write_union(ctx.run_dir.root / "dedup", ctx.spec)

        s = self.stats
        s.seconds += (
            sum(r["seconds"] for step in (signed, banded) for r in step.values()) + clustered["seconds"]
        )
        s.extra.update(
            {
                "documents": total_rows,
                "documents_without_keys": sum(v["empty"] for v in signed.values()),
                "partitions_per_band": partitions,
                "candidate_pairs": sum(v["candidates"] for v in banded.values()),
                "verified_pairs": sum(v["verified"] for v in banded.values()),
                "unique_pairs": clustered["unique_pairs"],
                "clusters": clustered["clusters"],
                "largest_cluster": clustered["largest_cluster"],
                "cluster_sizes": clustered["cluster_sizes"],
                "documents_removed": clustered["documents_removed"],
            }
        )

    def setup(self) -> None:
        assert self.work is not None and self.task is not None
        plan = json.loads((self.work / "filter.json").read_text())
        key = part_key(self.task.index)
        self._remove = load_npy(plan["removed"][key]) if key in plan["removed"] else np.empty(0, np.int64)
        self._expected_rows = plan["rows"].get(key)
        self._offset = 0

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[str | None]]:
        start, self._offset = self._offset, self._offset + batch.num_rows
        if self._expected_rows is not None and self._offset > self._expected_rows:
            raise CorruptIntermediate(
                f"part {self.task and self.task.part} has more rows than when it was signed"
            )
        lo, hi = np.searchsorted(self._remove, [start, self._offset])
        if lo == hi:
            return batch, [None] * batch.num_rows
        drop = np.zeros(batch.num_rows, bool)
        drop[self._remove[lo:hi] - start] = True
        reasons = [self.REASON if d else None for d in drop.tolist()]
        return batch.filter(pa.array(~drop)), reasons


def write_union(folder: Path, spec: Any) -> None:
    """``duplicates.parquet``: every dedup stage's (id, kept_id) rows so far, in pipeline order."""
    import pyarrow.parquet as pq

    tables = []
    for stage in spec.stages:
        path = folder / f"{stage.name}.parquet"
        if stage.name in ("minhash_dedup", "exact_dedup") and path.exists():
            t = pq.read_table(path)
            tables.append(t.append_column("stage", pa.array([stage.name] * t.num_rows, pa.string())))
    schema = pa.schema([("id", pa.string()), ("kept_id", pa.string()), ("stage", pa.string())])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    write_table_atomic(folder / "duplicates.parquet", table)


class MinHashParams(DedupParams):
    ngram: int = Field(5, ge=1, description="word n-grams of the normalised text")
    num_perm: int = Field(112, ge=8, le=1024, description="MinHash permutations (signature length)")
    bands: int | None = Field(None, ge=1, description="LSH bands (with rows); default 14 x 8")
    rows: int | None = Field(None, ge=1, description="rows per band (with bands); default 8")
    threshold: float | None = Field(
        None, gt=0, lt=1, description="Jaccard from which pairs are duplicates; picks bands x rows"
    )
    band_sets: int = Field(
        2, ge=1, le=8, description="the banding over this many groupings of the permutations (1: FineWeb's)"
    )
    verify: bool = Field(True, description="keep only candidates whose estimated Jaccard passes")
    seed: int = Field(1, description="seed of the hash permutations")

    @model_validator(mode="after")
    def _consistent(self) -> MinHashParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.bands is not None and self.threshold is not None:
            raise ValueError("give threshold or bands/rows, not both")
        return self


@register_stage
class MinHashDedup(DedupStage):
    """Near-duplicate removal with MinHash LSH (FineWeb's 5-grams, 14 bands x 8 rows by default)."""

    name = "minhash_dedup"
    Params = MinHashParams
    KIND = "minhash"
    REASON = "near_duplicate"

    def _lsh(self) -> tuple[int, int]:
        from stages.minhash import lsh_params

        p = self.params
        return lsh_params(p.num_perm, p.threshold, p.bands, p.rows)

    def options(self) -> dict[str, Any]:
        bands, rows = self._lsh()
        p = self.params
        return {
            "num_perm": p.num_perm,
            "seed": p.seed,
            "ngram": p.ngram,
            "bands": bands,
            "rows": rows,
            "band_sets": p.band_sets,
        }

    def verify_cut(self) -> float | None:
        from stages.minhash import verify_threshold

        return verify_threshold(self.params.threshold, self.params.num_perm) if self.params.verify else None

    def run_barrier(self, ctx: BarrierContext) -> None:
        bands, rows = self._lsh()
        self.stats.extra.update(
            {
                "bands": bands,
                "rows": rows,
                "band_sets": self.params.band_sets,
                "verify_threshold": self.verify_cut(),
            }
        )
        super().run_barrier(ctx)


class ExactParams(DedupParams):
    by: Literal["text", "url", "text_and_url"] = Field("text", description="what makes two documents equal")
    normalize: bool = Field(True, description="hash the normalised text (case, punctuation, digits)")


@register_stage
class ExactDedup(DedupStage):
    """Exact duplicates: one xxh3 hash per document of its normalised text (or URL)."""

    name = "exact_dedup"
    Params = ExactParams
    KIND = "exact"
    REASON = "exact_duplicate"

    def options(self) -> dict[str, Any]:
        return {"by": self.params.by, "normalize": self.params.normalize}
