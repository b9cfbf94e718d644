"""Train byte-level BPE merge ranks (rustbpe) and write a tokenizer folder.

Trainer choice (``bench/tokenizer_bench.py``, same ~25 MB of English, 32k vocabulary): rustbpe
(nanochat's, Rust, GPT-4 regex, tiktoken ranks out) trains in a fraction of HF ``tokenizers``' time
at the same compression; see ``bench/README.md`` for the numbers.

Merge rule (what ``tests/test_tokenizer_train.py``'s pure-Python oracle reproduces): pre-tokens are
regex matches counted as unique chunks; the pair count is the number of adjacent (overlapping)
occurrences weighted by chunk frequency; each step merges the most frequent pair, **ties broken by
the smallest (left id, right id)**, replacing non-overlapping occurrences left to right; a new
token's id is 256 + step.  Training stops early when no pair is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizer.encoding import GPT4_PATTERN, SPECIAL_TOKENS
from tokenizer.folder import save_tokenizer_dir


def train_ranks(
    texts: Iterable[str], num_ranks: int, *, pattern: str = GPT4_PATTERN, buffer_size: int = 8192
) -> tuple[dict[bytes, int], dict]:
    """Train ``num_ranks`` ranks (256 bytes + merges); returns ``(ranks, info)``.

    ``texts`` is consumed once, streaming (rustbpe counts unique pre-tokens in parallel, so memory
    is the chunk table, not the text).  Fewer ranks come back when the text has too few pairs.
    """
    import rustbpe

    if num_ranks < 256:
        raise ValueError(f"need at least 256 ranks (the single bytes), got {num_ranks}")
    stats = {"documents": 0, "chars": 0}

    def counted():
        for t in texts:
            stats["documents"] += 1
            stats["chars"] += len(t)
            yield t

    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(counted(), num_ranks, buffer_size=buffer_size, pattern=pattern)
    # Ranks in id order.  Two merges could in principle spell the same bytes; tiktoken needs unique
    # bytes, so a repeat is dropped (and counted) and the ids closed up, which keeps the merge order.
    ranks: dict[bytes, int] = {}
    dropped = 0
    for token, _ in sorted(bpe.get_mergeable_ranks(), key=lambda kv: kv[1]):
        token = bytes(token)
        if token in ranks:
            dropped += 1
            continue
        ranks[token] = len(ranks)
    info = {"trainer": "rustbpe", "documents": stats["documents"], "chars": stats["chars"]}
    info["duplicate_merges_dropped"] = dropped
    return ranks, info


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | Path,
    *,
    extra_special_tokens: Sequence[str] = (),
    pattern: str = GPT4_PATTERN,
    trained_on: dict | None = None,
) -> Path:
    """Train on ``texts`` and write a complete tokenizer folder to ``out_dir``.

    ``vocab_size`` counts the special tokens (``SPECIAL_TOKENS`` + ``extra_special_tokens``), as in
    the ``tokenizer_train`` stage.  Tiny vocabularies (e.g. 300) are fine for tests.
    """
    n_special = len(SPECIAL_TOKENS) + len([s for s in extra_special_tokens if s not in SPECIAL_TOKENS])
    if vocab_size < 256 + n_special:
        raise ValueError(f"vocab_size {vocab_size} < 256 bytes + {n_special} special tokens")
    ranks, info = train_ranks(texts, vocab_size - n_special, pattern=pattern)
    info.update(trained_on or {})
    return save_tokenizer_dir(
        out_dir, ranks, extra_special_tokens=extra_special_tokens, pattern=pattern, trained_on=info
    )
