"""Builders for training tests: token-shard run directories (the contract's format, written with
pyarrow directly), text run directories, tiny tokenizers and a tiny training corpus."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = (
    "the",
    "a",
    "river",
    "stone",
    "light",
    "wind",
    "quiet",
    "morning",
    "field",
    "house",
    "window",
    "city",
    "road",
    "green",
    "old",
    "small",
    "bright",
    "cold",
    "warm",
    "long",
    "short",
    "under",
    "over",
    "between",
    "after",
    "before",
    "runs",
    "sees",
    "holds",
    "carries",
    "finds",
    "keeps",
    "turns",
    "opens",
    "reads",
    "writes",
    "and",
    "but",
    "while",
    "because",
    "when",
    "then",
    "there",
    "here",
    "slowly",
    "softly",
)


def sentences(n_docs: int, seed: int = 0, words: tuple[int, int] = (20, 80)) -> list[str]:
    """Deterministic English-like documents (a small vocabulary, so a tiny model learns fast)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        n = rng.randint(*words)
        toks = [rng.choice(WORDS) for _ in range(n)]
        text = " ".join(toks)
        docs.append(text[0].upper() + text[1:].replace(" and ", ". And ") + ".")
    return docs


def random_docs(
    n_docs: int, *, vocab_size: int, eot_id: int, seed: int = 0, lengths=(5, 60)
) -> list[list[int]]:
    """Random documents of ids in [0, vocab_size) without eot, each ending with eot."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(*lengths))
        ids = rng.integers(0, vocab_size - 1, size=n)
        ids[ids >= eot_id] += 1  # skip the eot id inside documents
        docs.append([*ids.tolist(), eot_id])
    return docs


def _write_shards(
    folder: Path, docs: list[list[int]], *, dtype, docs_per_shard: int, rows_per_group: int, start_id: int
) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    value_type = pa.uint16() if dtype == "uint16" else pa.uint32()
    shards = []
    for s, i in enumerate(range(0, len(docs), docs_per_shard)):
        chunk = docs[i : i + docs_per_shard]
        table = pa.table(
            {
                "id": pa.array([f"doc-{start_id + i + j}" for j in range(len(chunk))], pa.string()),
                "input_ids": pa.array(chunk, pa.list_(value_type)),
            }
        )
        path = folder / f"shard-{s:05d}.parquet"
        pq.write_table(table, path, row_group_size=rows_per_group, compression="zstd")
        shards.append(
            {
                "path": f"{folder.name}/{path.name}",
                "documents": len(chunk),
                "tokens": sum(len(d) for d in chunk),
                "row_groups": pq.ParquetFile(path).metadata.num_row_groups,
            }
        )
    return shards


def write_token_run(
    run_dir: str | Path,
    train_docs: list[list[int]],
    val_docs: list[list[int]] | None = None,
    *,
    vocab_size: int,
    eot_id: int,
    docs_per_shard: int = 40,
    rows_per_group: int = 8,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """``run_dir/tokens/`` in the contract's format (manifest.json + train/ and val/ shards).

    With ``tokenizer_dir`` the tokenizer is copied to ``run_dir/tokenizer`` and its hash recorded.
    """
    import shutil

    run_dir = Path(run_dir)
    tokens = run_dir / "tokens"
    dtype = "uint16" if vocab_size <= 65536 else "uint32"
    sha = None
    if tokenizer_dir is not None:
        shutil.copytree(tokenizer_dir, run_dir / "tokenizer", dirs_exist_ok=True)
        sha = hashlib.sha256((run_dir / "tokenizer" / "tokenizer.json").read_bytes()).hexdigest()
    splits = {}
    for split, docs, start in (("train", train_docs, 0), ("val", val_docs or [], len(train_docs))):
        shards = (
            _write_shards(
                tokens / split,
                docs,
                dtype=dtype,
                docs_per_shard=docs_per_shard,
                rows_per_group=rows_per_group,
                start_id=start,
            )
            if docs
            else []
        )
        splits[split] = {
            "documents": len(docs),
            "tokens": sum(len(d) for d in docs),
            "shards": shards,
        }
    manifest = {
        "format": "winnow.tokens/1",
        "vocab_size": vocab_size,
        "dtype": dtype,
        "eot_id": eot_id,
        "tokenizer": {"path": "../tokenizer", "tokenizer_json_sha256": sha},
        "pipeline": {"name": "fixture", "config_hash": "0" * 16},
        "seed": 0,
        "val_fraction": 0.0,
        "splits": splits,
    }
    (tokens / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return run_dir


def write_text_run(
    run_dir: str | Path, texts: list[str], *, docs_per_part: int = 40, rows_per_group: int = 8
) -> Path:
    """``run_dir/data/part-*.parquet`` with ``id`` and ``text`` columns (what a pipeline writes)."""
    data = Path(run_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for p, i in enumerate(range(0, len(texts), docs_per_part)):
        chunk = texts[i : i + docs_per_part]
        table = pa.table({"id": [f"doc-{i + j}" for j in range(len(chunk))], "text": chunk})
        pq.write_table(table, data / f"part-{p:05d}.parquet", row_group_size=rows_per_group)
    return Path(run_dir)


def make_tokenizer(out_dir: str | Path, texts: list[str], vocab_size: int = 300) -> Path:
    from tokenizer.train import train_tokenizer

    return train_tokenizer(texts, vocab_size, out_dir)


def tokenized_run(
    tmp: Path, *, n_train: int = 120, n_val: int = 12, vocab_size: int = 300, seed: int = 0, name: str = "run"
) -> tuple[Path, list[str]]:
    """A run directory with a tokenizer trained on generated text and token shards of that text;
    returns (run_dir, train texts).  Documents are tokenized exactly as the data loader's text path
    does (``encode_batch`` + eot), so the two paths must agree."""
    from tokenizer import Tokenizer

    texts = sentences(n_train + n_val, seed=seed)
    tok_dir = make_tokenizer(tmp / f"{name}-tok", texts, vocab_size)
    tok = Tokenizer.from_dir(tok_dir)
    docs = [[*ids, tok.eot_id] for ids in tok.encode_batch(texts)]
    run = write_token_run(
        tmp / name,
        docs[:n_train],
        docs[n_train:],
        vocab_size=tok.vocab_size,
        eot_id=tok.eot_id,
        tokenizer_dir=tok_dir,
    )
    return run, texts[:n_train]


def without_timing(rows: list[dict]) -> list[dict]:
    """Metrics rows without their measured times and speeds (``train.loop.is_timing``)."""
    from train.loop import is_timing

    return [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]
