"""Preference pairs, shared by ``winnow train reward`` and ``winnow train dpo``: reading, rendering,
batches, and the run setup both trainers share (base checkpoint, tokenizer, lineage, flags).

**Rows** (``.jsonl`` / ``.jsonl.gz``), one pair each, every row validated (a bad one is a DataError
naming file, line and field):

* ``prompt`` (a string, rendered as one user turn, or a message list ending with a user or system
  message) + ``chosen`` / ``rejected`` (the final assistant replies: strings, or a one-message list
  ``[{"role": "assistant", "content": ...}]`` as TRL's conversational rows have);
* the Anthropic HH transcript form: ``chosen`` / ``rejected`` only, each a whole transcript
  ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``; split into messages, the last assistant turn is the
  reply and everything before it the prompt, which must be the same in both;
* optional ``margin`` (a number: the reward model's Bradley–Terry margin for this pair, Llama 2's
  graded preference).

**Rendering.**  ``prompt + [reply as the assistant turn]`` through ``tokenizer.chat.
render_conversation`` (the one chat format); the *response mask* is render's loss mask with every
position before the final ``<|assistant|>`` cleared, so earlier assistant turns of a multi-turn
prompt never count: 1 exactly on the reply's tokens and its ``<|end|>``.  Sequences longer than
``max_len`` keep their start (TRL's ``keep_start``); a pair whose reply (either one) loses every
token is dropped.  Both counts go into the checkpoint's ``data``.

**Batches.**  A micro-batch of B pairs is one forward of 2B rows, chosen rows first, then the
rejected ones (TRL's collator), right-padded: causal attention never lets a real token see a later
pad, so the padding never changes a real position's output.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenizer.chat import ChatFormatError, render_conversation, require_chat_tokens, validate_messages
from train.checkpoint import load_checkpoint, resolve_checkpoint
from train.data import DataError, load_tokenizer
from train.loop import FINETUNE_OPTIM_DEFAULTS, EpochOrder, UsageError, open_output
from train.model import GPTConfig
from train.parallel import DistInfo

# sft's row reader and validation split are reused as they are (one behaviour for
# every post-training trainer); they are private there for now.
from train.sft import (
    _read_lines,
    copy_base_tokenizer,
    parent_lineage,
    read_train_and_val,
    resolve_base_run,
)

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


@dataclass
class Pair:
    prompt: list[dict]
    chosen: str
    rejected: str
    margin: float = 0.0


def parse_hh(text: str, where: str, field_name: str) -> list[dict]:
    """An Anthropic HH transcript (``"\\n\\nHuman: a\\n\\nAssistant: b"``) as messages."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise DataError(
            f"{where}: field `{field_name}`: not an HH transcript (expected it to start with '\\n\\nHuman: ')"
        )
    roles = {"Human": "user", "Assistant": "assistant"}
    # turns are stripped: HH pads some with spaces after the colon (preference_dev's parsed fields
    # are stripped too, and its raw transcripts parse to exactly those: tests/test_reward.py)
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _reply(row: dict, name: str, where: str) -> str:
    value = row.get(name)
    one = value[0] if isinstance(value, list) and len(value) == 1 else None
    if isinstance(one, dict) and one.get("role") == "assistant" and isinstance(one.get("content"), str):
        return one["content"]
    if not isinstance(value, str):
        got = "missing" if name not in row else type(value).__name__
        raise DataError(f"{where}: field `{name}` must be a string or one assistant message ({got})")
    return value


def row_pair(row: dict, where: str) -> Pair:
    """The pair of one row (see the module docstring); DataError naming the field when malformed."""
    margin = row.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
        raise DataError(f"{where}: field `margin` must be a finite number ({margin!r:.40})")
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = prompt
            try:
                validate_messages(messages)
            except ChatFormatError as exc:
                raise DataError(f"{where}: field `prompt`: {exc}") from None
            if messages[-1]["role"] == "assistant":
                raise DataError(f"{where}: field `prompt`: the last message must be a user or system turn")
        return Pair(
            list(messages), _reply(row, "chosen", where), _reply(row, "rejected", where), float(margin)
        )
    if isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str):
        chosen = parse_hh(row["chosen"], where, "chosen")
        rejected = parse_hh(row["rejected"], where, "rejected")
        for name, conv in (("chosen", chosen), ("rejected", rejected)):
            if conv[-1]["role"] != "assistant":
                raise DataError(
                    f"{where}: field `{name}`: the transcript does not end with an Assistant turn"
                )
        if chosen[:-1] != rejected[:-1]:
            raise DataError(
                f"{where}: fields `chosen`/`rejected`: the transcripts differ before the final reply "
                "(a pair must share its prompt)"
            )
        return Pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], float(margin))
    raise DataError(
        f"{where}: unknown row format (fields {sorted(row)}); expected `prompt` + `chosen` + `rejected`, "
        "or HH transcripts in `chosen` + `rejected`"
    )


