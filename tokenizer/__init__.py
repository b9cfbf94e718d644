"""Byte-level BPE tokenizer: training (``tokenizer.train``), folders (``tokenizer.folder``), encoding."""

from tokenizer.encoding import EOT, GPT4_PATTERN, PAD, SPECIAL_TOKENS, Tokenizer

__all__ = ["EOT", "GPT4_PATTERN", "PAD", "SPECIAL_TOKENS", "Tokenizer"]
