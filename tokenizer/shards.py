"""Token shards (``OUTPUT/tokens/``): encode parts, shuffle globally with bounded memory, write.

The global order is "sort every document by ``key = xxh3_64(id, seed)``": a pseudo-random
permutation that depends only on the seed and the document ids, not on the parts, their order
or the number of workers.  It is built in two steps of Ray tasks, none of which holds more than
one part or one output shard:

1. ``encode_part`` (a task per part): tiktoken ids + ``<|endoftext|>`` for every document; the
   split (``val`` when a second keyed hash falls below ``val_fraction``) and the bucket (the top
   ``bits`` bits of the key, so buckets are key ranges); rows sorted by (split, bucket, key) to
   an uncompressed Arrow IPC file, plus the row and token count of every non-empty bucket.
2. the driver sums the counts and cuts each split's buckets, in key order, into shards of about
   ``shard_tokens`` (``plan_shards``: a pure function of the counts, so a rerun plans the same);
3. ``write_shard`` (a task per shard): memory-maps every part's file, slices its rows for the
   shard's bucket range (contiguous, thanks to the sort), sorts them by key and writes Parquet
   (``id``, ``input_ids``; row groups of 1,024 rows).  Concatenated in shard order, the rows are
   sorted by key: a global shuffle.

Buckets are ~1/16 of a shard (``bucket_bits``), so shard sizes land within a few percent of the
target; more buckets would only add per-part bookkeeping.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val")
ENCODE_BATCH = 512
KEY_SCHEMA_FIELDS = ("split", "bucket", "key", "part", "row")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def bucket_bits(estimated_tokens: int, shard_tokens: int) -> int:
    """Key-range buckets: ~16 per expected shard, at least 64, at most 2**16."""
    wanted = max(64, 16 * math.ceil(max(estimated_tokens, 1) / shard_tokens))
    return min(16, max(6, math.ceil(math.log2(wanted))))


def doc_keys(ids: list[str], seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(shuffle key, split 0/1) of each document id."""
    import xxhash

    cut = int(val_fraction * 2**64)
    keys = np.empty(len(ids), np.uint64)
    split = np.zeros(len(ids), np.uint8)
    for i, doc_id in enumerate(ids):
        raw = doc_id.encode("utf-8", "surrogatepass")
        keys[i] = xxhash.xxh3_64_intdigest(raw, seed=seed)
        split[i] = xxhash.xxh3_64_intdigest(b"val\x00" + raw, seed=seed) < cut
    return keys, split


_TOKENIZERS: dict[tuple[str, str], Any] = {}


def load_tokenizer(path: str, sha256: str):
    """One ``Tokenizer`` per worker process (Ray reuses workers), checked against ``sha256``."""
    from tokenizer.encoding import Tokenizer

    tok = _TOKENIZERS.get((path, sha256))
    if tok is None:
        tok = Tokenizer.from_dir(path)
        if tok.sha256 != sha256:
            raise ValueError(f"tokenizer at {path} changed during the run (sha256 {tok.sha256} != {sha256})")
        _TOKENIZERS[(path, sha256)] = tok
    return tok


