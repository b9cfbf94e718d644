"""Load a winnow tokenizer folder and encode/decode with tiktoken.

A tokenizer folder (``RUN_DIR/tokenizer/``, or the copy inside a checkpoint) holds three files:

* ``tokenizer.tiktoken`` -- merge ranks, ``base64(token_bytes) rank`` per line (tiktoken's format);
* ``tokenizer.json`` -- the same tokenizer for Hugging Face ``tokenizers`` / ``transformers``;
* ``winnow_tokenizer.json`` -- pattern, special tokens, vocabulary size, sha256 of ``tokenizer.json``.

Encoding uses tiktoken built from the ranks: it gives the same ids as the HF ``tokenizer.json``
(proved in ``tests/test_tokenizer_hf.py``) and is several times faster (``bench/tokenizer_bench.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

FORMAT = "winnow.tokenizer/1"
RANKS_FILE = "tokenizer.tiktoken"
HF_FILE = "tokenizer.json"
META_FILE = "winnow_tokenizer.json"

# GPT-4's (cl100k) split regex: contractions, letter runs with one leading non-letter, numbers of at
# most 3 digits, punctuation runs, newlines, whitespace.  Possessive quantifiers keep it linear.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)

# The fixed special tokens, ids R, R+1, ... (R = number of merge ranks), in this order.  Extra
# special tokens a user asks for come after them.
EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (EOT, PAD, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


def find_tokenizer_dir(path: str | Path) -> Path:
    """The tokenizer folder for ``path``: itself, or ``path/tokenizer`` (a run dir, a checkpoint)."""
    p = Path(path)
    for cand in (p, p / "tokenizer"):
        if (cand / RANKS_FILE).is_file() and (cand / META_FILE).is_file():
            return cand
    raise FileNotFoundError(
        f"no winnow tokenizer at {p}: expected {RANKS_FILE} and {META_FILE} in it or in {p / 'tokenizer'}"
    )


class Tokenizer:
    """Byte-level BPE tokenizer of a winnow tokenizer folder (tiktoken underneath)."""

    def __init__(self, path: Path, meta: dict, ranks: dict[bytes, int]):
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / META_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
        self.path = path
        self.meta = meta
        self.pattern: str = meta["pattern"]
        self.special_tokens: dict[str, int] = {k: int(v) for k, v in meta["special_tokens"].items()}
        self.sha256: str = meta["tokenizer_json_sha256"]
        self.num_ranks = len(ranks)
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise ValueError(f"{path / RANKS_FILE}: ranks are not 0..{len(ranks) - 1}")
        if sorted(self.special_tokens.values()) != list(
            range(len(ranks), len(ranks) + len(self.special_tokens))
        ):
            raise ValueError(f"{path / META_FILE}: special token ids must follow the {len(ranks)} ranks")
        for name in (EOT, PAD):
            if name not in self.special_tokens:
                raise ValueError(f"{path / META_FILE}: special token {name} is missing")
        self.vocab_size: int = len(ranks) + len(self.special_tokens)
        if int(meta["vocab_size"]) != self.vocab_size:
            raise ValueError(
                f"{path / META_FILE}: vocab_size {meta['vocab_size']} != {len(ranks)} ranks + "
                f"{len(self.special_tokens)} special tokens"
            )
        self.eot_id: int = self.special_tokens[EOT]
        self.pad_id: int = self.special_tokens[PAD]
        self.encoding = tiktoken.Encoding(
            name=f"winnow-{self.sha256[:12]}",
            pat_str=self.pattern,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )

    @classmethod
    def from_dir(cls, path: str | Path, *, verify: bool = True) -> Tokenizer:
        """Load from a tokenizer folder, a run dir or a checkpoint holding ``tokenizer/``.

        ``verify`` checks ``tokenizer.json`` against the sha256 recorded next to it (~5 ms for 32k).
        """
        d = find_tokenizer_dir(path)
        meta = json.loads((d / META_FILE).read_text())
        if verify and (d / HF_FILE).is_file():
            actual = file_sha256(d / HF_FILE)
            if actual != meta.get("tokenizer_json_sha256"):
                raise ValueError(
                    f"{d / HF_FILE}: sha256 {actual} does not match {META_FILE} "
                    f"({meta.get('tokenizer_json_sha256')}); the folder was modified"
                )
        return cls(d, meta, load_tiktoken_bpe(str(d / RANKS_FILE)))

    def encode(self, text: str, *, allowed_special: Collection[str] | str = frozenset()) -> list[int]:
        """Ids of ``text``.  Special-token text is plain text unless listed in ``allowed_special``
        (or ``"all"``), so a document containing ``<|endoftext|>`` cannot inject the separator.
        Lone surrogates (not valid Unicode) are encoded as U+FFFD, as tiktoken does."""
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with every special token treated as plain text (fastest path)."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], *, num_threads: int = 8) -> list[list[int]]:
        """``encode`` for many texts on a thread pool (tiktoken releases the GIL)."""
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; invalid UTF-8 (a split multi-byte character) becomes U+FFFD."""
        return self.encoding.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.encoding.decode_bytes(list(ids))

    def token_bytes(self, id: int) -> bytes:
        """Bytes of one token (a special token's bytes are its UTF-8 name)."""
        return self.encoding.decode_single_token_bytes(int(id))

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
