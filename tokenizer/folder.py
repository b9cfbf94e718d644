"""Write a complete tokenizer folder from merge ranks: tiktoken ranks, HF ``tokenizer.json``, metadata.

The HF file is derived from the ranks the way ``transformers`` converts tiktoken models: the vocabulary
is every token's bytes in GPT-2's printable ``bytes_to_unicode`` alphabet, and each multi-byte token's
merge is the pair that byte-level BPE with only lower ranks splits it into.  The model sets
``ignore_merges`` because tiktoken looks a whole pre-token up in the vocabulary before merging; with
both, HF and tiktoken give identical ids (tested on real multilingual text).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from pipeline.atomic import atomic_dir
from tokenizer.encoding import (
    FORMAT,
    GPT4_PATTERN,
    HF_FILE,
    IMPORTED,
    META_FILE,
    RANKS_FILE,
    SPECIAL_TOKENS,
    file_sha256,
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (space -> 'Ġ', ...)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def token_to_unicode(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _split_with_lower_ranks(ranks: Mapping[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Byte-level BPE of ``token`` using only ranks below ``max_rank`` (tiktoken's merge rule)."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge (left, right) of every multi-byte token, in rank order."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _split_with_lower_ranks(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"rank {rank} ({token!r}) is not a merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def build_hf_tokenizer(
    ranks: Mapping[bytes, int], special_tokens: Sequence[str], pattern: str = GPT4_PATTERN
):
    """A ``tokenizers.Tokenizer`` equal to tiktoken over ``ranks`` + ``special_tokens`` (ids after ranks)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token_to_unicode(t): r for t, r in ranks.items()}
    merges = [(token_to_unicode(a), token_to_unicode(b)) for a, b in merges_from_ranks(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special_tokens])
    for i, s in enumerate(special_tokens):
        if tok.token_to_id(s) != len(ranks) + i:
            raise ValueError(f"special token {s!r} got id {tok.token_to_id(s)}, expected {len(ranks) + i}")
    return tok


def check_ranks(ranks: Mapping[bytes, int]) -> None:
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("ranks must be exactly 0..R-1")
    missing = [b for b in range(256) if ranks.get(bytes([b])) is None]
    if missing:
        raise ValueError(f"ranks lack {len(missing)} single bytes (e.g. {missing[:5]}); all 256 are required")


def save_tokenizer_dir(
    out_dir: str | Path,
    ranks: Mapping[bytes, int],
    *,
    extra_special_tokens: Sequence[str] = (),
    pattern: str = GPT4_PATTERN,
    trained_on: dict | None = None,
) -> Path:
    """Write ``tokenizer.tiktoken``, ``tokenizer.json`` and ``winnow_tokenizer.json`` into ``out_dir``.

    Special tokens are ``SPECIAL_TOKENS`` then ``extra_special_tokens``, with ids ``len(ranks)``, ...
    The folder is written next to ``out_dir`` and renamed into place, so a reader never sees half of
    one; an existing ``out_dir`` is replaced.
    """
    check_ranks(ranks)
    specials = list(SPECIAL_TOKENS) + [s for s in extra_special_tokens if s not in SPECIAL_TOKENS]
    if len(set(specials)) != len(specials):
        raise ValueError(f"duplicate special tokens in {specials}")
    for s in specials:
        if not s or s.encode() in ranks:
            raise ValueError(f"special token {s!r} is empty or already an ordinary token")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        with open(tmp / RANKS_FILE, "w") as f:
            for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
                f.write(f"{base64.b64encode(token).decode()} {rank}\n")
        build_hf_tokenizer(ranks, specials, pattern).save(str(tmp / HF_FILE))
        meta = {
            "format": FORMAT,
            "pattern": pattern,
            "special_tokens": {s: len(ranks) + i for i, s in enumerate(specials)},
            "vocab_size": len(ranks) + len(specials),
            "tokenizer_json_sha256": file_sha256(tmp / HF_FILE),
            "trained_on": trained_on or {},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def save_imported_tokenizer_dir(
    out_dir: str | Path,
    ranks: Mapping[bytes, int],
    *,
    tokenizer_json: str,
    special_tokens: Mapping[str, int],
    pattern: str,
    roles: Mapping[str, str | None],
    source: dict,
) -> Path:
    """Write a tokenizer folder for a Hugging Face tokenizer converted by ``train/import_hf.py``.

    Unlike ``save_tokenizer_dir`` the ids are the source's, so ranks need not start at 0 and the
    special tokens (the source's added tokens) may sit anywhere: the model's embedding rows are
    indexed by these ids.  ``tokenizer.json`` is the source's file as given (HF keeps loading it
    exactly as before), ``roles`` name the tokens playing eot/pad/bos (see ``Tokenizer``) and
    ``vocab_size`` is the highest id + 1.  Written atomically, replacing ``out_dir``.
    """
    ids = list(ranks.values()) + list(special_tokens.values())
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        with open(tmp / RANKS_FILE, "w") as f:
            for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
                f.write(f"{base64.b64encode(token).decode()} {rank}\n")
        (tmp / HF_FILE).write_text(tokenizer_json, encoding="utf-8")
        meta = {
            "format": FORMAT,
            "kind": IMPORTED,
            "pattern": pattern,
            "special_tokens": dict(sorted(special_tokens.items(), key=lambda kv: kv[1])),
            "roles": dict(roles),
            "vocab_size": max(ids) + 1,
            "tokenizer_json_sha256": file_sha256(tmp / HF_FILE),
            "source": source,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir
