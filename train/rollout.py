"""Rollouts for the RL trainers (``winnow train grpo`` and ``winnow train ppo``): prompts in, sampled
completions out, then one padded batch whose per-token log-probs the trainers score and train on.

**Sampling** (``sample``) is ``train.generate``'s KV-cached sampler (``sample_steps``, the same
``process_logits`` / ``choose_next`` as ``winnow generate``), so a rollout draws exactly what
``winnow generate --strategy sample --seed S`` would for the same prompts.  Prompts of a batch are
left-padded for generation (the cache's per-row pad counts keep each row's positions and keys its
own).  A completion ends at the first stop id (``<|end|>`` or ``<|endoftext|>``; the stop token is
*kept* in ``completion_ids``, so the policy is trained to emit it: finish reason ``"eot"``) or after
``max_new_tokens`` tokens, or where the context is full (``"length"``); ``"stop"`` (a stop string, as
``winnow generate`` reports it) is reserved: ``sample`` takes stop ids, not strings.  ``use_cache=False``
re-runs the whole sequence for every new token instead (nanoGPT's loop: O(L²) per completion), only
for the speed bench's with/without comparison; it gives the same tokens for the same generator
(``tests/test_rollout.py``).

**Training batch** (``Rollout.pack``): prompt + completion of each row, **right**-padded, positions
from 0 in every row.  With right padding a real token only ever attends to earlier real tokens of
its own row (plain causal attention), so its logits do not depend on the padding or on the batch
partner, and the fused causal SDPA path is kept (the left-padded layout of generation would need an
explicit mask).  ``completion_mask[b, t] = 1`` where ``input_ids[b, t + 1]`` is a completion token:
log-probs (B, L-1) are aligned to ``input_ids[:, 1:]``, as every loss in ``train.losses``.

**Log-probs** (``token_logprobs``) are fp32 ``log_softmax`` of the logits, also under bf16
autocast: a bf16 log-prob has ~3 significant digits, and a ratio ``exp(logp - old_logp)`` of two of
them would be off by up to ~1 % before any update.

**Prompt files** (``read_prompts``): ``.jsonl`` / ``.jsonl.gz`` rows with ``prompt`` (a string, one
user turn) or ``messages`` (a list of ``{role, content}`` ending with a user turn); a bad row is a
``DataError`` naming file, line and field; other fields of a row are kept (a verifier may use them,
``train.tasks``).  ``render_prompt`` is ``tokenizer.chat.render_for_completion`` (the assistant turn
opened), the one chat format.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from tokenizer.chat import ChatFormatError, render_for_completion, validate_messages
from tokenizer.chat import stop_ids as chat_stop_ids
from train.data import DataError
from train.generate import (
    GenerationConfig,
    _cache_len,
    _left_pad,
    _model_dtype,
    choose_next,
    process_logits,
    sample_steps,
)
from train.model import GPT, KVCache

FINISH_REASONS = ("eot", "stop", "length")


@dataclass
class RolloutBatch:
    """Prompt + completion per row, right-padded (see the module docstring).

    ``input_ids`` (B, L) long; ``completion_mask`` (B, L-1) float, 1 where ``input_ids[:, t+1]`` is a
    completion token; ``lengths`` (B,) long, real tokens per row (prompt + completion);
    ``prompt_lengths`` (B,) long."""

    input_ids: torch.Tensor
    completion_mask: torch.Tensor
    lengths: torch.Tensor
    prompt_lengths: torch.Tensor

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.lengths - self.prompt_lengths

    def to(self, device: torch.device | str) -> RolloutBatch:
        return RolloutBatch(*(t.to(device) for t in (self.input_ids, self.completion_mask, self.lengths,
                                                       self.prompt_lengths)))  # fmt: skip


@dataclass
class Rollout:
    """Sampled completions: ``completion_ids[i]`` continues ``prompt_ids[i]`` and includes its stop
    token when ``finish_reasons[i] == "eot"``."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    finish_reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def pack(self, pad_id: int) -> RolloutBatch:
        """The right-padded training batch of these rows."""
        rows = [[*p, *c] for p, c in zip(self.prompt_ids, self.completion_ids, strict=True)]
        if not rows:
            raise ValueError("an empty rollout has nothing to pack")
        width = max(len(r) for r in rows)
        if width < 2:
            raise ValueError("a row needs at least one prompt and one completion token")
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
        for i, (row, p) in enumerate(zip(rows, self.prompt_ids, strict=True)):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            # position t predicts token t + 1: completion tokens sit at [len(p), len(row))
            mask[i, len(p) - 1 : len(row) - 1] = 1.0
        return RolloutBatch(
            input_ids=ids,
            completion_mask=mask,
            lengths=torch.tensor([len(r) for r in rows], dtype=torch.long),
            prompt_lengths=torch.tensor([len(p) for p in self.prompt_ids], dtype=torch.long),
        )


# --------------------------------------------------------------------------------------------------
# Sampling


@torch.no_grad()
def _uncached_steps(
    model: GPT, prompts: Sequence[Sequence[int]], cfg: GenerationConfig, *, pad_id: int, generator
) -> Iterator[torch.Tensor]:
    """``sample_steps`` without reusing keys/values: every step runs the whole left-padded sequence
    so far (a fresh cache per step carries only the pad counts, so positions and masks are those of
    the cached path) and keeps the last logits.  The speed bench's baseline, nothing else."""
    cfg = cfg.resolved()
    device = model.rope_cos.device
    idx, pad = _left_pad(prompts, pad_id, device)
    cache_len = _cache_len(model, idx.shape[1], cfg.max_new_tokens)
    for _ in range(cache_len - idx.shape[1]):
        cache = KVCache(model.config, idx.shape[0], idx.shape[1], device=device, dtype=_model_dtype(model),
                        pad=pad)  # fmt: skip
        logits = model(idx, kv_cache=cache, last_only=True)
        nxt = choose_next(process_logits(logits[:, -1], cfg, None), cfg, generator)
        yield nxt
        idx = torch.cat([idx, nxt[:, None]], dim=1)


