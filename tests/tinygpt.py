"""Builders for the model / generation / export tests: tiny GPTs, a bigram GPT with chosen
next-token log-probabilities, a byte-level tokenizer folder, and a checkpoint folder."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch

from train.model import GPT, GPTConfig


def tiny_gpt(vocab_size: int = 101, seed: int = 0, **overrides) -> GPT:
    fields = dict(n_embd=64, n_head=4, mlp_hidden=96, block_size=64)
    fields.update(overrides)
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_depth(2, vocab_size, **fields)).eval()


def bigram_gpt(table: torch.Tensor, block_size: int = 64) -> GPT:
    """A real GPT whose logits at every position are ``table[last token]`` (a (V, V) tensor).

    Attention and MLP write nothing (zero output projections), so the residual stream is the
    embedding; embedding ``sqrt(d)·e_t`` has RMS 1, so RMSNorm passes it through, and the untied
    head's column t is ``table[t] / sqrt(d)``.
    """
    V = table.shape[0]
    d = 64 * math.ceil(V / 64)
    model = GPT(
        GPTConfig.from_depth(1, V, block_size=block_size, n_embd=d, tie_embeddings=False, norm_eps=1e-12)
    )
    with torch.no_grad():
        for block in model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.embed_tokens.weight.zero_()
        model.embed_tokens.weight[:, :V] = math.sqrt(d) * torch.eye(V)
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, :V] = table.T / math.sqrt(d)
    return model.eval()


def chain_table(vocab_size: int, chain: list[int], floor: float = -10.0) -> torch.Tensor:
    """Bigram logits that deterministically follow ``chain`` (chain[i] → chain[i + 1])."""
    table = torch.full((vocab_size, vocab_size), floor)
    for a, b in itertools.pairwise(chain):
        table[a, b] = 10.0
    return table


def byte_tokenizer_dir(path: Path) -> Path:
    """A tokenizer folder with no merges: token id = byte value, then the special tokens."""
    from tokenizer.folder import save_tokenizer_dir

    return save_tokenizer_dir(path, {bytes([b]): b for b in range(256)})


def trained_tokenizer_dir(path: Path, vocab_size: int = 320) -> Path:
    """A small real BPE tokenizer trained on a few KB of English."""
    from tokenizer.train import train_tokenizer

    sentence = (
        "the quick brown fox jumps over the lazy dog while data curation keeps good text and drops "
        "spam, boilerplate and near duplicates before a small language model trains on the shards"
    )
    words = sentence.split(" ")
    texts = [" ".join(words[(i * 7) % len(words) :] + words[: (i * 7) % len(words)]) for i in range(60)]
    return train_tokenizer(texts, vocab_size, path)


def save_gpt_checkpoint(model: GPT, out: Path, tokenizer_dir: Path) -> Path:
    from train.checkpoint import save_checkpoint

    return save_checkpoint(out, 1, model, tokenizer_dir=tokenizer_dir, meta={"tokens": 0}, trainer_state=None)