def encode_part(
    part: str, index: int, out: str, tokenizer: str, sha256: str, seed: int, val_fraction: float, bits: int
) -> dict[str, Any]:
    """Encode one part into ``out`` (Arrow IPC, sorted by split, bucket, key); see module doc."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tok = load_tokenizer(tokenizer, sha256)
    dtype = token_dtype(tok.vocab_size)
    eot = np.array([tok.eot_id], dtype)
    ids_out: list[str] = []
    rows_out: list[int] = []
    values: list[np.ndarray] = []
    lengths: list[int] = []
    empty = row = text_bytes = 0
    for batch in pq.ParquetFile(part).iter_batches(batch_size=ENCODE_BATCH, columns=["id", "text"]):
        text_bytes += int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)
        texts = batch.column("text").to_pylist()
        doc_ids = batch.column("id").to_pylist()
        for doc_id, text in zip(doc_ids, texts):
            if not text:
                empty += 1
            else:
                ids = np.array(tok.encode_ordinary(text), dtype)
                values += [ids, eot]
                lengths.append(len(ids) + 1)
                ids_out.append(str(doc_id))
                rows_out.append(row)
            row += 1
    keys, split = doc_keys(ids_out, seed, val_fraction)
    bucket = (keys >> np.uint64(64 - bits)).astype(np.int32)
    order = np.lexsort((keys, bucket, split))
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(values) if values else np.empty(0, dtype)
    tokens = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))
    table = pa.table(
        {
            "split": pa.array(split),
            "bucket": pa.array(bucket),
            "key": pa.array(keys),
            "part": pa.array(np.full(len(keys), index, np.int32)),
            "row": pa.array(np.array(rows_out, np.int64)),
            "id": pa.array(ids_out, pa.string()),
            "input_ids": tokens,
        }
    ).take(pa.array(order))
    from pipeline.atomic import write_ipc_atomic

    write_ipc_atomic(Path(out), table)

    # rows and tokens per non-empty (split, bucket), in file order
    groups = split[order].astype(np.int64) << 32 | bucket[order]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if len(groups) else np.empty(0, np.int64)
    counts = np.diff(np.r_[starts, len(groups)])
    sorted_lengths = np.asarray(lengths, np.int64)[order]
    token_sums = np.add.reduceat(sorted_lengths, starts) if len(starts) else np.empty(0, np.int64)
    return {
        "documents": len(ids_out),
        "empty_documents": empty,
        "tokens": int(offsets[-1]),
        "text_bytes": text_bytes,
        "groups": {
            "split": (groups[starts] >> 32).tolist(),
            "bucket": (groups[starts] & 0xFFFFFFFF).tolist(),
            "rows": counts.tolist(),
            "tokens": token_sums.tolist(),
        },
        "files": {out: Path(out).stat().st_size},
    }


def plan_shards(encoded: dict[str, dict], bits: int, shard_tokens: int) -> list[dict[str, Any]]:
    """Cut each split's buckets, in key order, into shards of about ``shard_tokens`` tokens.

    ``encoded``: part key -> ``encode_part`` result (with ``path``).  Returns one entry per shard:
    ``split``, ``name``, ``buckets`` [lo, hi) and ``slices`` (IPC file, first row, end row).
    """
    n_buckets = 1 << bits
    tokens = np.zeros((len(SPLITS), n_buckets), np.int64)
    parts = []
    for key in sorted(encoded):
        r = encoded[key]
        g = r["groups"]
        split, bucket = np.asarray(g["split"], np.int64), np.asarray(g["bucket"], np.int64)
        np.add.at(tokens, (split, bucket), np.asarray(g["tokens"], np.int64))
        ends = np.cumsum(np.asarray(g["rows"], np.int64))
        parts.append((r["path"], split << 32 | bucket, ends - np.asarray(g["rows"], np.int64), ends))
    shards = []
    for s, split_name in enumerate(SPLITS):
        lo, acc = 0, 0
        for b in range(n_buckets):
            acc += int(tokens[s, b])
            if acc >= shard_tokens or (b == n_buckets - 1 and acc > 0):
                shards.append({"split": split_name, "buckets": [lo, b + 1], "tokens": acc})
                lo, acc = b + 1, 0
    counters = dict.fromkeys(SPLITS, 0)
    for shard in shards:
        s = SPLITS.index(shard["split"])
        shard["name"] = f"{shard['split']}/shard-{counters[shard['split']]:05d}.parquet"
        counters[shard["split"]] += 1
        lo_key, hi_key = s << 32 | shard["buckets"][0], s << 32 | shard["buckets"][1]
        shard["slices"] = []
        for path, group_keys, starts, ends in parts:
            i, j = np.searchsorted(group_keys, [lo_key, hi_key])
            if j > i:
                shard["slices"].append([path, int(starts[i]), int(ends[j - 1])])
    return shards


def write_shard(slices: list[list], out: str, vocab_size: int) -> dict[str, Any]:
    """Gather one shard's rows from the parts' IPC files, sort them by key, write Parquet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.atomic import write_table_atomic

    # Zero-copy: the row slices point into the memory-mapped files; only the sort's ``take``
    # copies, so the task holds about one shard, whatever the parts' sizes.
    pieces = []
    for path, start, stop in slices:
        pieces.append(pa.ipc.open_file(pa.memory_map(path)).read_all().slice(start, stop - start))
    if not pieces:
        raise ValueError(f"shard {out} has no rows")
    table = pa.concat_tables(pieces).sort_by(
        [("key", "ascending"), ("part", "ascending"), ("row", "ascending")]
    )
    dtype = pa.from_numpy_dtype(token_dtype(vocab_size))
    out_table = pa.table(
        {"id": table.column("id"), "input_ids": table.column("input_ids").cast(pa.list_(dtype))}
    )
    write_table_atomic(Path(out), out_table)
    tokens = int(pc.sum(pc.list_value_length(out_table.column("input_ids"))).as_py() or 0)
    return {
        "documents": out_table.num_rows,
        "tokens": tokens,
        "row_groups": pq.ParquetFile(out).metadata.num_row_groups,
        "files": {out: Path(out).stat().st_size},
    }
