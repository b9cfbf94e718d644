"""``winnow train reward``: a Bradley–Terry reward model on preference pairs.

**Model.**  The GPT backbone of ``--base`` (an SFT checkpoint, usually) and a scalar head,
``score_head`` (n_embd → 1, no bias), initialised N(0, 1/√(n_embd + 1)) as lm-human-preference-
details does, so initial scores have unit scale.  The score of a sequence is the head applied to the
final hidden state (``GPT.forward(return_hidden=True)``) at its **last real token** (the reply's
``<|end|>``), read by index from the sequence's length, never from a pad or EOS search, so padding
(right padding; causal attention) never moves a score, and neither does the batch partner
(``tests/test_reward.py``: exact equality).  Reading the position from ``pad_id`` matches instead is
the bug of transformers #35352 / TRL #937 (pad = eos: the first "pad" is a real token).  The LM head
is not used; an untied one is frozen (it would get no gradient anyway).

**Loss.**  Bradley–Terry: ``-log σ(r_chosen − r_rejected − m)``, summed over pairs (the loop divides
by the pairs of the global batch), with ``m`` = ``--margin`` plus the row's own ``margin`` field
(Llama 2's graded margin; 0 by default).

**Metrics.**  Training lines carry ``accuracy`` (strict ``r_c > r_r``: a tie is not a success),
``margin`` (mean ``r_c − r_r``) and ``mean_reward`` (TRL's names); validation lines ``val_loss``,
``val_accuracy`` with its 95 % Wilson interval (``val_accuracy_low`` / ``val_accuracy_high``: on a
few hundred pairs the interval is several points wide, worth showing next to the number) and
``val_margin``.

**Normalisation** (``--normalize FILE``): after training, the scores of a calibration set (rows of
any SFT format: the conversations as they are, scored at their last token) set ``reward_gain`` =
1/std and ``reward_bias`` = −mean/std, buffers saved in the final checkpoint, so that
``RewardModel.score`` has mean 0 and std 1 on samples like the SFT policy's, the scale PPO's KL
coefficient assumes (lm-human-preference-details).  Training itself uses the raw score: the
normalisation is an affine map, which changes no preference.  The final checkpoint is rewritten
atomically with the buffers and ``reward_normalization`` in config.json.

**Checkpoints** are ``kind: "reward"``: their state_dict has ``score_head.weight``,
``reward_gain`` and ``reward_bias`` besides the GPT's keys.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.chat import render_conversation
from train.checkpoint import load_checkpoint, save_checkpoint
from train.data import DataError
from train.loop import (
    LoopSettings,
    Task,
    UsageError,
    make_autocast,
    pick_dtype,
    run_cli,
    run_loop,
    seed_everything,
    to_device,
)
from train.model import GPT, GPTConfig
from train.parallel import DistInfo, all_reduce_sum
from train.preference import (
    SHARED_DEFAULTS,
    SHARED_RUN_DEFINING,
    PairBatch,
    PairBatches,
    PairExamples,
    data_meta,
    eval_batches,
    prepare,
)

DEFAULTS = {**SHARED_DEFAULTS, "margin": 0.0}
RUN_DEFINING = (*SHARED_RUN_DEFINING, "margin")
HEAD_KEYS = ("score_head.weight", "reward_gain", "reward_bias")


class RewardModel(GPT):
    """A GPT whose output is one score per sequence (see the module docstring)."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.score_head = nn.Linear(config.n_embd, 1, bias=False)
        nn.init.normal_(self.score_head.weight, std=1 / math.sqrt(config.n_embd + 1))
        self.register_buffer("reward_gain", torch.ones(()))
        self.register_buffer("reward_bias", torch.zeros(()))
        if not config.tie_embeddings:
            self.lm_head.weight.requires_grad_(False)  # unused by the score

    def raw_scores(self, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """(B,) fp32 head outputs at positions ``last`` (each row's last real token) of ``ids``."""
        hidden = self(ids, return_hidden=True)
        picked = hidden[torch.arange(ids.shape[0], device=ids.device), last]
        return self.score_head(picked).float().squeeze(-1)

    def score(self, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Normalised scores ``gain · raw + bias`` (the identity until ``--normalize`` sets them)."""
        return self.reward_gain * self.raw_scores(ids, last) + self.reward_bias


def bradley_terry(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ −log σ(r_c − r_r − m), pairs)``: the sum, as every loss of ``train.losses``."""
    return -F.logsigmoid(chosen - rejected - margin).sum(), torch.tensor(chosen.shape[0])


def pair_scores(
    model: RewardModel, batch: PairBatch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores, rejected scores) of a batch, raw (training and validation)."""
    scores = model.raw_scores(to_device(batch.ids, device), to_device(batch.last, device))
    half = batch.index.shape[0]
    return scores[:half], scores[half:]


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def make_loss(device: torch.device, margin: float, info: DistInfo):
    """The loss for the loop, and ``train_metrics`` reading what it accumulated."""
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # pairs, correct, Σ margin, Σ reward

    def loss(model, batch: PairBatch):
        rc, rr = pair_scores(model, batch, device)
        with torch.no_grad():
            stats[0] += rc.shape[0]
            stats[1] += (rc > rr).sum()
            stats[2] += (rc - rr).sum()
            stats[3] += (rc + rr).sum() / 2
        return bradley_terry(rc, rr, to_device(batch.margin, device) + margin)

    def train_metrics() -> dict:
        all_reduce_sum(stats, info)
        n, correct, margins, rewards = stats.tolist()
        stats.zero_()
        if n == 0:
            return {}
        return {"accuracy": correct / n, "margin": margins / n, "mean_reward": rewards / n}

    return loss, train_metrics


def make_evaluate(ex: PairExamples, *, micro_batch: int, pad_id: int, margin: float, device, autocast, info):
    """``val_loss`` (mean BT loss), ``val_accuracy`` (+ Wilson interval), ``val_margin``."""

    @torch.no_grad()
    def evaluate(model) -> dict:
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, pairs, correct, margin
        for batch in eval_batches(ex, micro_batch, pad_id, info):
            with autocast:
                rc, rr = pair_scores(model, batch, device)
            total, n = bradley_terry(rc, rr, to_device(batch.margin, device) + margin)
            sums += torch.stack(
                [total.double(), n.double(), (rc > rr).sum().double(), (rc - rr).sum().double()]
            )
        model.train()
        all_reduce_sum(sums, info)
        loss, n, correct, margins = sums.tolist()
        if n == 0:
            return {}
        low, high = wilson(correct, n)
        return {
            "val_loss": loss / n,
            "val_accuracy": correct / n,
            "val_accuracy_low": low,
            "val_accuracy_high": high,
            "val_margin": margins / n,
        }

    return evaluate


def load_reward_model(config: GPTConfig, state_dict: dict, *, strict_head: bool) -> RewardModel:
    """A RewardModel with ``state_dict``'s weights; a policy's (no head) only when not ``strict_head``."""
    model = RewardModel(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    bad_missing = [k for k in missing if strict_head or k not in HEAD_KEYS]
    if bad_missing or unexpected:
        raise UsageError(
            f"checkpoint weights do not fit a reward model: missing {bad_missing}, unexpected {unexpected}"
        )
    return model


# --------------------------------------------------------------------------------------------------
# Normalisation


@torch.no_grad()
def calibrate(
    model: RewardModel, tokenizer, conversations: list[list[dict]], *, micro_batch: int, device
) -> dict:
    """Set ``reward_gain`` / ``reward_bias`` so the scores of ``conversations`` have mean 0, std 1;
    returns the statistics before (``mean``, ``std``, ``n``)."""
    T = model.config.block_size
    rows = [render_conversation(tokenizer, c)[0][:T] for c in conversations]
    model.eval()
    raw = []
    for j in range(0, len(rows), micro_batch):
        chunk = rows[j : j + micro_batch]
        ids = torch.full((len(chunk), max(map(len, chunk))), tokenizer.pad_id, dtype=torch.long)
        for r, a in enumerate(chunk):
            ids[r, : len(a)] = torch.tensor(a)
        last = torch.tensor([len(a) - 1 for a in chunk])
        raw.append(model.raw_scores(ids.to(device), last.to(device)).cpu())
    scores = torch.cat(raw).double()
    mean, std = scores.mean().item(), scores.std(correction=0).item()
    if not std > 0:
        raise DataError("--normalize: every calibration conversation has the same score (std 0)")
    model.reward_gain.fill_(1 / std)
    model.reward_bias.fill_(-mean / std)
    return {"mean": mean, "std": std, "n": len(rows)}


def _normalize_final(out: Path, path: str, device, micro_batch: int, log) -> None:
    from train.sft import read_conversations

    ckpt = load_checkpoint(out)
    model = load_reward_model(ckpt["config"], ckpt["state_dict"], strict_head=True).to(device)
    from train.data import load_tokenizer

    tokenizer = load_tokenizer(out / "tokenizer")
    convs, lineage = read_conversations(path)
    stats = calibrate(model, tokenizer, convs, micro_batch=micro_batch, device=device)
    meta = {k: v for k, v in ckpt["meta"].items() if k != "step"}
    meta["reward_normalization"] = {**stats, "file": lineage}
    save_checkpoint(
        out,
        ckpt["meta"]["step"],
        model,
        tokenizer_dir=out / "tokenizer",
        meta=meta,
        trainer_state=ckpt["trainer_state"],
        keep_last=0,  # replaces this step only
    )
    log(f"--normalize: raw scores on {stats['n']} conversations had mean {stats['mean']:.4f}, "
        f"std {stats['std']:.4f}; gain/bias saved in the final checkpoint")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The run


def reward(args: argparse.Namespace, info: DistInfo, log: Callable[..., None]) -> int:
    """``winnow train reward`` (run through ``train.loop.run_cli``)."""
    out = Path(args.out)
    s = prepare(args, info, defaults=DEFAULTS, run_defining=RUN_DEFINING, log=log)
    run = s.run
    seed_everything(run["seed"])  # the head's init
    model = load_reward_model(s.config, s.state_dict, strict_head=s.ckpt is not None)
    device = info.device
    model.to(device)
    B = run["micro_batch"]
    batches = PairBatches(
        s.train,
        micro_batch=B,
        pad_id=s.tokenizer.pad_id,
        seed=run["seed"],
        rank=info.rank,
        world_size=info.world_size,
    )
    peak = run["lr"] if run["lr"] is not None else 0.1 * s.config.peak_lr()
    warmup = run["warmup"] if run["warmup"] is not None else max(0, round(0.03 * run["max_steps"]))
    run["lr"], run["warmup"] = peak, warmup
    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)
    evaluate = None
    if run["eval_every"] and len(s.val):
        evaluate = make_evaluate(
            s.val, micro_batch=B, pad_id=s.tokenizer.pad_id, margin=run["margin"], device=device,
            autocast=autocast, info=info,
        )  # fmt: skip
    elif run["eval_every"]:
        log("no validation pairs (no --val or --val-fraction): val_accuracy is not reported")
    log(model.summary(s.config.block_size))
    log(
        f"batch: {run['batch_pairs']} pairs = {B} × {info.world_size} rank(s) × {s.accum} accumulation; "
        f"{len(s.train):,} pairs; {run['max_steps']:,} steps; lr {peak:.3g}, warmup {warmup}"
    )
    loss, train_metrics = make_loss(device, run["margin"], info)
    meta = {
        "kind": "reward",
        "train": {**run, "normalize": args.normalize, "dtype": args.dtype, "compile": args.compile,
                  "world_size": info.world_size},
        "parent": s.parent,
        "data": data_meta(s),
        "model": asdict(s.config),
        "reward_head": {"reads": "last real token", "init_std": 1 / math.sqrt(s.config.n_embd + 1)},
    }  # fmt: skip
    task = Task(
        batches=batches,
        loss=loss,
        tokens=lambda b: b.tokens,
        evaluate=evaluate,
        label="reward",
        train_metrics=train_metrics,
    )
    settings = LoopSettings.from_run(
        run,
        args,
        max_steps=run["max_steps"],
        accum=s.accum,
        lr=peak,
        warmup=warmup,
        eval_every=run["eval_every"],
    )
    code = run_loop(
        model,
        task,
        settings,
        out=out,
        info=info,
        dtype=dtype,
        meta=meta,
        tokenizer_dir=s.tok_dir,
        trainer_state=s.ckpt["trainer_state"] if s.ckpt else None,
        flops_per_token=model.flops_per_token(s.config.block_size),
        log=log,
    )
    done = load_checkpoint(out)["meta"]["step"] >= run["max_steps"] if code == 0 else False
    if done and args.normalize and info.is_main:
        _normalize_final(out, args.normalize, device, B, log)
    return code


def main(args: argparse.Namespace) -> int:
    return run_cli("reward", reward, args, (DataError,))
