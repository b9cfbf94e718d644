"""Text generation: greedy, beam search, and sampling (plain, top-k, top-p), with a KV cache.

Two layers:

* **token ids** (no tokenizer): ``sample_steps`` yields the next token of every row, step by step;
  ``beam_search`` returns the best hypothesis per prompt; ``generate_ids`` runs either until
  ``eos_id``.  Batched prompts of different lengths are left-padded and share one ``KVCache`` (see
  ``train/model.py``: each row's RoPE positions and key mask ignore its padding, so a row's tokens do
  not depend on what it is batched with, up to float rounding).
* **text** (``generate``, ``stream``, ``main``): encodes prompts (after ``<|endoftext|>`` as BOS,
  which is what preceded every document in training), stops a row at ``<|endoftext|>`` (or
  ``<|end|>``, the end of a chat turn, as the exported ``generation_config.json`` does) or at the
  first stop string (checked on the decoded text; the stop string is not returned), and streams text
  deltas: bytes go through an incremental UTF-8 decoder, so a delta never ends inside a character,
  and text that could be the start of a stop string is held back until it is not.

Logits are processed in the order ``transformers`` uses: repetition penalty (CTRL's: a seen token's
logit is divided by the penalty when positive, multiplied when negative; prompt tokens count as
seen), temperature, top-k, top-p.  Temperature 0 means greedy.  Beam search ranks hypotheses by
sum of log-probabilities / generated_length ** length_penalty (as ``transformers``) and stops when
``num_beams`` hypotheses are finished and no running beam can beat the worst of them.

Cost: one forward of the whole prompt batch, then one forward of B (or B·num_beams) single tokens per
step; ``bench/generate_speed.py`` measures the cache's speed-up over re-running the full sequence.
"""

from __future__ import annotations

import argparse
import codecs
import functools
import json
import math
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from tokenizer.chat import render_for_completion, start_id, stop_ids
from train.model import GPT, KVCache

STRATEGIES = ("greedy", "beam", "sample", "top_k", "top_p")
SAMPLING = ("sample", "top_k", "top_p")


