"""Pretraining data loader: packing, epochs, window shuffle, rank sharding, mixtures, state, text path,
errors.  Tests of the stream itself pass ``shuffle_tokens=0`` (stream order); the shuffle is tested
against that order."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from train_fixtures import random_docs, tokenized_run, write_text_run, write_token_run

from train.data import (
    DataError,
    PretrainLoader,
    check_compatible,
    open_source,
    parse_data_spec,
    token_byte_lengths,
    val_windows,
)

V, EOT = 500, 499


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    docs = random_docs(150, vocab_size=V, eot_id=EOT, seed=1)
    val = random_docs(20, vocab_size=V, eot_id=EOT, seed=2)
    return (
        write_token_run(tmp_path_factory.mktemp("a") / "run", docs, val, vocab_size=V, eot_id=EOT),
        docs,
        val,
    )


@pytest.fixture(scope="module")
def run_b(tmp_path_factory):
    docs = random_docs(60, vocab_size=V, eot_id=EOT, seed=3, lengths=(100, 200))
    return write_token_run(tmp_path_factory.mktemp("b") / "run", docs, vocab_size=V, eot_id=EOT), docs


def _stream_of_epoch(source, loader_cursor, epoch: int) -> np.ndarray:
    """The epoch's stream rebuilt independently: row groups read with pyarrow in the cursor's order."""
    parts = []
    for f, g in loader_cursor.order(epoch):
        col = pq.ParquetFile(source.files[f]).read_row_group(g, columns=["input_ids"]).column(0)
        parts.extend(col.to_pylist())
    return np.array([t for doc in parts for t in doc], dtype=np.int64)


@pytest.mark.parametrize("block, rows_per_group", [(16, 8), (150, 1)])
def test_windows_reproduce_the_concatenated_stream_across_epoch_wraps(tmp_path, block, rows_per_group):
    """Windows are stream[k·T : k·T + T + 1]; (150, 1): windows span many one-document row groups."""
    docs = random_docs(60, vocab_size=V, eot_id=EOT, seed=1)
    run = write_token_run(
        tmp_path / "run", docs, vocab_size=V, eot_id=EOT, docs_per_shard=25, rows_per_group=rows_per_group
    )
    T, B = block, 3
    src = open_source(run)
    loader = PretrainLoader([src], block_size=T, micro_batch=B, shuffle_tokens=0)
    stream0 = np.array([t for d in docs for t in d])
    assert src.tokens == len(stream0)
    n_batches = 5 * len(stream0) // (2 * T * B)  # half way into epoch 2
    windows = np.concatenate([loader.next_windows().astype(np.int64) for _ in range(n_batches)])
    assert windows.shape == (n_batches * B, T + 1)
    cursor = loader.cursors[0].stream
    assert cursor.epoch == 2
    orders = [cursor.order(e) for e in range(3)]
    assert sorted(orders[1]) == sorted(orders[0]) and orders[1] != orders[0] != orders[2] != orders[1]
    stream = np.concatenate([stream0, _stream_of_epoch(src, cursor, 1), _stream_of_epoch(src, cursor, 2)])
    for k, w in enumerate(windows):
        np.testing.assert_array_equal(w, stream[k * T : k * T + T + 1])
    # a second loader with the same seed wraps into the same order; another seed does not
    assert PretrainLoader([src], block_size=T, micro_batch=B).cursors[0].stream.order(1) == orders[1]
    assert PretrainLoader([src], block_size=T, micro_batch=B, seed=1).cursors[0].stream.order(1) != orders[1]


def test_batches_are_shifted_windows_and_memory_is_bounded(run_a):
    src = open_source(run_a[0])
    loader = PretrainLoader([src], block_size=8, micro_batch=4, shuffle_tokens=0)
    most_chunks = 0
    for _ in range(200):
        x, y = loader.next_batch()
        most_chunks = max(most_chunks, len(loader.cursors[0].stream._chunks))
        assert x.dtype == torch.int64 and x.shape == y.shape == (4, 8)
        assert torch.equal(x[:, 1:], y[:, :-1])
    # row groups hold ~250 tokens, a window 9: at most the current row group and the next are held
    assert most_chunks <= 2


def _as_rows(windows: np.ndarray) -> list[tuple]:
    return sorted(map(tuple, windows.tolist()))


def test_shuffled_windows_are_the_stream_windows_permuted_within_chunks(tmp_path):
    """Chunk c emits exactly windows c·n … c·n + n − 1 of the stream, in a seeded order; over many
    chunks and two epoch wraps the windows are the unshuffled ones, no window lost or repeated."""
    docs = random_docs(60, vocab_size=V, eot_id=EOT, seed=1)
    run = write_token_run(
        tmp_path / "run", docs, vocab_size=V, eot_id=EOT, docs_per_shard=25, rows_per_group=3
    )
    src = open_source(run)
    T, B = 16, 5
    S = 25 * T + 3  # rounded up to 26 windows: a chunk is not a multiple of the micro-batch
    shuffled = PretrainLoader([src], block_size=T, micro_batch=B, shuffle_tokens=S)
    n = shuffled.cursors[0].n
    assert n == 26
    plain = PretrainLoader([src], block_size=T, micro_batch=B, shuffle_tokens=0)
    n_batches = 5 * src.tokens // (2 * T * B)  # half way into epoch 2
    got = np.concatenate([shuffled.next_windows() for _ in range(n_batches)])
    want = np.concatenate([plain.next_windows() for _ in range(n_batches)])
    assert shuffled.cursors[0].epoch == 2 and shuffled.cursors[0].chunk >= 10
    full = (len(got) // n) * n
    for c in range(0, full, n):  # each whole chunk: the same windows, another order
        assert _as_rows(got[c : c + n]) == _as_rows(want[c : c + n])
        assert not np.array_equal(got[c : c + n], want[c : c + n])
    # the order breaks up documents: consecutive windows are rarely neighbours in the stream
    where = {tuple(w): k for k, w in enumerate(want.tolist())}
    assert len(where) == len(want)  # random ids: every window is unique, so positions are exact
    pos = np.array([where[tuple(w)] for w in got[:full].tolist()])
    assert sorted(pos.tolist()) == list(range(full))
    assert np.mean(np.diff(pos) == 1) < 0.15  # 1 in n expected, 1 in 1 unshuffled
    # deterministic for a seed, another for another seed
    again = PretrainLoader([src], block_size=T, micro_batch=B, shuffle_tokens=S)
    np.testing.assert_array_equal(np.concatenate([again.next_windows() for _ in range(n_batches)]), got)
    other = PretrainLoader([src], block_size=T, micro_batch=B, shuffle_tokens=S, seed=1)
    assert not np.array_equal(other.next_windows(), got[:B])


def test_shuffle_buffer_is_bounded_and_read_ahead(tmp_path):
    """The loader holds the current chunk (n·T + 1 tokens) and the next one, read on a thread; the
    stream keeps no more than the row group the following chunk starts in and one prefetched."""
    docs = random_docs(200, vocab_size=V, eot_id=EOT, seed=4)
    run = write_token_run(
        tmp_path / "run", docs, vocab_size=V, eot_id=EOT, docs_per_shard=50, rows_per_group=1
    )
    src = open_source(run)
    T = 8
    loader = PretrainLoader([src], block_size=T, micro_batch=4, shuffle_tokens=300)
    w = loader.cursors[0]
    chunk_tokens = w.n * T + 1
    assert w.n == 38 and chunk_tokens <= 300 + T + 1
    largest_row_group = max(len(d) for d in docs)
    chunks_seen = set()
    for _ in range(150):  # ~ 15 chunks
        loader.next_windows()
        if w._tokens is not None:
            assert w._tokens.size == chunk_tokens
            chunks_seen.add(w.chunk)
            start, ahead = w._ahead  # the next chunk is always being read ahead
            assert ahead.result().size == chunk_tokens
            assert start["epoch"] >= w.epoch
            cached = sum(len(c) for _, _, c in w.stream._chunks)
            assert len(w.stream._chunks) <= 2 and cached <= 2 * largest_row_group
    assert len(chunks_seen) >= 10
    # a token source's chunk is at most one epoch: the default (4 M tokens) shuffles this data whole
    assert PretrainLoader([src], block_size=T, micro_batch=4).cursors[0].n == src.tokens // T
    with pytest.raises(ValueError, match="shuffle_tokens"):
        PretrainLoader([src], block_size=T, micro_batch=4, shuffle_tokens=-1)


@pytest.mark.parametrize("world, shuffle", [(2, 0), (2, 100), (3, 100)])
def test_rank_shards_are_disjoint_cover_the_stream_and_end_in_the_same_state(run_a, world, shuffle):
    """Shuffled or not, global window k is rank k % world's: one process with world x the micro-batch
    sees the ranks' windows interleaved (100 tokens: chunks of 13 windows, crossed many times)."""
    src = open_source(run_a[0])
    T, B, steps = 8, 2, 40
    single = PretrainLoader([src], block_size=T, micro_batch=B * world, shuffle_tokens=shuffle)
    ranks = [
        PretrainLoader([src], block_size=T, micro_batch=B, rank=r, world_size=world, shuffle_tokens=shuffle)
        for r in range(world)
    ]
    for _ in range(steps):
        full = single.next_windows()
        parts = [r.next_windows() for r in ranks]
        # global window k is rank k % world's: interleaving the ranks' windows gives the global order
        interleaved = np.stack([parts[k % world][k // world] for k in range(B * world)])
        np.testing.assert_array_equal(interleaved, full)
    states = [r.state_dict() for r in ranks]
    assert all(s == states[0] for s in states)
    assert states[0]["sources"] == single.state_dict()["sources"]
    assert single.cursors[0].chunk >= 3 * (shuffle > 0)


def test_mixture_follows_weights_and_each_source_streams_in_order(run_a, run_b):
    a = open_source(run_a[0], weight=0.7)
    b = open_source(run_b[0], weight=0.3)
    T = 4
    kw = dict(block_size=T, seed=5, shuffle_tokens=400)  # chunks of 100 windows, crossed many times
    mix = PretrainLoader([a, b], micro_batch=50, **kw)
    solo = [PretrainLoader([s], micro_batch=1, **kw) for s in (a, b)]
    rows = np.concatenate([mix.next_windows() for _ in range(60)])  # 3000 windows
    share_a = mix.windows_by_source[0] / mix.windows
    assert abs(share_a - 0.7) < 0.03  # binomial sd ≈ 0.008
    # replaying the choices: each window is the next window of its own source's (shuffled) stream
    replay = np.random.Generator(np.random.PCG64(5))
    for w in rows:
        s = 0 if replay.random() < 0.7 else 1
        np.testing.assert_array_equal(w, solo[s].next_windows()[0])
    # weights are relative: 7:3 is the same mixture as 0.7:0.3
    a7, b3 = open_source(run_a[0], weight=7), open_source(run_b[0], weight=3)
    again = PretrainLoader([a7, b3], micro_batch=50, **kw)
    np.testing.assert_array_equal(np.concatenate([again.next_windows() for _ in range(60)]), rows)


def test_state_restore_continues_identically(run_a, run_b):
    a, b = open_source(run_a[0], weight=0.5), open_source(run_b[0], weight=0.5)
    # chunks of 11 windows: the state is taken inside a chunk of each source (asserted below)
    kw = dict(block_size=24, micro_batch=3, rank=1, world_size=2, seed=9, shuffle_tokens=250)
    ref = PretrainLoader([a, b], **kw)
    for _ in range(70):  # source a wraps into epoch 1 on the way
        ref.next_windows()
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)  # what a checkpoint does; weights_only load must accept it
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert [st["chunk"] > 0 and st["index"] > 0 for st in state["sources"]] == [True, True]
    expected = [ref.next_windows() for _ in range(80)]
    assert max(ref.epochs()) >= 1
    resumed = PretrainLoader([a, b], **kw)
    resumed.load_state_dict(state)
    for want in expected:
        np.testing.assert_array_equal(resumed.next_windows(), want)
    assert resumed.state_dict() == ref.state_dict()


def test_state_from_other_data_is_refused(run_a, run_b):
    a, b = open_source(run_a[0]), open_source(run_b[0])
    state = PretrainLoader([a], block_size=8, micro_batch=1).state_dict()
    with pytest.raises(DataError, match="data state is for sources"):
        PretrainLoader([b], block_size=8, micro_batch=1).load_state_dict(state)
    with pytest.raises(DataError, match="block_size"):
        PretrainLoader([a], block_size=9, micro_batch=1).load_state_dict(state)
    with pytest.raises(DataError, match="shuffle_tokens 4194304; this run has 8, 0 and 64"):
        PretrainLoader([a], block_size=8, micro_batch=1, shuffle_tokens=64).load_state_dict(state)


def test_a_state_of_another_format_is_refused(run_a, run_b):
    """Only winnow.loader/2 states load (format 1 predates the first release and is gone)."""
    a, b = open_source(run_a[0], weight=0.5), open_source(run_b[0], weight=0.5)
    kw = dict(block_size=24, micro_batch=3, seed=9)
    state = PretrainLoader([a, b], **kw).state_dict()
    for fmt in ("winnow.loader/1", None):
        with pytest.raises(DataError, match="unknown data-loader state format"):
            PretrainLoader([a, b], **kw).load_state_dict({**state, "format": fmt})
    PretrainLoader([a, b], **kw).load_state_dict(state)


def test_text_parquet_with_tokenizer_equals_token_shards(tmp_path):
    from tokenizer import Tokenizer

    run, texts = tokenized_run(tmp_path)
    text_run = write_text_run(tmp_path / "text", texts, docs_per_part=33, rows_per_group=5)
    tok = Tokenizer.from_dir(run / "tokenizer")
    with pytest.raises(DataError, match="--tokenizer"):
        open_source(text_run)
    tokens_src, text_src = open_source(run), open_source(text_run, tokenizer=tok)
    assert text_src.kind == "text" and text_src.vocab_size == tokens_src.vocab_size
    a = PretrainLoader([tokens_src], block_size=32, micro_batch=4, shuffle_tokens=0)
    b = PretrainLoader([text_src], block_size=32, micro_batch=4, shuffle_tokens=0)
    n = tokens_src.tokens // (32 * 4)  # the whole first epoch
    for _ in range(n):
        np.testing.assert_array_equal(a.next_windows(), b.next_windows())
    # shuffled (the folder names differ, so do the permutations): a chunk holds the same windows.
    # A text source's size is unknown before reading: its chunk is not capped at one epoch.
    a = PretrainLoader([tokens_src], block_size=32, micro_batch=4, shuffle_tokens=32 * 40)
    b = PretrainLoader([text_src], block_size=32, micro_batch=4, shuffle_tokens=32 * 40)
    wa, wb = (np.concatenate([x.next_windows() for _ in range(20)]) for x in (a, b))  # 2 chunks
    for c in (slice(0, 40), slice(40, 80)):
        assert sorted(map(tuple, wa[c].tolist())) == sorted(map(tuple, wb[c].tolist()))
    assert not np.array_equal(wa, wb)
    np.testing.assert_array_equal(val_windows(tokens_src, 32, 10), val_windows(text_src, 32, 10))


def test_val_windows_fixed_and_split_over_ranks(run_a):
    run, _, val = run_a
    src = open_source(run, "val")
    stream = np.array([t for d in val for t in d])
    T = 16
    n_avail = (len(stream) - 1) // T
    allw = val_windows(src, T, 10_000)  # more asked than there are: stops at the end, no wrap
    assert len(allw) == n_avail
    for k, w in enumerate(allw):
        np.testing.assert_array_equal(w, stream[k * T : k * T + T + 1])
    parts = [val_windows(src, T, 25, rank=r, world_size=3) for r in range(3)]
    assert [len(p) for p in parts] == [9, 8, 8]
    np.testing.assert_array_equal(np.stack([parts[k % 3][k // 3] for k in range(25)]), allw[:25])
    with pytest.raises(DataError, match="fewer than"):
        val_windows(src, len(stream) + 5, 1)


def test_token_byte_lengths_count_text_bytes(tmp_path):
    from tokenizer import Tokenizer

    run, texts = tokenized_run(tmp_path, n_train=10, n_val=0)
    tok = Tokenizer.from_dir(run / "tokenizer")
    nbytes = token_byte_lengths(tok)
    assert nbytes.shape == (tok.vocab_size,) and nbytes[tok.eot_id] == 0 and nbytes[tok.pad_id] == 0
    text = texts[0] + " Über naïve café 😀"
    ids = [*tok.encode(text), tok.eot_id]
    assert nbytes[ids].sum() == len(text.encode("utf-8"))


def test_errors_name_the_problem(tmp_path, run_a, run_b):
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing manifest"):
        open_source(tmp_path / "empty")
    with pytest.raises(DataError, match="'val' split is empty"):
        open_source(run_b[0], "val")
    other = write_token_run(
        tmp_path / "other", random_docs(5, vocab_size=300, eot_id=299), vocab_size=300, eot_id=299
    )
    with pytest.raises(DataError, match="vocab mismatch"):
        check_compatible([open_source(run_a[0]), open_source(other)])
    with pytest.raises(DataError, match="positive"):
        parse_data_spec("runs/x:-1")
    assert parse_data_spec("runs/x:0.25") == ("runs/x", 0.25)
    assert parse_data_spec("C:/weird:path") == ("C:/weird:path", 1.0)
    # a document without the separator, and an id outside the vocabulary
    bad = write_token_run(tmp_path / "bad", [[1, 2, 3]], vocab_size=300, eot_id=299)
    with pytest.raises(DataError, match="does not end with eot_id"):
        PretrainLoader([open_source(bad)], block_size=2, micro_batch=1).next_windows()
    big = write_token_run(tmp_path / "big", [[1, 400, 299]], vocab_size=300, eot_id=299)
    with pytest.raises(DataError, match=">= vocab_size"):
        PretrainLoader([open_source(big)], block_size=2, micro_batch=1).next_windows()


def test_tokenizer_hash_mismatch(tmp_path):
    from tokenizer import Tokenizer

    run, _ = tokenized_run(tmp_path, n_train=20, n_val=2, name="r1")
    run2, _ = tokenized_run(tmp_path, n_train=20, n_val=2, seed=7, vocab_size=290, name="r2")
    other_tok = Tokenizer.from_dir(run2 / "tokenizer")
    with pytest.raises(DataError, match="tokenizer hash mismatch"):
        open_source(run, tokenizer=other_tok)
    manifest = run / "tokens" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["tokenizer"]["tokenizer_json_sha256"] = "0" * 64
    manifest.write_text(json.dumps(m))
    with pytest.raises(DataError, match="tokenizer hash mismatch"):
        open_source(run)


def test_reads_the_tokenize_stage_shard_writer(tmp_path):
    """Shards from the tokenize stage's own functions (run in-process, without Ray) read back as the
    tokenised documents, in the writer's shuffled order."""
    from train_fixtures import make_tokenizer, sentences

    from tokenizer import Tokenizer
    from tokenizer.shards import encode_part, plan_shards, write_shard

    texts = sentences(90, seed=4)
    tok_dir = make_tokenizer(tmp_path / "run" / "tokenizer", texts)
    tok = Tokenizer.from_dir(tok_dir)
    part = write_text_run(tmp_path / "run", texts, docs_per_part=90) / "data" / "part-00000.parquet"
    encoded = encode_part(str(part), 0, str(tmp_path / "enc.arrow"), str(tok_dir), tok.sha256, 0, 0.1, 6)
    encoded["path"] = str(tmp_path / "enc.arrow")
    shards = plan_shards({"p0": encoded}, 6, shard_tokens=800)
    splits = {
        "train": {"documents": 0, "tokens": 0, "shards": []},
        "val": {"documents": 0, "tokens": 0, "shards": []},
    }
    for s in shards:
        r = write_shard(s["slices"], str(tmp_path / "run" / "tokens" / s["name"]), tok.vocab_size)
        split = splits[s["split"]]
        split["documents"] += r["documents"]
        split["tokens"] += r["tokens"]
        split["shards"].append(
            {"path": s["name"], **{k: r[k] for k in ("documents", "tokens", "row_groups")}}
        )
    manifest = {
        "format": "winnow.tokens/1",
        "vocab_size": tok.vocab_size,
        "dtype": "uint16",
        "eot_id": tok.eot_id,
        "tokenizer": {"path": "../tokenizer", "tokenizer_json_sha256": tok.sha256},
        "splits": splits,
    }
    (tmp_path / "run" / "tokens" / "manifest.json").write_text(json.dumps(manifest))
    assert len(splits["train"]["shards"]) > 1 and splits["val"]["documents"] > 0

    def documents(split: str) -> list[tuple]:  # the whole split as one window, cut at the separators
        src = open_source(tmp_path / "run", split)
        stream = val_windows(src, src.tokens - 1, 1)[0]
        return [tuple(d.tolist()) for d in np.split(stream, np.flatnonzero(stream == tok.eot_id) + 1)[:-1]]

    train, val = documents("train"), documents("val")
    assert len(train) == splits["train"]["documents"] and len(val) == splits["val"]["documents"]
    assert sorted(train + val) == sorted(tuple([*ids, tok.eot_id]) for ids in tok.encode_batch(texts))
    loader = PretrainLoader([open_source(tmp_path / "run")], block_size=16, micro_batch=2, shuffle_tokens=0)
    stream = loader.next_windows()
    np.testing.assert_array_equal(stream[0], np.concatenate(train)[:17])


def test_shuffle_flag_defines_the_run_and_old_checkpoints_resume_unshuffled():
    """``--shuffle-tokens`` reaches the run settings (default 2^22, 0 = off), must not change on
    --resume, and a checkpoint saved before the flag existed resumes in stream order."""
    from pipeline.cli import _parser
    from train.pretrain import UsageError, resolve_args

    def args(*flags):
        return _parser().parse_args(["train", "pretrain", "--data", "runs/x", "--out", "o", *flags])

    assert resolve_args(args(), None)["shuffle_tokens"] == 1 << 22
    assert resolve_args(args("--shuffle-tokens", "0"), None)["shuffle_tokens"] == 0
    with pytest.raises(UsageError, match="--shuffle-tokens must be >= 0"):
        resolve_args(args("--shuffle-tokens", "-5"), None)
    saved = resolve_args(args("--shuffle-tokens", "1000"), None)
    assert resolve_args(args(), saved)["shuffle_tokens"] == 1000
    with pytest.raises(UsageError, match="--shuffle-tokens 0 \\(checkpoint: 1000\\)"):
        resolve_args(args("--shuffle-tokens", "0"), saved)
    before = {k: v for k, v in saved.items() if k != "shuffle_tokens"}
    assert resolve_args(args(), before)["shuffle_tokens"] == 0
