"""``tokenizer.json`` (Hugging Face) gives exactly the ids of tiktoken over ``tokenizer.tiktoken``."""

from __future__ import annotations

import gzip
import json

import pytest
import tokenizers
from helpers import SHARED

from tokenizer import SPECIAL_TOKENS, Tokenizer
from tokenizer.folder import bytes_to_unicode, merges_from_ranks
from tokenizer.train import train_tokenizer

pytestmark = pytest.mark.skipif(not (SHARED / "english_dev.jsonl.gz").exists(), reason="no shared dev data")

AWKWARD = [
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 🇩🇪 ✔️ 😀😀😀",
    "\x00\x01\x1f\x7f control \x0b\x0c\r\n\r\n\x85 \u2028 \u2029",
    "\ufeffBOM, \u200b zero width, \u00a0nbsp, \u3000 ideographic space",
    "   leading spaces\n\n\n\ttabs   \n \n",
    "I'm you're WE'LL they'VE it's 'quoted' ''",
    "123456789 3.14159 1e-9 0x1F ١٢٣٤ 一二三",
    "مرحبا بالعالم — 你好，世界 — नमस्ते — Привет, мир — ᚠᛇᚻ",
    "a" * 5000 + " " + "ab" * 3000,
]


def read_texts(name: str) -> list[str]:
    with gzip.open(SHARED / name, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return read_texts("english_dev.jsonl.gz") + read_texts("lid_dev.jsonl.gz")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, texts):
    """4,096 tokens trained on a third of the documents (all scripts of lid_dev)."""
    return train_tokenizer(texts[::3], 4096, tmp_path_factory.mktemp("t") / "tokenizer")


def test_hf_equals_tiktoken_on_real_multilingual_text(folder, texts):
    """Every other dev document (all of them, at 32k, in bench/tokenizer_bench.py)."""
    tok = Tokenizer.from_dir(folder)
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert hf.get_vocab_size() == tok.vocab_size == 4096
    sample = [t for t in texts[1::2] if "<|" not in t] + AWKWARD  # HF would read a literal special token
    ours = tok.encode_batch(sample, num_threads=2)
    theirs = [e.ids for e in hf.encode_batch(sample, add_special_tokens=False)]
    mismatches = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not mismatches, f"{len(mismatches)} documents differ, first: {sample[mismatches[0]][:200]!r}"
    assert len(sample) > 6_900
    # the HF decoder is lossless too
    for ids, text in zip(theirs[::50], sample[::50]):
        assert hf.decode(ids, skip_special_tokens=False) == text


def test_hf_vocab_and_merges_are_byte_level(folder):
    tok = Tokenizer.from_dir(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    model = data["model"]
    assert model["type"] == "BPE" and model["ignore_merges"] is True
    table = bytes_to_unicode()
    ranks = tok.encoding._mergeable_ranks
    assert len(model["vocab"]) == len(ranks) == tok.vocab_size - len(SPECIAL_TOKENS)
    for token, rank in list(ranks.items())[:: max(1, len(ranks) // 500)]:
        assert model["vocab"]["".join(table[b] for b in token)] == rank
    merges = merges_from_ranks(ranks)
    assert len(merges) == len(model["merges"]) == len(ranks) - 256
    for (left, right), (l_str, r_str) in zip(merges, model["merges"]):
        assert model["vocab"][l_str] < model["vocab"][l_str + r_str]
        assert ranks[left + right] == model["vocab"][l_str + r_str]
    added = {a["content"]: a["id"] for a in data["added_tokens"]}
    assert added == tok.special_tokens and all(a["special"] for a in data["added_tokens"])
    assert data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == tok.pattern
    assert data["decoder"]["type"] == "ByteLevel"


def test_transformers_loads_it_with_the_same_ids(folder, texts):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_dir(folder)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert len(fast) == tok.vocab_size
    for text in texts[::400] + AWKWARD:
        ids = fast(text, add_special_tokens=False)["input_ids"]
        assert ids == tok.encode(text)
        assert fast.decode(ids) == text
    chat = "<|system|>Be brief.<|end|><|user|>Hi!<|end|><|assistant|>Hello.<|end|><|endoftext|>"
    assert fast(chat, add_special_tokens=False)["input_ids"] == tok.encode(chat, allowed_special="all")
    assert fast.convert_tokens_to_ids("<|pad|>") == tok.pad_id