def read_pairs(path: str | Path) -> tuple[list[Pair], dict]:
    """All pairs of a file and its lineage ``{path, sha256, rows}``."""
    path = Path(path)
    pairs = [row_pair(row, f"{path}:{n}") for n, row in _read_lines(path)]
    if not pairs:
        raise DataError(f"{path}: no rows (an empty file)")
    return pairs, {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "rows": len(pairs),
    }


# --------------------------------------------------------------------------------------------------
# Pairs → token ids and response masks


@dataclass
class PairExamples:
    """Rendered pairs: ``ids[s][i]`` / ``mask[s][i]`` for side s = 0 (chosen), 1 (rejected)."""

    ids: tuple[list[np.ndarray], list[np.ndarray]] = field(default_factory=lambda: ([], []))
    mask: tuple[list[np.ndarray], list[np.ndarray]] = field(default_factory=lambda: ([], []))
    margin: list[float] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.margin)


def render_reply(tokenizer, prompt: Sequence[dict], reply: str) -> tuple[list[int], list[int]]:
    """(ids, response mask) of ``prompt`` + ``reply`` as the assistant turn (untruncated)."""
    prompt_ids, _ = render_conversation(tokenizer, prompt)
    ids, mask = render_conversation(tokenizer, [*prompt, {"role": "assistant", "content": reply}])
    start = len(prompt_ids) + 1  # after <|assistant|>: rendering is concatenative, so the prefix holds
    assert ids[: len(prompt_ids)] == prompt_ids
    return ids, [0] * start + mask[start:]


def render_pairs(tokenizer, pairs: Sequence[Pair], max_len: int) -> PairExamples:
    ex = PairExamples()
    for p in pairs:
        sides = [render_reply(tokenizer, p.prompt, r) for r in (p.chosen, p.rejected)]
        if any(len(ids) > max_len for ids, _ in sides):
            ex.truncated += 1
            sides = [(ids[:max_len], mask[:max_len]) for ids, mask in sides]
        if not all(any(mask) for _, mask in sides):
            ex.dropped += 1
            continue
        for s, (ids, mask) in enumerate(sides):
            ex.ids[s].append(np.asarray(ids, dtype=np.int64))
            ex.mask[s].append(np.asarray(mask, dtype=bool))
        ex.margin.append(p.margin)
    return ex


@dataclass
class PairBatch:
    """2B rows (chosen 0..B-1, then rejected), right-padded.  ``last``: each row's last real
    position; ``index``: the pairs' indices in their PairExamples (the DPO reference cache)."""

    ids: torch.Tensor  # (2B, T) long
    mask: torch.Tensor  # (2B, T) bool, response tokens
    last: torch.Tensor  # (2B,) long
    index: torch.Tensor  # (B,) long
    margin: torch.Tensor  # (B,) float32
    tokens: int


