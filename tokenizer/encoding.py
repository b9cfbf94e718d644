"""Load a winnow tokenizer folder and encode/decode with tiktoken.

A tokenizer folder (``RUN_DIR/tokenizer/``, or the copy inside a checkpoint) holds three files:

* ``tokenizer.tiktoken`` -- merge ranks, ``base64(token_bytes) rank`` per line (tiktoken's format);
* ``tokenizer.json`` -- the same tokenizer for Hugging Face ``tokenizers`` / ``transformers``;
* ``winnow_tokenizer.json`` -- pattern, special tokens, vocabulary size, sha256 of ``tokenizer.json``.

Encoding uses tiktoken built from the ranks: it gives the same ids as the HF ``tokenizer.json``
(proved in ``tests/test_tokenizer_hf.py``) and is several times faster (``bench/tokenizer_bench.py``).

An *imported* folder (``"kind": "imported"``, written by ``winnow import hf``, ``train/import_hf.py``)
keeps a Hugging Face tokenizer's own ids: ranks are the vocabulary ids (not necessarily from 0), the
special tokens are the source's added tokens wherever their ids are, and ``roles`` names which of
them play ``eot`` (the model's eos), ``pad`` and ``bos``; winnow's six special tokens may be absent.
Winnow-trained folders are read exactly as before.
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
# ``winnow_tokenizer.json``'s "kind" for a tokenizer converted from Hugging Face (train/import_hf.py)
IMPORTED = "imported"

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
        self._unused: dict[int, list[int]] = {}  # unused_ids, per number of embedding rows
        # "imported": a Hugging Face tokenizer converted by ``train/import_hf.py``; its ids are the
        # source's (the embedding rows are indexed by them), so the layout rules below differ
        self.imported: bool = meta.get("kind") == IMPORTED
        if self.imported:
            self._check_imported(path, meta, ranks)
        else:
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
            # what precedes a document: winnow's pretraining puts <|endoftext|> before each one
            self.bos_id: int | None = self.eot_id
        self.encoding = tiktoken.Encoding(
            name=f"winnow-{self.sha256[:12]}",
            pat_str=self.pattern,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )

    def _check_imported(self, path: Path, meta: dict, ranks: dict[bytes, int]) -> None:
        """Layout of an imported tokenizer: any ids, disjoint, below ``vocab_size``; roles by name.

        ``roles``: ``eot`` (the source's eos token: ends documents and generation), ``pad`` (None:
        the eos id pads, which the attention mask hides anyway) and ``bos`` (None: nothing is
        prepended, e.g. Qwen-style tokenizers).
        """
        ids = list(ranks.values()) + list(self.special_tokens.values())
        self._imported_ids = frozenset(ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"{path}: an id is used twice by the ranks and the special tokens")
        self.vocab_size = int(meta["vocab_size"])
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise ValueError(f"{path / META_FILE}: ids must lie in [0, vocab_size {self.vocab_size})")
        roles = meta.get("roles") or {}

        def role(name: str, required: bool) -> int | None:
            token = roles.get(name)
            if token is None and not required:
                return None
            if token not in self.special_tokens:
                raise ValueError(f"{path / META_FILE}: role {name} names {token!r}, not a special token")
            return self.special_tokens[token]

        self.eot_id = role("eot", True)
        pad = role("pad", False)
        self.pad_id = self.eot_id if pad is None else pad
        self.bos_id = role("bos", False)

    def unused_ids(self, n: int) -> list[int]:
        """Ids below ``n`` (a model's embedding rows) that no token has: the rows past the
        tokenizer's vocabulary (an HF model padded to a multiple of 64, ``add_chat_tokens``'
        spare rows) and the holes of an imported layout.  Generation never picks them: they
        have no text to decode.  Remembered per ``n``: the playground asks on every request, and an
        imported layout's scan is ~10 ms for a 128k vocabulary."""
        if n not in self._unused:
            if self.imported:
                self._unused[n] = [i for i in range(n) if i not in self._imported_ids]
            else:
                self._unused[n] = list(range(self.vocab_size, n))
        return self._unused[n]

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