@dataclass
class GenerationConfig:
    """What to generate.  ``None`` means "the strategy's default" (see ``resolved``)."""

    strategy: str = "greedy"
    max_new_tokens: int = 128
    temperature: float | None = None  # sampling: 1.0; 0 → greedy
    top_k: int | None = None  # top_k: 50; optional extra filter for sample/top_p
    top_p: float | None = None  # top_p: 0.9; optional extra filter for sample/top_k
    num_beams: int | None = None  # beam: 4
    length_penalty: float = 1.0  # beam: > 0 favours longer hypotheses
    repetition_penalty: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None
    # ids never generated: embedding rows without a token (``spare_ids``), set by the text-level
    # entry points that know the tokenizer
    banned_ids: tuple[int, ...] = ()

    def resolved(self) -> GenerationConfig:
        """A copy with defaults filled in; ``ValueError`` naming every bad setting at once."""
        c = GenerationConfig(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        errors = []
        if c.strategy not in STRATEGIES:
            errors.append(f"strategy must be one of {', '.join(STRATEGIES)} (got {c.strategy!r})")
        if c.max_new_tokens < 1:
            errors.append(f"max_new_tokens must be >= 1 (got {c.max_new_tokens})")
        if c.repetition_penalty <= 0:
            errors.append(f"repetition_penalty must be > 0 (got {c.repetition_penalty}; 1 = off)")
        if any(not s for s in c.stop):
            errors.append("stop strings must not be empty")
        if c.temperature is not None and not (c.temperature >= 0 and math.isfinite(c.temperature)):
            errors.append(f"temperature must be >= 0 (got {c.temperature}; 0 = greedy)")
        if c.top_k is not None and c.top_k < 1:
            errors.append(f"top_k must be >= 1 (got {c.top_k})")
        if c.top_p is not None and not 0 < c.top_p <= 1:
            errors.append(f"top_p must be in (0, 1] (got {c.top_p})")
        if c.num_beams is not None and c.num_beams < 1:
            errors.append(f"num_beams must be >= 1 (got {c.num_beams})")
        if c.strategy in ("greedy", "beam"):
            given = [n for n in ("temperature", "top_k", "top_p") if getattr(c, n) is not None]
            if given:
                errors.append(f"{', '.join(given)} only apply to sampling strategies ({', '.join(SAMPLING)})")
        if c.strategy != "beam" and c.num_beams is not None:
            errors.append("num_beams only applies to --strategy beam")
        if c.strategy != "beam" and c.length_penalty != 1.0:
            errors.append("length_penalty only applies to --strategy beam")
        if errors:
            raise ValueError("invalid generation settings: " + "; ".join(errors))
        if c.strategy in SAMPLING:
            c.temperature = 1.0 if c.temperature is None else c.temperature
            if c.strategy == "top_k" and c.top_k is None:
                c.top_k = 50
            if c.strategy == "top_p" and c.top_p is None:
                c.top_p = 0.9
            if c.temperature == 0:  # the limit of sampling as temperature → 0
                c.strategy, c.temperature, c.top_k, c.top_p = "greedy", None, None, None
        if c.strategy == "beam" and c.num_beams is None:
            c.num_beams = 4
        c.stop = tuple(c.stop)
        return c


# --------------------------------------------------------------------------------------------------
# logits → next token


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: for tokens in ``seen`` (B, V bool), positive logits / penalty, negative × penalty."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th kept), the rest -inf."""
    if k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the nucleus: the smallest set of most probable tokens whose probabilities sum to >= p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= p  # the top token has before == 0 < p: never dropped
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@functools.lru_cache(maxsize=16)
def _id_tensor(ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``ids`` as an index tensor on ``device``, built once, not at every generated token."""
    return torch.tensor(ids, dtype=torch.long, device=device)


def process_logits(logits: torch.Tensor, cfg: GenerationConfig, seen: torch.Tensor | None) -> torch.Tensor:
    """Banned ids, repetition penalty, temperature, top-k, top-p (transformers' order), in fp32."""
    logits = logits.float()
    if cfg.banned_ids:
        logits = logits.index_fill(-1, _id_tensor(cfg.banned_ids, logits.device), float("-inf"))
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    if cfg.strategy in SAMPLING:
        logits = logits / cfg.temperature
        if cfg.top_k is not None:
            logits = filter_top_k(logits, cfg.top_k)
        if cfg.top_p is not None:
            logits = filter_top_p(logits, cfg.top_p)
    return logits


def choose_next(
    logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, V) processed logits → (B,) next tokens: argmax (greedy) or a draw (sampling strategies)."""
    if cfg.strategy == "greedy":
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# token-level generation


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (prepend a BOS token for an empty prompt)")
    longest = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        idx[i, longest - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
    pad = torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)
    return idx.to(device), pad.to(device)


def _cache_len(model: GPT, longest: int, max_new_tokens: int) -> int:
    block = model.config.block_size
    if longest >= block:
        raise ValueError(
            f"prompt of {longest} tokens leaves no room in the model's context of {block} tokens; "
            "shorten the prompt"
        )
    return min(block, longest + max_new_tokens)


def _seen_mask(prompts: Sequence[Sequence[int]], vocab_size: int, device) -> torch.Tensor:
    seen = torch.zeros(len(prompts), vocab_size, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        seen[i, torch.as_tensor(list(p), dtype=torch.long, device=device)] = True
    return seen


def _id_set(ids: int | Collection[int] | None) -> frozenset[int]:
    if ids is None:
        return frozenset()
    return frozenset([ids]) if isinstance(ids, int) else frozenset(ids)


def spare_ids(model: GPT, tokenizer) -> tuple[int, ...]:
    """The model's embedding rows that no token of ``tokenizer`` has (``GenerationConfig.banned_ids``)."""
    return tuple(tokenizer.unused_ids(model.config.vocab_size))


def end_ids(tokenizer) -> list[int]:
    """Ids that end a completion: ``tokenizer.chat.stop_ids`` (``<|endoftext|>``, and ``<|end|>`` when
    the tokenizer has it), so generation, chat and the exported generation_config agree."""
    return stop_ids(tokenizer)


def _model_dtype(model: GPT) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def sample_steps(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig,
    *,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,) on the model's device, once per step.

    Greedy and the sampling strategies (not beam).  Runs until ``max_new_tokens`` or the model's
    context is full; the caller stops early (closing the generator) when every row is done.
    """
    cfg = cfg.resolved()
    if cfg.strategy == "beam":
        raise ValueError("sample_steps does not do beam search; use beam_search")
    device = model.rope_cos.device
    idx, pad = _left_pad(prompts, pad_id, device)
    cache_len = _cache_len(model, idx.shape[1], cfg.max_new_tokens)
    cache = KVCache(model.config, len(prompts), cache_len, device=device, dtype=_model_dtype(model), pad=pad)
    seen = _seen_mask(prompts, model.config.vocab_size, device) if cfg.repetition_penalty != 1.0 else None
    logits = model(idx, kv_cache=cache, last_only=True)
    for step in range(cache_len - idx.shape[1]):
        nxt = choose_next(process_logits(logits[:, -1], cfg, seen), cfg, generator)
        yield nxt
        if seen is not None:
            seen[torch.arange(len(prompts), device=device), nxt] = True
        if step + 1 < cache_len - idx.shape[1]:
            logits = model(nxt[:, None], kv_cache=cache)


@torch.no_grad()
def beam_search(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig,
    *,
    eos_id: int | Collection[int] | None = None,
    pad_id: int = 0,
    is_stopped: Callable[[list[int]], bool] | None = None,
) -> list[tuple[list[int], float, str]]:
    """Best (new token ids, score, finish reason "eos" | "stop" | "length") per prompt; the
    ``num_beams`` beams of every prompt run as one batch.

    A hypothesis ends at ``eos_id`` (one id or several; not included) or when ``is_stopped(ids)``
    (e.g. a stop string appeared in its text; the ids are kept); at ``max_new_tokens`` (or a full
    context) the running beams are finished as they are.  Score: sum of log-probs / len ** length_penalty.
    """
    cfg = cfg.resolved()
    eos = _id_set(eos_id)
    nb, lp = cfg.num_beams, cfg.length_penalty
    B = len(prompts)
    device = model.rope_cos.device
    idx, pad = _left_pad(prompts, pad_id, device)
    cache_len = _cache_len(model, idx.shape[1], cfg.max_new_tokens)
    steps = cache_len - idx.shape[1]
    cache = KVCache(model.config, B, cache_len, device=device, dtype=_model_dtype(model), pad=pad)
    logits = model(idx, kv_cache=cache, last_only=True)
    cache.reorder(torch.arange(B, device=device).repeat_interleave(nb))  # row b*nb + j: beam j of prompt b
    logits = logits.repeat_interleave(nb, dim=0)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = _seen_mask(prompts, model.config.vocab_size, device).repeat_interleave(nb, dim=0)
    # only beam 0 is live at the start, so the first step does not pick the same token nb times
    scores = torch.full((B, nb), float("-inf"), device=device)
    scores[:, 0] = 0.0
    beams: list[list[list[int]]] = [[[] for _ in range(nb)] for _ in range(B)]
    finished: list[list[tuple[float, list[int], str]]] = [[] for _ in range(B)]
    done = [False] * B

    def normalised(score: float, length: int) -> float:
        return score / max(length, 1) ** lp

    for step in range(steps):
        logprobs = F.log_softmax(process_logits(logits[:, -1], cfg, seen), dim=-1)  # (B*nb, V)
        V = logprobs.shape[-1]
        cand = (scores.view(-1, 1) + logprobs).view(B, nb * V)
        top_scores, top_ids = torch.topk(cand, 2 * nb, dim=-1)  # enough to refill nb after eos picks
        rows, tokens, new_scores = [], [], []  # the next step's rows: (source row, token, score)
        for b in range(B):
            if done[b]:  # keep the batch shape; these rows are never read again
                rows += [b * nb] * nb
                tokens += [pad_id] * nb
                new_scores += [float("-inf")] * nb
                continue
            new_beams: list[list[int]] = []
            for rank, (s, flat) in enumerate(zip(top_scores[b].tolist(), top_ids[b].tolist(), strict=True)):
                if len(new_beams) == nb or s == float("-inf"):
                    break
                j, tok = divmod(flat, V)
                ids = [*beams[b][j], tok]
                if tok in eos:
                    if rank < nb:  # as transformers: an eos below the top nb candidates is not a hypothesis
                        finished[b].append((normalised(s, len(ids) - 1), beams[b][j], "eos"))
                    continue
                if is_stopped is not None and is_stopped(ids):
                    finished[b].append((normalised(s, len(ids)), ids, "stop"))
                    continue
                rows.append(b * nb + j)
                tokens.append(tok)
                new_scores.append(s)
                new_beams.append(ids)
            while len(new_beams) < nb:  # fewer live candidates than beams: dead (-inf) fillers
                rows.append(b * nb)
                tokens.append(pad_id)
                new_scores.append(float("-inf"))
                new_beams.append([])
            beams[b] = new_beams
            # done when nb hypotheses are finished and the best running beam cannot beat the worst
            # of the best nb; with length_penalty > 0 a running score only falls (transformers' heuristic)
            if len(finished[b]) >= nb:
                best_running = normalised(max(new_scores[-nb:]), step + 1)
                worst_kept = sorted(h[0] for h in finished[b])[-nb]
                done[b] = best_running <= worst_kept
        scores = torch.tensor(new_scores, device=device).view(B, nb)
        if all(done):
            break
        row_index = torch.tensor(rows, device=device)
        cache.reorder(row_index)
        if seen is not None:
            seen = seen.index_select(0, row_index)
            seen[torch.arange(B * nb, device=device), torch.tensor(tokens, device=device)] = True
        if step + 1 < steps:
            logits = model(torch.tensor(tokens, device=device)[:, None], kv_cache=cache)
    results = []
    for b in range(B):
        hyps = list(finished[b])
        if not done[b]:
            hyps += [
                (normalised(s, len(ids)), ids, "length")
                for s, ids in zip(scores[b].tolist(), beams[b], strict=True)
                if s > float("-inf")
            ]
        score, ids, reason = max(hyps, key=lambda h: h[0])
        results.append((ids, score, reason))
    return results


def generate_ids(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig,
    *,
    eos_id: int | Collection[int] | None = None,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """New token ids per prompt, each ending before ``eos_id`` (not included) or at the length limit."""
    cfg = cfg.resolved()
    eos = _id_set(eos_id)
    if cfg.strategy == "beam":
        return [ids for ids, _, _ in beam_search(model, prompts, cfg, eos_id=eos_id, pad_id=pad_id)]
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    steps = sample_steps(model, prompts, cfg, pad_id=pad_id, generator=generator)
    for nxt in steps:
        for i, tok in enumerate(nxt.tolist()):
            if done[i]:
                continue
            if tok in eos:
                done[i] = True
            else:
                out[i].append(tok)
        if all(done):
            steps.close()
            break
    return out


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A seeded ``torch.Generator`` on ``device`` (draws are reproducible for a seed), or None."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# text-level generation


@dataclass
class Completion:
    """One prompt's result.  ``token_ids``: the tokens generated (up to and including the one that
    completed a stop string; never ``<|endoftext|>``); ``text``: their text without the stop string;
    ``finish_reason``: ``"eot"`` (``<|endoftext|>`` or ``<|end|>``), ``"stop"`` (a stop string) or
    ``"length"``."""

    prompt: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int


class _TextState:
    """One row's decoded text: incremental UTF-8, stop strings, and what is safe to stream."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0
        self.ids: list[int] = []
        self.finish_reason: str | None = None

    def _find_stop(self, start: int) -> int:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else -1

    def _held_back(self) -> int:
        """Length of the longest end of the text that is a proper prefix of a stop string."""
        for k in range(min(self.longest_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stop):
                return k
        return 0

    def push(self, token: int) -> str:
        """Add a token; return the text delta that can be shown now."""
        self.ids.append(token)
        before = len(self.text)
        self.text += self.decoder.decode(self.tokenizer.token_bytes(token))
        if self.stop:
            hit = self._find_stop(max(0, before - self.longest_stop + 1))
            if hit >= 0:
                self.text = self.text[:hit]
                return self.finish("stop")
        safe = len(self.text) - self._held_back()
        delta = self.text[self.emitted : safe]
        self.emitted = max(self.emitted, safe)
        return delta

    def finish(self, reason: str) -> str:
        """End the row; return the remaining text (held-back text, a trailing partial character as U+FFFD)."""
        if self.finish_reason is None:
            self.finish_reason = reason
            if reason != "stop":
                self.text += self.decoder.decode(b"", final=True)
                hit = self._find_stop(max(0, self.emitted - self.longest_stop + 1)) if self.stop else -1
                if hit >= 0:
                    self.text = self.text[:hit]
                    self.finish_reason = "stop"
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta


def encode_prompts(tokenizer, prompts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
    """Prompt ids, after ``<|endoftext|>`` (the token before every document in training) when add_bos.
    Special-token text in a prompt is encoded as special tokens (prompts are trusted input, and chat
    prompts need ``<|user|>`` etc.)."""
    # the same start token as a chat conversation: <|endoftext|> for winnow's tokenizers, the bos
    # token (<s>) of an imported one
    bos = [start_id(tokenizer)] if add_bos else []
    return [bos + tokenizer.encode(p, allowed_special="all") for p in prompts]


def chat_prompt_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt as the user turn of a one-turn conversation, with the assistant turn opened
    (``tokenizer.chat.render_for_completion``; the prompt's special-token text stays text)."""
    return [render_for_completion(tokenizer, [{"role": "user", "content": p}]) for p in prompts]


def _events(
    model, tokenizer, prompts, cfg, add_bos, prompt_ids=None
) -> Iterator[tuple[int, str] | list[Completion]]:
    """Yield (row, text delta) as text becomes safe to show, then the list of Completions."""
    cfg = replace(cfg.resolved(), banned_ids=spare_ids(model, tokenizer))
    if prompt_ids is None:
        ids = encode_prompts(tokenizer, prompts, add_bos)
    else:
        ids = [list(p) for p in prompt_ids]
        if len(ids) != len(prompts):
            raise ValueError(f"{len(prompt_ids)} prompt_ids for {len(prompts)} prompts")
    states = [_TextState(tokenizer, cfg.stop) for _ in prompts]
    eos = end_ids(tokenizer)
    if cfg.strategy == "beam":

        def is_stopped(hyp: list[int]) -> bool:
            text = tokenizer.decode(hyp)
            return any(s in text for s in cfg.stop)

        results = beam_search(
            model, ids, cfg, eos_id=eos, pad_id=tokenizer.pad_id, is_stopped=is_stopped if cfg.stop else None
        )
        for row, (hyp, _score, reason) in enumerate(results):
            state, delta = states[row], ""
            for tok in hyp:
                delta += state.push(tok)
                if state.finish_reason:
                    break
            delta += state.finish("eot" if reason == "eos" else reason)
            if delta:
                yield row, delta
    else:
        generator = make_generator(cfg.seed, model.rope_cos.device)
        steps = sample_steps(model, ids, cfg, pad_id=tokenizer.pad_id, generator=generator)
        for nxt in steps:
            for row, tok in enumerate(nxt.tolist()):
                state = states[row]
                if state.finish_reason:
                    continue
                delta = state.finish("eot") if tok in eos else state.push(tok)
                if delta:
                    yield row, delta
            if all(s.finish_reason for s in states):
                steps.close()
                break
        for row, state in enumerate(states):
            if not state.finish_reason:
                delta = state.finish("length")
                if delta:
                    yield row, delta
    yield [
        Completion(
            prompt=p, text=s.text, token_ids=s.ids, finish_reason=s.finish_reason, prompt_tokens=len(i)
        )
        for p, s, i in zip(prompts, states, ids, strict=True)
    ]


def generate(
    model: GPT,
    tokenizer,
    prompts: str | Sequence[str],
    cfg: GenerationConfig | None = None,
    *,
    add_bos: bool = True,
    on_text: Callable[[int, str], None] | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
) -> list[Completion]:
    """Generate for one or more prompts; ``on_text(row, delta)`` is called as text streams in.

    ``prompt_ids`` (one list per prompt) are used as given instead of encoding the prompts (e.g. a
    rendered chat, ``chat_prompt_ids``); the prompts then only label the Completions."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for event in _events(model, tokenizer, prompts, cfg or GenerationConfig(), add_bos, prompt_ids):
        if isinstance(event, list):
            return event
        if on_text is not None:
            on_text(*event)
    raise AssertionError("unreachable")


@torch.no_grad()
def reply_samples(
    model: GPT, tokenizer, conversations: Sequence[Sequence[dict]], max_new_tokens: int = 64
) -> list[dict]:
    """Greedy replies of ``model`` to each conversation's last user turn (everything before its
    last assistant turn, rendered with the chat format), next to the reference reply: the
    ``samples.jsonl`` rows a trainer logs for ``winnow report``.  Greedy, so the rows depend only
    on the weights; the model's train/eval mode is restored."""
    prompts, references = [], []
    for conv in conversations:
        last = max((i for i, m in enumerate(conv) if m["role"] == "assistant"), default=len(conv))
        prompts.append(list(conv[:last]))
        references.append(conv[last]["content"] if last < len(conv) else None)
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    try:
        room = max(1, model.config.block_size - max_new_tokens)  # the prompt's end, if it is too long
        ids = [render_for_completion(tokenizer, p)[-room:] for p in prompts]
        cfg = GenerationConfig(strategy="greedy", max_new_tokens=max_new_tokens)
        done = generate(model, tokenizer, [p[-1]["content"] for p in prompts], cfg, prompt_ids=ids)
    finally:
        model.train(was_training)
    return [
        {"prompt": p[-1]["content"], "completion": c.text, "finish_reason": c.finish_reason}
        | ({"reference": r} if r is not None else {})
        for p, c, r in zip(prompts, done, references)
    ]


def stream(
    model: GPT,
    tokenizer,
    prompt: str,
    cfg: GenerationConfig | None = None,
    *,
    add_bos: bool = True,
    prompt_ids: Sequence[int] | None = None,
) -> Iterator[str]:
    """Text deltas of one prompt's completion, token by token; ``"".join`` of them is its text."""
    ids = None if prompt_ids is None else [prompt_ids]
    for event in _events(model, tokenizer, [prompt], cfg or GenerationConfig(), add_bos, ids):
        if isinstance(event, tuple):
            yield event[1]


# --------------------------------------------------------------------------------------------------
# CLI: winnow generate


def read_prompts(args: argparse.Namespace) -> list[str]:
    """--prompt (repeatable) and --prompt-file: ``.jsonl`` (a string or {"prompt": ...} per line) or
    plain text (one prompt per non-empty line); ``-`` reads stdin."""
    prompts = list(args.prompt or [])
    if args.prompt_file:
        path = args.prompt_file
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        if path.endswith(".jsonl"):
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                if isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
                    prompts.append(obj["prompt"])
                elif isinstance(obj, str):
                    prompts.append(obj)
                else:
                    raise ValueError(
                        f"{path}:{n}: expected a JSON string or an object with a 'prompt' string"
                    )
        else:
            prompts += [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompt-file FILE")
    return prompts


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


def config_from_args(args: argparse.Namespace) -> GenerationConfig:
    return GenerationConfig(
        strategy=args.strategy,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop or ()),
        seed=args.seed,
    ).resolved()


def load_for_generation(args: argparse.Namespace, device: torch.device):
    """(model, tokenizer) of ``--checkpoint`` on ``device`` in ``--dtype`` (shared with ``winnow chat``)."""
    from train.checkpoint import load_model

    model, tokenizer = load_model(args.checkpoint, device=device)
    if args.dtype != "float32":
        model.to(getattr(torch, args.dtype))
    return model, tokenizer


def main(args: argparse.Namespace) -> int:
    chat = getattr(args, "chat", False)
    try:
        if chat and args.no_bos:
            raise ValueError(
                "--no-bos does not apply with --chat (the chat format starts with <|endoftext|>)"
            )
        cfg = config_from_args(args)
        prompts = read_prompts(args)
        device = resolve_device(args.device)
        model, tokenizer = load_for_generation(args, device)  # a missing or reward checkpoint: exit 2
    except (ValueError, OSError) as e:
        print(f"winnow generate: {e}", file=sys.stderr)
        return 2
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    out = sys.stdout
    streaming = not args.json and len(prompts) == 1

    def on_text(row: int, delta: str) -> None:
        out.write(delta)
        out.flush()

    try:
        prompt_ids = chat_prompt_ids(tokenizer, prompts) if chat else None
        if streaming and not chat:  # a completion continues its prompt; a chat reply does not
            out.write(prompts[0])
            out.flush()
        completions = generate(
            model,
            tokenizer,
            prompts,
            cfg,
            add_bos=not args.no_bos,
            on_text=on_text if streaming else None,
            prompt_ids=prompt_ids,
        )
    except ValueError as e:  # ChatFormatError included (a tokenizer without the chat tokens)
        print(f"\nwinnow generate: {e}", file=sys.stderr)
        return 2
    if streaming:
        out.write("\n")
    elif args.json:
        for c in completions:
            out.write(json.dumps(c.__dict__, ensure_ascii=False) + "\n")
    else:
        for i, c in enumerate(completions):
            head = f"=== [{i}] ({c.finish_reason}, {len(c.token_ids)} tokens)"
            body = f"user: {c.prompt}\nassistant: {c.text}" if chat else f"{c.prompt}{c.text}"
            out.write(f"{head}\n{body}\n")
    return 0
