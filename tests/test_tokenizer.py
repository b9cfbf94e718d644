"""tokenizer.Tokenizer and the tokenizer folder (contract in ../notes: files, ids, API)."""

from __future__ import annotations

import base64
import gzip
import json
import shutil

import pytest
from helpers import SHARED
from tiktoken.load import load_tiktoken_bpe

from tokenizer import EOT, SPECIAL_TOKENS, Tokenizer
from tokenizer.encoding import GPT4_PATTERN, find_tokenizer_dir
from tokenizer.folder import save_tokenizer_dir
from tokenizer.train import train_tokenizer

needs_data = pytest.mark.skipif(not (SHARED / "english_dev.jsonl.gz").exists(), reason="no shared dev data")


def read_texts(name: str) -> list[str]:
    with gzip.open(SHARED / name, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    if not (SHARED / "english_dev.jsonl.gz").exists():
        pytest.skip("no shared dev data")
    return {"english": read_texts("english_dev.jsonl.gz"), "lid": read_texts("lid_dev.jsonl.gz")}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus):
    """A run dir with a 1,000-token tokenizer trained on English + every language of lid_dev."""
    run = tmp_path_factory.mktemp("run")
    train_tokenizer(corpus["english"][::7] + corpus["lid"][::5], 1000, run / "tokenizer")
    return run


@pytest.fixture(scope="module")
def tok(run_dir) -> Tokenizer:
    return Tokenizer.from_dir(run_dir)


def test_folder_files_follow_the_contract(run_dir, tok):
    d = run_dir / "tokenizer"
    meta = json.loads((d / "winnow_tokenizer.json").read_text())
    ranks = load_tiktoken_bpe(str(d / "tokenizer.tiktoken"))
    assert sorted(ranks.values()) == list(range(len(ranks)))
    assert all(bytes([b]) in ranks for b in range(256))
    assert not any(s.encode() in ranks for s in SPECIAL_TOKENS)
    assert meta["format"] == "winnow.tokenizer/1"
    assert meta["pattern"] == GPT4_PATTERN
    assert list(meta["special_tokens"]) == list(SPECIAL_TOKENS)
    assert list(meta["special_tokens"].values()) == list(range(len(ranks), len(ranks) + len(SPECIAL_TOKENS)))
    assert meta["vocab_size"] == 1000 == len(ranks) + len(SPECIAL_TOKENS) == tok.vocab_size
    assert meta["trained_on"]["documents"] > 0 and meta["trained_on"]["trainer"] == "rustbpe"
    assert tok.eot_id == len(ranks) and tok.pad_id == len(ranks) + 1
    assert tok.special_tokens == meta["special_tokens"]
    import hashlib

    assert (
        tok.sha256
        == meta["tokenizer_json_sha256"]
        == hashlib.sha256((d / "tokenizer.json").read_bytes()).hexdigest()
    )
    # every line is base64 bytes, a space, the rank
    first = (d / "tokenizer.tiktoken").read_text().splitlines()[65]
    assert first == f"{base64.b64encode(b'A').decode()} {ranks[b'A']}"


def test_from_dir_accepts_run_dir_folder_and_checkpoint(run_dir, tmp_path):
    ckpt = tmp_path / "checkpoints" / "step-00000001"
    shutil.copytree(run_dir / "tokenizer", ckpt / "tokenizer")
    for p in (run_dir, run_dir / "tokenizer", ckpt, ckpt / "tokenizer"):
        assert Tokenizer.from_dir(p).encode("Hello world") == Tokenizer.from_dir(run_dir).encode(
            "Hello world"
        )
    with pytest.raises(FileNotFoundError, match="no winnow tokenizer"):
        Tokenizer.from_dir(tmp_path)


def test_modified_folder_is_refused(run_dir, tmp_path):
    d = shutil.copytree(run_dir / "tokenizer", tmp_path / "tokenizer")
    (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace('"Ġ"', '"Ġ" '))
    with pytest.raises(ValueError, match="sha256"):
        Tokenizer.from_dir(d)
    assert Tokenizer.from_dir(d, verify=False).vocab_size == 1000


