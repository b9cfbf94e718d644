"""The production trainer (rustbpe) against a pure-Python reference BPE trainer (the oracle).

The oracle is the textbook algorithm, recounting every pair at every step (quadratic, fine for
toy inputs).  The merge rule it pins down, which ``tokenizer/train.py`` documents:

* pre-tokens are matches of the split regex, counted as unique chunks of UTF-8 bytes;
* a pair's count is its number of adjacent occurrences (overlapping: "aaa" has 2 of (a, a)),
  times the chunk's count;
* the most frequent pair is merged; **ties go to the smallest (left id, right id)**;
* occurrences are replaced left to right without overlap ("aaa" -> [aa, a]); new id = 256 + step.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from itertools import pairwise

import pytest
import regex
from helpers import SHARED

from tokenizer.encoding import GPT4_PATTERN
from tokenizer.train import train_ranks


def reference_bpe(texts: list[str], num_ranks: int, pattern: str = GPT4_PATTERN) -> dict[bytes, int]:
    chunks = Counter(m.group().encode() for t in texts for m in regex.finditer(pattern, t))
    words = {c: list(c) for c in chunks}  # chunk -> its current token ids
    vocab = {i: bytes([i]) for i in range(256)}
    while len(vocab) < num_ranks:
        pairs: Counter[tuple[int, int]] = Counter()
        for c, ids in words.items():
            for pair in pairwise(ids):
                pairs[pair] += chunks[c]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        new = len(vocab)
        vocab[new] = vocab[best[0]] + vocab[best[1]]
        for c, ids in words.items():
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            words[c] = out
    return {b: i for i, b in vocab.items()}


# Built so that ties are common (equal counts everywhere) and runs of one letter overlap
# ("aaaa", "zzzzz"), with multi-byte letters, digits and punctuation.
TOY = [
    "aaaa aaa aa a bbbb abab baba abba",
    "zzzzz zz yyxyyx xyxy the cat sat on the mat, the hat",
    "ééé éàé ñññ 日本語 日本 本日 12345 123 1234567",
    "hello!!! hello??? ... ---> <--> ",
    "low lower lowest newer wider new wide\n\n  \tend",
]


def test_oracle_itself_on_a_hand_worked_example():
    # "aaab" x1: pairs (a,a)=2, (a,b)=1 -> merge (a,a)=256 -> [aa, a, b]; then (aa,a)=1, (a,b)=1 tie:
    # smallest pair is (97, 98) = (a,b) -> 257; then (aa, ab) -> 258.
    ranks = reference_bpe(["aaab"], 259)
    assert {t: r for t, r in ranks.items() if r >= 256} == {b"aa": 256, b"ab": 257, b"aaab": 258}


@pytest.mark.parametrize("num_ranks", [260, 300, 400])
def test_rustbpe_matches_the_oracle_on_the_toy_corpus(num_ranks):
    expected = reference_bpe(TOY, num_ranks)
    ranks, info = train_ranks(TOY, num_ranks)
    assert ranks == expected
    assert info["documents"] == len(TOY) and info["chars"] == sum(map(len, TOY))


def test_both_stop_when_no_pair_is_left():
    expected = reference_bpe(["ab ab", "c"], 1000)
    # chunks "ab", " ab", "c": merges (a, b) then (" ", ab), then nothing is left to pair
    assert {t for t, r in expected.items() if r >= 256} == {b"ab", b" ab"}
    assert train_ranks(["ab ab", "c"], 1000)[0] == expected


@pytest.mark.skipif(not (SHARED / "english_dev.jsonl.gz").exists(), reason="no shared dev data")
def test_rustbpe_matches_the_oracle_on_real_text():
    with gzip.open(SHARED / "lid_dev.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(120), f)]
    expected = reference_bpe(texts, 450)
    ranks, _ = train_ranks(texts, 450)
    assert ranks == expected
