"""The training sample of ``tokenizer_train``: an even, deterministic sample of the corpus text.

Documents are cut into pieces of at most ``PIECE_CHARS`` characters (at a space, so that the
regex pre-tokens are unchanged but for the rare hard cut of a space-free run), and each piece is
kept when a keyed hash of ``(seed, document id, piece number)`` falls below ``fraction``.  So:

* the sample does not depend on how the corpus is split into parts, their order or the number
  of workers (the hash sees only the id), and a rerun draws the same sample;
* it is spread over the whole corpus, not the first N documents, and a 5 MB book contributes
  ``fraction`` of its text rather than all of it or nothing.

``fraction`` is ``sample_chars / corpus size``, the size read from Parquet metadata (the text
column's uncompressed bytes: no text is read to plan).  Bytes >= characters, so for non-ASCII
text the sample is somewhat smaller than ``sample_chars`` (the stage reports the real count).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

PIECE_CHARS = 8192
HASH_SPACE = 2**64


def text_bytes(part: str | Path, column: str = "text") -> int:
    """Uncompressed bytes of ``column`` in a Parquet file, from its metadata (offsets included)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(part).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    if column not in names:
        raise ValueError(f"{part} has no {column!r} column (columns: {names})")
    col = names.index(column)
    return sum(meta.row_group(r).column(col).total_uncompressed_size for r in range(meta.num_row_groups))


def pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``size`` chars, cut before a space when one is
    in the second half of the window (a space starts the next pre-token anyway)."""
    start, n = 0, len(text)
    while n - start > size:
        end = text.rfind(" ", start + size // 2, start + size)
        if end <= start:
            end = start + size
        yield text[start:end]
        start = end
    if start < n:
        yield text[start:]


def piece_threshold(fraction: float) -> int:
    return HASH_SPACE if fraction >= 1 else int(fraction * HASH_SPACE)


def sample_part(part: str, out: str, fraction: float, seed: int) -> dict:
    """Write the sampled pieces of one part to ``out`` (Parquet, one ``text`` column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xxhash

    from pipeline.atomic import write_table_atomic

    threshold = piece_threshold(fraction)
    kept: list[str] = []
    docs = sampled_docs = chars = sampled_chars = 0
    for batch in pq.ParquetFile(part).iter_batches(batch_size=1024, columns=["id", "text"]):
        for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
            docs += 1
            if not text:
                continue
            chars += len(text)
            key = str(doc_id).encode("utf-8", "surrogatepass")
            took = False
            for k, piece in enumerate(pieces(text)):
                h = xxhash.xxh3_64_intdigest(key + b"\x00" + str(k).encode(), seed=seed)
                if h < threshold:
                    kept.append(piece)
                    sampled_chars += len(piece)
                    took = True
            sampled_docs += took
    write_table_atomic(Path(out), pa.table({"text": pa.array(kept, pa.string())}))
    return {
        "documents": docs,
        "chars": chars,
        "sampled_documents": sampled_docs,
        "sampled_pieces": len(kept),
        "sampled_chars": sampled_chars,
        "files": {out: Path(out).stat().st_size},
    }


def iter_sample(files: list[str]) -> Iterator[str]:
    """The sampled pieces, streamed one row group at a time (the trainer never holds them all)."""
    import pyarrow.parquet as pq

    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["text"]):
            yield from batch.column("text").to_pylist()
