"""``tokenizer_train`` and ``tokenize`` in pipelines: outputs, shuffle, manifest, resume, errors.

Most tests run the phases in this process (``run_local`` from test_dedup: the executor's own task
and barrier code, ``BarrierContext.map`` in-process); the kill test runs the CLI on Ray.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import xxhash
from helpers import SHARED, kill_run_when, read_docs, stats_without_time, winnow, write_config
from test_dedup import pipeline, run_local

from pipeline.config import ConfigError
from tokenizer import Tokenizer
from tokenizer.folder import save_tokenizer_dir

pytestmark = pytest.mark.skipif(not (SHARED / "lid_dev.jsonl.gz").exists(), reason="no shared dev data")


def real_docs(n: int = 2500) -> list[dict]:
    """lid_dev texts (many scripts) plus two long English books cut to ~60k chars, an empty text
    and one that contains the end-of-text marker as plain text."""
    with gzip.open(SHARED / "lid_dev.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [{"id": f"lid-{i}", "text": json.loads(line)["text"]} for i, line in zip(range(n), f)]
    with gzip.open(SHARED / "english_dev.jsonl.gz", "rt", encoding="utf-8") as f:
        books = [json.loads(line)["text"] for _, line in zip(range(2), f)]
    docs += [{"id": f"book-{i}", "text": t[:60_000]} for i, t in enumerate(books)]
    docs += [{"id": "empty", "text": ""}, {"id": "inject", "text": "a <|endoftext|> b <|user|>"}]
    return docs


def make_spec(tmp_path: Path, docs: list[dict], stages: list, name: str = "p", split_bytes: int = 65536):
    return pipeline(tmp_path, docs, stages, name=name, split_bytes=split_bytes, out=name)


TRAIN = {"tokenizer_train": {"vocab_size": 700, "seed": 3}}
TOKENIZE = {"tokenize": {"shard_tokens": 40_000, "val_fraction": 0.1, "seed": 7}}


def read_split(run: Path, split: str) -> list[dict]:
    manifest = json.loads((run / "tokens" / "manifest.json").read_text())
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        rows += pq.read_table(run / "tokens" / shard["path"]).to_pylist()
    return rows


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    docs = real_docs()
    spec = make_spec(tmp, docs, [TRAIN, TOKENIZE])
    stats = run_local(spec)
    return tmp / "p", docs, stats


def test_token_shards_equal_re_encoding_the_parquet_text(trained_run):
    run, docs, _ = trained_run
    tok = Tokenizer.from_dir(run)
    text_of = {d["id"]: d["text"] for d in read_docs(run)}
    assert len(text_of) == len(docs)  # both stages pass every document through
    rows = read_split(run, "train") + read_split(run, "val")
    for row in rows:
        assert row["input_ids"] == [*tok.encode(text_of[row["id"]]), tok.eot_id]
    # a literal "<|endoftext|>" in a document is text, so each document has exactly one separator
    assert all(row["input_ids"].count(tok.eot_id) == 1 for row in rows)
    # every non-empty document exactly once (a permutation), the empty one skipped and counted
    assert sorted(r["id"] for r in rows) == sorted(d["id"] for d in docs if d["text"])
    manifest = json.loads((run / "tokens" / "manifest.json").read_text())
    assert manifest["empty_documents_skipped"] == 1


def test_manifest_counts_match_the_files(trained_run):
    run, _, stats = trained_run
    manifest = json.loads((run / "tokens" / "manifest.json").read_text())
    tok = Tokenizer.from_dir(run)
    assert manifest["format"] == "winnow.tokens/1" and manifest["dtype"] == "uint16"
    assert manifest["vocab_size"] == tok.vocab_size == 700 and manifest["eot_id"] == tok.eot_id
    assert manifest["tokenizer"] == {"path": "../tokenizer", "tokenizer_json_sha256": tok.sha256}
    run_manifest = (
        json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else None
    )
    assert manifest["pipeline"]["name"] == "p" and len(manifest["pipeline"]["config_hash"]) == 16
    if run_manifest:
        assert manifest["pipeline"]["config_hash"] == run_manifest["config_hash"]
    assert (manifest["seed"], manifest["val_fraction"]) == (7, 0.1)
    totals = {}
    for split in ("train", "val"):
        s = manifest["splits"][split]
        assert [sh["path"] for sh in s["shards"]] == [
            f"{split}/shard-{i:05d}.parquet" for i in range(len(s["shards"]))
        ]
        docs = tokens = 0
        for shard in s["shards"]:
            f = pq.ParquetFile(run / "tokens" / shard["path"])
            table = f.read()
            assert table.schema.field("input_ids").type.value_type.bit_width == 16
            assert table.schema.names == ["id", "input_ids"]
            assert f.metadata.num_rows == shard["documents"]
            assert f.metadata.num_row_groups == shard["row_groups"]
            assert all(f.metadata.row_group(i).num_rows <= 1024 for i in range(f.metadata.num_row_groups))
            assert sum(len(x) for x in table.column("input_ids").to_pylist()) == shard["tokens"]
            docs, tokens = docs + shard["documents"], tokens + shard["tokens"]
        assert (s["documents"], s["tokens"]) == (docs, tokens)
        totals[split] = s
    # shards close to the target size: each closes at the bucket that reaches it, so it exceeds
    # the target by less than one bucket (a bucket with a 30k-token book is large); the last one
    # of a split takes the rest
    biggest_doc = max(len(r["input_ids"]) for r in read_split(run, "train"))
    train_sizes = sorted(sh["tokens"] for sh in totals["train"]["shards"][:-1])
    assert len(train_sizes) >= 8 and all(40_000 <= t < 40_000 + biggest_doc + 10_000 for t in train_sizes)
    assert train_sizes[len(train_sizes) // 2] < 40_000 * 1.1
    # val: ~10 % of the documents, decided per document
    n = totals["train"]["documents"] + totals["val"]["documents"]
    assert 0.07 * n < totals["val"]["documents"] < 0.13 * n
    (tok_stats,) = [s for s in stats if s["name"] == "tokenize"]
    assert tok_stats["extra"]["tokens"] == totals["train"]["tokens"] + totals["val"]["tokens"]
    assert tok_stats["docs_in"] == tok_stats["docs_out"] == n + 1


def test_order_is_the_keyed_hash_order(trained_run):
    """Shards concatenated are sorted by xxh3(id, seed): a shuffle fixed by ids and seed alone."""
    run, docs, _ = trained_run
    for split in ("train", "val"):
        ids = [r["id"] for r in read_split(run, split)]
        keys = [xxhash.xxh3_64_intdigest(i.encode(), seed=7) for i in ids]
        assert keys == sorted(keys)
    train_ids = [r["id"] for r in read_split(run, "train")]
    input_order = [d["id"] for d in docs if d["id"] in set(train_ids)]
    assert train_ids != input_order and sorted(train_ids) == sorted(input_order)


def test_tokenizer_folder_and_stats(trained_run):
    run, docs, stats = trained_run
    tok = Tokenizer.from_dir(run / "tokenizer")
    meta = json.loads((run / "tokenizer" / "winnow_tokenizer.json").read_text())
    (train,) = [s for s in stats if s["name"] == "tokenizer_train"]
    assert train["extra"]["tokenizer_json_sha256"] == tok.sha256
    assert train["extra"]["vocab_size"] == 700 and train["extra"]["sample_fraction"] == 1.0
    total_chars = sum(len(d["text"]) for d in docs)
    assert meta["trained_on"]["chars"] == train["extra"]["chars"] == total_chars
    assert meta["trained_on"]["pipeline"] == "p" and meta["trained_on"]["seed"] == 3
    assert not (run / "_work" / "stages" / "tokenizer_train" / "sample").exists()
    assert not (run / "_work" / "stages" / "tokenize" / "encoded").exists()


def test_same_output_for_any_partitioning_and_sample_is_even(tmp_path, trained_run):
    """Other shard sizes for the input (so other parts): the same tokenizer, the same token shards.
    A 30 % sample is drawn from every part (and from inside the long books)."""
    run, docs, _ = trained_run
    spec = make_spec(tmp_path, docs, [TRAIN, TOKENIZE], split_bytes=16384)
    run_local(spec)
    other = tmp_path / "p"
    assert len(list((other / "data").glob("*.parquet"))) > len(list((run / "data").glob("*.parquet")))
    assert Tokenizer.from_dir(other).sha256 == Tokenizer.from_dir(run).sha256
    for split in ("train", "val"):
        assert read_split(other, split) == read_split(run, split)

    sampled = make_spec(
        tmp_path, docs, [{"tokenizer_train": {"vocab_size": 700, "sample_chars": 300_000}}], name="s"
    )
    stats = run_local(sampled)
    (train,) = [s for s in stats if s["name"] == "tokenizer_train"]
    extra = train["extra"]
    assert 0.2 < extra["sample_fraction"] < 0.4
    assert 0.7 * 300_000 * extra["corpus_chars"] / _text_bytes(docs) < extra["chars"] < 1.3 * 300_000
    assert extra["pieces"] > extra["documents"] - 2  # the books are sampled piece by piece
    steps = tmp_path / "s" / "_work" / "phase-1" / "steps" / "sample"
    per_part = [json.loads(p.read_text()) for p in sorted(steps.glob("*.json"))]
    big = [r for r in per_part if r["chars"] > 20_000]
    assert len(big) >= 20  # every sizeable part gives about its share
    assert all(
        0.4 * extra["sample_fraction"] < r["sampled_chars"] / r["chars"] < 2.5 * extra["sample_fraction"]
        for r in big
    )


def _text_bytes(docs: list[dict]) -> int:
    return sum(len(d["text"].encode()) for d in docs)


def test_tokenize_with_an_existing_tokenizer_folder(tmp_path, trained_run):
    run, docs, _ = trained_run
    external = shutil.copytree(run / "tokenizer", tmp_path / "my-tokenizer")
    with pytest.raises(ConfigError, match="no winnow tokenizer"):
        make_spec(tmp_path, docs[:300], [{"tokenize": {"tokenizer": str(tmp_path), "val_fraction": 0}}])
    # relative to the config file; the folder itself or a run dir holding tokenizer/ both work
    spec = make_spec(
        tmp_path, docs[:300], [{"tokenize": {"tokenizer": "my-tokenizer", "val_fraction": 0}}], name="q"
    )
    run_local(spec)
    out = tmp_path / "q"
    tok = Tokenizer.from_dir(out)
    assert tok.sha256 == Tokenizer.from_dir(external).sha256
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer"]["source"] == str(external)
    assert manifest["splits"]["val"] == {"documents": 0, "tokens": 0, "shards": []}
    rows = read_split(out, "train")
    text_of = {d["id"]: d["text"] for d in docs[:300]}
    assert len(rows) == 300 and all(
        r["input_ids"] == [*tok.encode(text_of[r["id"]]), tok.eot_id] for r in rows
    )


def test_uint32_ids_for_a_vocabulary_over_65536(tmp_path):
    # every byte pair as a merge: 256 + 65,536 ranks, a valid (if silly) BPE vocabulary
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({bytes([a, b]): 256 + a * 256 + b for a in range(256) for b in range(256)})
    save_tokenizer_dir(tmp_path / "big" / "tokenizer", ranks)
    docs = [{"id": f"d{i}", "text": f"document number {i} ü"} for i in range(50)]
    spec = make_spec(tmp_path, docs, [{"tokenize": {"tokenizer": str(tmp_path / "big"), "val_fraction": 0}}])
    run_local(spec)
    manifest = json.loads((tmp_path / "p" / "tokens" / "manifest.json").read_text())
    assert manifest["dtype"] == "uint32" and manifest["eot_id"] == len(ranks)
    table = pq.read_table(tmp_path / "p" / "tokens" / "train" / "shard-00000.parquet")
    assert table.schema.field("input_ids").type.value_type.bit_width == 32
    assert max(max(r) for r in table.column("input_ids").to_pylist()) == len(ranks)  # the eot id


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"tokenize": {}}], "no tokenizer: put a tokenizer_train stage before it"),
        ([TRAIN, {"tokenize": {"tokenizer": "."}}], "use one or the other"),
        ([{"tokenize": {"tokenizer": "nowhere"}}], "tokenizer: folder 'nowhere' not found"),
        ([{"tokenize": {"tokenizer": "."}}], "no winnow tokenizer"),
        ([{"tokenizer_train": {"vocab_size": 100}}], "vocab_size"),
        ([{"tokenizer_train": {"special_tokens": ["<|endoftext|>"]}}], "always a special token"),
        ([{"tokenizer_train": {"special_tokens": ["<|x|>", "<|x|>"]}}], "duplicate"),
        ([{"tokenizer_train": {"vocab": 100}}], "unknown parameter 'vocab'"),
        ([TRAIN, {"tokenize": {"val_fraction": 1.5}}], "val_fraction"),
    ],
)
def test_bad_configurations(tmp_path, stages, message):
    with pytest.raises(ConfigError, match=message):
        make_spec(tmp_path, [{"id": "a", "text": "x"}], stages)


def test_resume_after_a_failed_shard_step(tmp_path, monkeypatch, trained_run):
    run, docs, _ = trained_run
    import tokenizer.shards as shards

    real = shards.write_shard
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["out"])
        if len(calls) == 4:
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(shards, "write_shard", flaky)
    spec = make_spec(tmp_path, docs, [TRAIN, TOKENIZE])
    with pytest.raises(RuntimeError, match="disk full"):
        run_local(spec)
    assert not (tmp_path / "p" / "tokens" / "manifest.json").exists()
    done = len(calls) - 1
    run_local(spec)
    assert len(calls) > done + 1  # the rest was written, the 3 finished shards skipped
    for split in ("train", "val"):
        assert read_split(tmp_path / "p", split) == read_split(run, split)


@pytest.mark.slow
def test_sigkill_during_tokenize_then_resume(tmp_path):
    """Driver and Ray SIGKILLed while the encode step runs; the rerun gives the clean run's output."""
    docs = real_docs(6000)

    def config(out):
        data = tmp_path / "d.jsonl"
        if not data.exists():
            data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        return write_config(
            tmp_path / f"{out}.yaml",
            {
                "p": {
                    "input": {"format": "jsonl", "paths": [str(data)], "split_bytes": 32768},
                    "stages": [TRAIN, TOKENIZE],
                    "output": str(tmp_path / out),
                }
            },
        )

    clean = winnow("run", "p", "-c", str(config("clean")), "--no-progress", "--num-cpus", "1")
    assert clean.returncode == 0, clean.stderr[-3000:]
    encode = tmp_path / "killed" / "_work" / "phase-2" / "steps" / "encode"
    kill_run_when(
        ["run", "p", "-c", str(config("killed")), "--no-progress", "--num-cpus", "1"],
        lambda: encode.exists() and len(list(encode.glob("*.json"))) >= 3,
    )
    assert not (tmp_path / "killed" / "tokens" / "manifest.json").exists()
    again = winnow("run", "p", "-c", str(config("killed")), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    for split in ("train", "val"):
        assert read_split(tmp_path / "killed", split) == read_split(tmp_path / "clean", split)
    clean_manifest = json.loads((tmp_path / "clean" / "tokens" / "manifest.json").read_text())
    killed_manifest = json.loads((tmp_path / "killed" / "tokens" / "manifest.json").read_text())
    assert clean_manifest == killed_manifest
    assert read_docs(tmp_path / "killed") == read_docs(tmp_path / "clean")
    assert stats_without_time(tmp_path / "killed") == stats_without_time(tmp_path / "clean")
    assert not list((tmp_path / "killed").rglob(".*.tmp"))