def _pad_and_stops(tokenizer_or_ids, stop_ids: Collection[int] | None) -> tuple[int, frozenset[int]]:
    if isinstance(tokenizer_or_ids, int):
        pad_id = tokenizer_or_ids
        if stop_ids is None:
            raise ValueError("stop_ids is required when a pad id is given instead of a tokenizer")
    else:
        pad_id = tokenizer_or_ids.pad_id
        if stop_ids is None:
            stop_ids = chat_stop_ids(tokenizer_or_ids)
    return pad_id, frozenset(stop_ids)


def sample(
    model: GPT,
    tokenizer_or_ids,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stop_ids: Collection[int] | None = None,
    use_cache: bool = True,
) -> Rollout:
    """One completion per prompt (repeat a prompt G times for a group), sampled from ``model``.

    ``tokenizer_or_ids``: a tokenizer (its ``pad_id``; stop ids default to ``<|endoftext|>`` and
    ``<|end|>``) or a pad id (then ``stop_ids`` is required).  ``temperature`` 0 is greedy.
    ``generator``: a seeded ``torch.Generator`` on the model's device makes the draw reproducible.
    The model is put in eval mode for sampling and switched back.
    """
    pad_id, stops = _pad_and_stops(tokenizer_or_ids, stop_ids)
    prompts = [list(p) for p in prompts]
    cfg = GenerationConfig(strategy="sample", max_new_tokens=max_new_tokens, temperature=temperature,
                           top_k=top_k, top_p=top_p).resolved()  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        if use_cache:
            steps = sample_steps(model, prompts, cfg, pad_id=pad_id, generator=generator)
        else:
            steps = _uncached_steps(model, prompts, cfg, pad_id=pad_id, generator=generator)
        out: list[list[int]] = [[] for _ in prompts]
        reasons: list[str | None] = [None] * len(prompts)
        for nxt in steps:
            for i, tok in enumerate(nxt.tolist()):
                if reasons[i] is None:
                    out[i].append(tok)
                    if tok in stops:
                        reasons[i] = "eot"
                    elif len(out[i]) >= max_new_tokens:
                        reasons[i] = "length"
            if all(r is not None for r in reasons):
                steps.close()
                break
    finally:
        model.train(was_training)
    return Rollout(prompts, out, [r or "length" for r in reasons])  # None: the context filled up


# --------------------------------------------------------------------------------------------------
# Log-probs of a packed batch


def token_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    return_entropy: bool = False,
    return_hidden: bool = False,
):
    """fp32 log-probs (B, L-1) of ``batch.input_ids[:, 1:]`` under ``model`` (with gradient unless
    the caller disables it).  Padding positions hold finite values that every consumer masks with
    ``completion_mask``.

    With ``return_entropy`` or ``return_hidden`` the result is a tuple ``(logp, entropy, hidden)``:
    ``entropy`` (B, L-1) the fp32 entropy of each position's next-token distribution (None unless
    asked), ``hidden`` (B, L-1, C) the final normed hidden states (None unless asked; PPO's value
    head reads them, so one forward serves both heads)."""
    ids = batch.input_ids
    bare = getattr(model, "module", model)  # DDP: lm_head lives on the wrapped module
    if return_hidden:
        hidden = model(ids[:, :-1], return_hidden=True)
        logits = bare.lm_head(hidden)
    else:
        hidden, logits = None, model(ids[:, :-1])
    logp_all = F.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
    if not (return_entropy or return_hidden):
        return logp
    entropy = -(logp_all.exp() * logp_all).sum(-1) if return_entropy else None
    return logp, entropy, hidden


# --------------------------------------------------------------------------------------------------
# Prompt files


def _prompt_messages(row: dict, where: str) -> list[dict]:
    if "prompt" in row:
        if not isinstance(row["prompt"], str):
            raise DataError(f"{where}: field `prompt` must be a string (use `messages` for a conversation)")
        return [{"role": "user", "content": row["prompt"]}]
    if "messages" in row:
        messages = row["messages"]
        try:
            validate_messages(messages)
        except ChatFormatError as exc:
            raise DataError(f"{where}: field `messages`: {exc}") from None
        if messages[-1]["role"] != "user":
            raise DataError(f"{where}: field `messages`: the last message must be a user turn")
        return [dict(m) for m in messages]
    raise DataError(f"{where}: no `prompt` (a string) or `messages` field (fields: {sorted(row)})")


def read_prompt_rows(path: str | Path) -> list[tuple[list[dict], dict]]:
    """(messages, the whole row) of every row: ``read_prompts`` plus each row's other fields."""
    from train.sft import _read_lines  # the one reader of .jsonl[.gz] rows

    path = Path(path)
    rows = [(_prompt_messages(row, f"{path}:{n}"), row) for n, row in _read_lines(path)]
    if not rows:
        raise DataError(f"{path}: no rows (an empty file)")
    return rows


def read_prompts(path: str | Path) -> list[list[dict]]:
    """The prompts of a file as message lists (see the module docstring)."""
    return [messages for messages, _ in read_prompt_rows(path)]


def render_prompt(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids of a prompt with the assistant turn opened (``render_for_completion``)."""
    return render_for_completion(tokenizer, messages)