def test_special_tokens_are_plain_text_unless_allowed(tok):
    text = f"one{EOT}two<|user|>"
    plain = tok.encode(text)
    assert tok.eot_id not in plain and tok.special_tokens["<|user|>"] not in plain
    assert tok.decode(plain) == text
    allowed = tok.encode(text, allowed_special="all")
    assert allowed.count(tok.eot_id) == 1 and allowed[-1] == tok.special_tokens["<|user|>"]
    only_eot = tok.encode(text, allowed_special={EOT})
    assert tok.eot_id in only_eot and tok.special_tokens["<|user|>"] not in only_eot
    assert tok.decode(allowed) == text
    assert tok.token_bytes(tok.eot_id) == EOT.encode()


def test_encode_batch_decode_bytes_and_token_bytes(tok, corpus):
    texts = corpus["lid"][:300]
    batch = tok.encode_batch(texts, num_threads=2)
    assert batch == [tok.encode(t) for t in texts]
    for ids, t in zip(batch[:50], texts[:50]):
        assert tok.decode_bytes(ids) == t.encode()
        assert b"".join(tok.token_bytes(i) for i in ids) == t.encode()
    # a split multi-byte character decodes with a replacement character, never an exception
    lead_byte = tok.encoding.encode_single_token(b"\xe2")
    assert tok.decode([lead_byte]) == "\ufffd"
    assert tok.decode([*tok.encode("ab"), lead_byte]) == "ab\ufffd"


@needs_data
def test_lossless_round_trip_of_every_dev_document(tok, corpus):
    texts = corpus["english"] + corpus["lid"]
    assert len(texts) > 13_000
    for ids, text in zip(tok.encode_batch(texts, num_threads=2), texts):
        assert tok.decode(ids) == text


def test_awkward_text_round_trips(tok):
    texts = [
        "",
        "\x00\x01\x1f\x7f control \x0b\x0c\r\n\r\n",
        "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 🇩🇪 ✔️",
        "مرحبا بالعالم — 你好，世界 — नमस्ते — 😀" * 3,
        "\ufeffBOM and \u200b zero width \u00a0 nbsp",
        "   leading spaces\n\n\n\ttabs   \n",
        "123456789 3.14159 1e-9 0x1F",
        "x" * 20_000,
    ]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


def test_lone_surrogates_become_replacement_characters(tok):
    ids = tok.encode("a\ud800b\udfffc")
    assert tok.decode(ids) == "a\ufffdb\ufffdc"
    assert tok.encode_batch(["a\ud800b"]) == [tok.encode("a\ufffdb")]


def test_extra_special_tokens_and_bad_input(tmp_path):
    texts = ["hello world, hello there"] * 20
    d = train_tokenizer(texts, 300, tmp_path / "tokenizer", extra_special_tokens=["<|tool|>"])
    tok = Tokenizer.from_dir(d)
    assert list(tok.special_tokens)[-1] == "<|tool|>"
    assert tok.special_tokens["<|tool|>"] == tok.vocab_size - 1
    # this tiny corpus runs out of pairs long before 300 - 7 ranks: fewer ranks, ids still dense
    assert tok.vocab_size < 300 and tok.eot_id == tok.vocab_size - len(SPECIAL_TOKENS) - 1
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts, 200, tmp_path / "small")
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match="single bytes"):
        save_tokenizer_dir(tmp_path / "x", {k: v for k, v in ranks.items() if v < 255})
    with pytest.raises(ValueError, match=r"0\.\.R-1"):
        save_tokenizer_dir(tmp_path / "x", {**ranks, b"ab": 300})
    with pytest.raises(ValueError, match="duplicate"):
        save_tokenizer_dir(tmp_path / "x", ranks, extra_special_tokens=["<|a|>", "<|a|>"])
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))


def test_find_tokenizer_dir_prefers_the_folder_itself(run_dir):
    assert find_tokenizer_dir(run_dir / "tokenizer") == run_dir / "tokenizer"
    assert find_tokenizer_dir(run_dir) == run_dir / "tokenizer"