def collate_pairs(ex: PairExamples, index: Sequence[int], pad_id: int) -> PairBatch:
    rows = [ex.ids[s][i] for s in (0, 1) for i in index]
    masks = [ex.mask[s][i] for s in (0, 1) for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (a, m) in enumerate(zip(rows, masks, strict=True)):
        ids[r, : len(a)] = torch.from_numpy(a)
        mask[r, : len(m)] = torch.from_numpy(m)
    lengths = [len(r) for r in rows]
    return PairBatch(
        ids=ids,
        mask=mask,
        last=torch.tensor(lengths) - 1,
        index=torch.tensor(list(index), dtype=torch.long),
        margin=torch.tensor([ex.margin[i] for i in index], dtype=torch.float32),
        tokens=sum(lengths),
    )


class PairBatches:
    """Micro-batches of one rank: B pairs each, a new seeded order every epoch; global pair ``k`` of a
    step goes to rank ``k mod world`` (as SFT's rows).  Resume state: epoch and position."""

    FORMAT = "winnow.pair_batches/1"

    def __init__(
        self,
        ex: PairExamples,
        *,
        micro_batch: int,
        pad_id: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.ex, self.micro_batch, self.pad_id, self.seed = ex, micro_batch, pad_id, seed
        self.rank, self.world_size = rank, world_size
        self.order = EpochOrder(len(ex), seed)

    def next_batch(self) -> PairBatch:
        index = [self.order.next() for _ in range(self.micro_batch * self.world_size)]
        return collate_pairs(self.ex, index[self.rank :: self.world_size], self.pad_id)

    def state_dict(self) -> dict:
        o = self.order
        return {"format": self.FORMAT, "epoch": o.epoch, "position": o.position, "pairs": len(self.ex)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != self.FORMAT or state.get("pairs") != len(self.ex):
            raise DataError(
                f"the checkpoint's data state ({state.get('format')}, {state.get('pairs')} pairs) does not "
                f"match this run's {len(self.ex)} pairs"
            )
        self.order.seek(state["epoch"], state["position"])


def eval_batches(ex: PairExamples, micro_batch: int, pad_id: int, info: DistInfo):
    """The validation pairs of this rank, in order, as PairBatches (evaluation hooks)."""
    mine = list(range(info.rank, len(ex), info.world_size))
    for j in range(0, len(mine), micro_batch):
        yield collate_pairs(ex, mine[j : j + micro_batch], pad_id)


# --------------------------------------------------------------------------------------------------
# The run setup shared by the preference trainers


SHARED_DEFAULTS = {
    **FINETUNE_OPTIM_DEFAULTS,
    "micro_batch": 4,
    "seed": 0,
    "eval_every": 50,
    "save_every": 500,
}
SHARED_RUN_DEFINING = (
    "base", "data", "val", "val_fraction", "batch_pairs", "lr", "schedule", "warmup", "cooldown",
    "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "seed",
)  # fmt: skip


@dataclass
class Setup:
    """What ``prepare`` resolved: settings, the starting weights, tokenizer and data."""

    run: dict
    ckpt: dict | None  # the checkpoint resumed from
    config: GPTConfig
    state_dict: dict  # the resumed checkpoint's weights, else the base's
    base_kind: str
    parent: dict
    tokenizer: Any
    tok_dir: Path
    train: PairExamples
    val: PairExamples
    files: list[dict]
    val_lineage: dict | None
    accum: int
    # a few prompts with their chosen reply (held-back ones first): the final model's samples.jsonl
    sample_convs: list[list[dict]] = field(default_factory=list)


def prepare(
    args: argparse.Namespace,
    info: DistInfo,
    *,
    defaults: dict,
    run_defining: tuple[str, ...],
    context_extra: int = 0,
    log=lambda *a: None,
) -> Setup:
    """Resolve flags (resume included), load the base (or the resumed checkpoint), copy the tokenizer
    into OUT/tokenizer, read and render the pairs, and size the batch.  Sequences keep
    ``block_size + context_extra`` tokens (DPO passes 1: block_size inputs plus the shifted target)."""
    out = Path(args.out)
    ckpt = open_output(out, args.resume)
    saved = ckpt["meta"]["train"] if ckpt else None
    run = resolve_base_run(
        args, saved, defaults=defaults, run_defining=run_defining, batch_flag="batch_pairs"
    )

    tok_dir = out / "tokenizer"
    if ckpt is not None:
        config, state_dict, parent = ckpt["config"], ckpt["state_dict"], ckpt["meta"]["parent"]
        tokenizer = load_tokenizer(tok_dir)
        require_chat_tokens(tokenizer)
        base_kind = parent.get("kind", "pretrain")
    else:
        try:
            base_dir = resolve_checkpoint(run["base"])
        except FileNotFoundError as exc:
            raise UsageError(f"--base: {exc}") from None
        base = load_checkpoint(base_dir)
        config, state_dict, parent = base["config"], base["state_dict"], parent_lineage(base_dir, base)
        base_kind = parent["kind"]
        tok_dir = copy_base_tokenizer(base_dir, out, info)
        tokenizer = load_tokenizer(tok_dir)
        try:
            require_chat_tokens(tokenizer)
        except ChatFormatError as exc:
            # a preference trainer starts from a chat model: an SFT adds the tokens (and the format)
            raise UsageError(f"--base: {exc}; run `winnow train sft` on it first") from None

    pairs, files, val_pairs, val_lineage = read_train_and_val(run, read_pairs)
    max_len = config.block_size + context_extra
    train_ex, val_ex = render_pairs(tokenizer, pairs, max_len), render_pairs(tokenizer, val_pairs, max_len)
    if not len(train_ex):
        raise DataError("no training pair has a reply token within the context")
    log(
        f"data: {len(pairs):,} training pairs ({train_ex.truncated:,} truncated to {max_len} tokens, keeping "
        f"the start; {train_ex.dropped:,} dropped: a reply with no token left), {len(val_pairs):,} "
        f"validation pairs ({val_ex.truncated:,} truncated, {val_ex.dropped:,} dropped)"
    )
    B, W = run["micro_batch"], info.world_size
    batch_pairs = run["batch_pairs"] or B * W
    if batch_pairs % (B * W):
        raise UsageError(f"--batch-pairs {batch_pairs} is not a multiple of micro-batch × world = {B} × {W}")
    if run["max_steps"] is None:
        epochs = run["epochs"] if run["epochs"] is not None else 1.0
        run["max_steps"] = max(1, math.ceil(epochs * len(train_ex) / batch_pairs))
    run["batch_pairs"] = batch_pairs
    return Setup(
        run=run,
        ckpt=ckpt,
        config=config,
        state_dict=state_dict,
        base_kind=base_kind,
        parent=parent,
        tokenizer=tokenizer,
        tok_dir=tok_dir,
        train=train_ex,
        val=val_ex,
        files=files,
        val_lineage=val_lineage,
        accum=batch_pairs // (B * W),
        sample_convs=[
            [*p.prompt, {"role": "assistant", "content": p.chosen}] for p in (val_pairs or pairs)[:4]
        ],
    )


def data_meta(s: Setup) -> dict:
    """The checkpoint's ``data`` section."""
    return {
        "files": s.files,
        "val": s.val_lineage,
        "pairs": len(s.train),
        "truncated": s.train.truncated,
        "dropped": s.train.dropped,
        "tokenizer_json_sha256": s.tokenizer.sha256,
    }
