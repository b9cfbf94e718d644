"""``winnow train dpo``: direct preference optimisation (Rafailov et al. 2023), sigmoid loss.

**Objective.**  For a pair with sequence log-probs ``π_c, π_r`` under the policy and ``ρ_c, ρ_r``
under the frozen reference (the ``--base`` checkpoint), the implicit rewards are
``r_c = β (π_c − ρ_c)``, ``r_r = β (π_r − ρ_r)`` and the loss is ``−log σ(r_c − r_r)``, summed over
pairs (the loop divides by the pairs of the global batch, so micro-batch × accumulation splits give
the same gradient).  A sequence log-prob is summed over the **reply's tokens only** (the response
mask of ``train.preference``: the final assistant turn and its ``<|end|>``; prompt, earlier turns and
padding never count).  At step 0 the policy is the reference: every reward is 0 and the loss is
exactly ln 2 (``tests/test_dpo.py``).  ``--sft-weight w`` adds ``w`` × the chosen reply's mean
token NLL per pair (TRL's ``sft`` loss in a loss list; RPO), a guard against the likelihood of both
replies falling.

**Reference log-probs, computed once.**  The reference never changes, so its log-probs of every
training and validation reply are computed before the first step (one forward per pair, no
gradient, fp64 sums of fp32 terms) and looked up by pair index in each step: a step costs the policy's
forward and backward only, and the reference model is not needed for training.  They are cached in
``OUT/reference_logps.pt`` (keyed by the base's config sha256, the data files' sha256 and the
context), so ``--resume`` reads them instead of loading the base again.  ``--live-reference``
computes them in every step from a frozen copy instead (the check: ``tests/test_dpo.py`` shows the
two agree).  Trade-off: the cache holds 2 floats per pair; live costs a second model's memory and
one more forward per step.

**Metrics** (TRL's names, so curves compare): ``rewards/chosen``, ``rewards/rejected`` (means of
``r_c``, ``r_r``), ``rewards/margins`` (mean ``r_c − r_r``), ``rewards/accuracies`` (share of pairs
with ``r_c > r_r``, strict: 0 at step 0), ``logps/chosen``, ``logps/rejected``; validation lines the
same with ``val_`` in front, plus ``val_loss`` and ``val_kl``: the exact KL(π ‖ π_ref) over the whole
vocabulary, averaged over the validation replies' token positions (the reference is kept for it
when there is validation data).  **A falling ``rewards/chosen`` is expected**: DPO optimises the
margin, and both log-likelihoods usually fall, the rejected one faster (eric-mitchell/direct-
preference-optimization #8; README "Preference tuning").
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from train.checkpoint import load_checkpoint
from train.data import DataError
from train.generate import reply_samples
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
from train.losses import IGNORE
from train.model import GPT
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

DEFAULTS = {**SHARED_DEFAULTS, "beta": 0.1, "sft_weight": 0.0, "live_reference": False}
RUN_DEFINING = (*SHARED_RUN_DEFINING, "beta", "sft_weight", "live_reference")
CACHE = "reference_logps.pt"


def sequence_logps(
    model: torch.nn.Module, batch: PairBatch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each row's reply tokens (2B,) fp64, reply tokens per row (2B,)).

    The per-token values are fp32; the sum is fp64 because an fp32 sum's rounding depends on the
    padded width (SIMD lanes split a longer row differently): a row's log-prob in another batch
    differed by ~4e-6, enough to make step 0's strict ``rewards/accuracies`` a coin toss instead of
    0.  In fp64 the sum of a few hundred fp32 terms is exact in practice, whatever the padding."""
    ids, mask = to_device(batch.ids, device), to_device(batch.mask, device)
    targets = torch.where(mask[:, 1:], ids[:, 1:], IGNORE)
    logits = model(ids[:, :-1]).float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    return -nll.double().sum(dim=1), mask[:, 1:].sum(dim=1)


def dpo_loss(
    policy_c: torch.Tensor, policy_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair sigmoid losses, rewards of chosen, rewards of rejected)."""
    reward_c, reward_r = beta * (policy_c - ref_c), beta * (policy_r - ref_r)
    return -F.logsigmoid(reward_c - reward_r), reward_c, reward_r


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module, ex: PairExamples, *, micro_batch: int, pad_id: int, device, autocast
) -> torch.Tensor:
    """(pairs, 2) reference log-probs of every pair's chosen and rejected reply, in pair order."""
    was_training = model.training
    model.eval()
    out = torch.zeros(len(ex), 2, dtype=torch.float64)
    one = DistInfo(0, 0, 1, device)
    for batch in eval_batches(ex, micro_batch, pad_id, one):
        with autocast:
            logps, _ = sequence_logps(model, batch, device)
        half = batch.index.shape[0]
        out[batch.index, 0], out[batch.index, 1] = logps[:half].cpu(), logps[half:].cpu()
    model.train(was_training)
    return out


class Reference:
    """Reference log-probs of a batch: from the cache (``table``), or live from a frozen model."""

    def __init__(self, table: torch.Tensor | None = None, model: torch.nn.Module | None = None):
        self.table, self.model = table, model

    def __call__(self, batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.table is not None:
            rows = self.table[batch.index].to(device)
            return rows[:, 0], rows[:, 1]
        with torch.no_grad():
            logps, _ = sequence_logps(self.model, batch, device)
        half = batch.index.shape[0]
        return logps[:half], logps[half:]


METRIC_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected")  # fmt: skip


def _batch_stats(reward_c, reward_r, pc, pr) -> torch.Tensor:
    """Sums over pairs, in METRIC_NAMES' order (means follow by dividing by the pairs)."""
    return torch.stack([reward_c.sum(), reward_r.sum(), (reward_c - reward_r).sum(),
                        (reward_c > reward_r).sum(), pc.sum(), pr.sum()]).double()  # fmt: skip


def make_loss(reference: Reference, *, beta: float, sft_weight: float, device, info: DistInfo):
    """The loop's loss and its ``train_metrics`` (TRL's names)."""
    stats = torch.zeros(len(METRIC_NAMES) + 1, dtype=torch.float64, device=device)  # + pairs

    def loss(model, batch: PairBatch):
        logps, lengths = sequence_logps(model, batch, device)
        half = batch.index.shape[0]
        pc, pr = logps[:half], logps[half:]
        rc, rr = reference(batch, device)
        losses, reward_c, reward_r = dpo_loss(pc, pr, rc, rr, beta)
        total = losses.sum()
        if sft_weight:
            # mean token NLL of each chosen reply, summed over pairs: ÷ pairs by the loop
            total = total + sft_weight * (-pc / lengths[:half].clamp(min=1)).sum()
        with torch.no_grad():
            stats[:-1] += _batch_stats(reward_c, reward_r, pc, pr)
            stats[-1] += half
        return total, torch.tensor(half)

    def train_metrics() -> dict:
        all_reduce_sum(stats, info)
        n = stats[-1].item()
        values = (stats[:-1] / max(n, 1)).tolist()
        stats.zero_()
        return dict(zip(METRIC_NAMES, values, strict=True)) if n else {}

    return loss, train_metrics


def token_kl(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ over masked positions of KL(π ‖ π_ref) over the vocabulary, positions)."""
    logp, logq = F.log_softmax(policy_logits.float(), -1), F.log_softmax(ref_logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask).sum(), mask.sum()


def make_evaluate(
    ex: PairExamples, reference: Reference, ref_model, *, micro_batch, pad_id, beta, device, autocast, info
):
    """``val_loss``, ``val_rewards/*``, ``val_logps/*``, and ``val_kl`` (exact per-token KL)."""

    @torch.no_grad()
    def evaluate(model) -> dict:
        model.eval()
        sums = torch.zeros(len(METRIC_NAMES) + 4, dtype=torch.float64, device=device)
        for batch in eval_batches(ex, micro_batch, pad_id, info):
            with autocast:
                logps, _ = sequence_logps(model, batch, device)
                half = batch.index.shape[0]
                losses, reward_c, reward_r = dpo_loss(
                    logps[:half], logps[half:], *reference(batch, device), beta
                )
                ids, mask = to_device(batch.ids, device), to_device(batch.mask, device)
                kl, positions = token_kl(model(ids[:, :-1]), ref_model(ids[:, :-1]), mask[:, 1:])
            sums[:-4] += _batch_stats(reward_c, reward_r, logps[:half], logps[half:])
            pairs = torch.tensor(half, dtype=torch.float64, device=device)
            sums[-4:] += torch.stack([losses.sum().double(), pairs, kl.double(), positions.double()])
        model.train()
        all_reduce_sum(sums, info)
        n = sums[-3].item()
        if n == 0:
            return {}
        out = {"val_loss": sums[-4].item() / n, "val_kl": sums[-2].item() / max(sums[-1].item(), 1)}
        out.update({f"val_{k}": v / n for k, v in zip(METRIC_NAMES, sums[:-4].tolist(), strict=True)})
        return out

    return evaluate


def _cache_key(s, max_len: int) -> str:
    key = {"parent": s.parent.get("config_sha256"), "files": [f["sha256"] for f in s.files],
           "val": s.val_lineage, "max_len": max_len}  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _load_reference_model(s, device) -> GPT:
    """The frozen reference: the base (on resume, the parent recorded in the checkpoint)."""
    if s.ckpt is None:
        state, config = s.state_dict, s.config
    else:
        try:
            base = load_checkpoint(s.parent["path"])
        except FileNotFoundError as exc:
            raise UsageError(f"--resume: the reference (the base checkpoint) is gone: {exc}") from None
        state, config = base["state_dict"], base["config"]
    ref = GPT(config)
    ref.load_state_dict(state)
    ref.to(device).eval().requires_grad_(False)
    return ref


# --------------------------------------------------------------------------------------------------
# The run


def dpo(args: argparse.Namespace, info: DistInfo, log: Callable[..., None]) -> int:
    """``winnow train dpo`` (run through ``train.loop.run_cli``)."""
    out = Path(args.out)
    args.live_reference = args.live_reference or None  # a flag left out keeps the checkpoint's value
    # contexts of T + 1 tokens: T inputs and their shifted targets
    s = prepare(args, info, defaults=DEFAULTS, run_defining=RUN_DEFINING, context_extra=1, log=log)
    run = s.run
    if s.base_kind == "reward":
        raise UsageError(
            f"--base {run['base']} is a reward model; DPO needs a policy (a pretrained or SFT checkpoint)"
        )
    if not run["beta"] > 0:
        raise UsageError(f"--beta must be > 0 (got {run['beta']})")
    seed_everything(run["seed"])
    device = info.device
    model = GPT(s.config)
    model.load_state_dict(s.state_dict)
    model.to(device)
    B = run["micro_batch"]
    pad = s.tokenizer.pad_id
    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)

    need_model = run["live_reference"] or (run["eval_every"] and len(s.val))
    ref_model = _load_reference_model(s, device) if need_model else None
    if run["live_reference"]:
        reference = Reference(model=ref_model)
    else:
        key, path = _cache_key(s, s.config.block_size + 1), out / CACHE
        cached = torch.load(path, weights_only=True) if path.is_file() else None
        if cached is None or cached.get("key") != key:
            source = ref_model if ref_model is not None else _load_reference_model(s, device)
            kw = dict(micro_batch=B, pad_id=pad, device=device, autocast=autocast)
            cached = {"key": key, "train": reference_logps(source, s.train, **kw),
                      "val": reference_logps(source, s.val, **kw)}  # fmt: skip
            if info.is_main:  # written whole, then renamed: never a half cache
                torch.save(cached, path.with_suffix(".tmp"))
                path.with_suffix(".tmp").replace(path)
            log(f"reference log-probs of {len(s.train) + len(s.val):,} pairs computed once ({path.name})")
        reference = Reference(table=cached["train"])
    val_reference = Reference(model=ref_model) if run["live_reference"] else Reference(table=cached["val"])

    batches = PairBatches(
        s.train, micro_batch=B, pad_id=pad, seed=run["seed"], rank=info.rank, world_size=info.world_size
    )
    peak = run["lr"] if run["lr"] is not None else 0.1 * s.config.peak_lr()
    warmup = run["warmup"] if run["warmup"] is not None else max(0, round(0.03 * run["max_steps"]))
    run["lr"], run["warmup"] = peak, warmup
    evaluate = None
    if run["eval_every"] and len(s.val):
        evaluate = make_evaluate(s.val, val_reference, ref_model, micro_batch=B, pad_id=pad, beta=run["beta"],
                                 device=device, autocast=autocast, info=info)  # fmt: skip
    elif run["eval_every"]:
        log("no validation pairs (no --val or --val-fraction): val_rewards/* are not reported")
    log(model.summary(s.config.block_size))
    log(
        f"batch: {run['batch_pairs']} pairs = {B} × {info.world_size} rank(s) × {s.accum} accumulation; "
        f"{len(s.train):,} pairs; {run['max_steps']:,} steps; lr {peak:.3g}, warmup {warmup}"
        f"; beta {run['beta']}"
    )
    loss, train_metrics = make_loss(
        reference, beta=run["beta"], sft_weight=run["sft_weight"], device=device, info=info
    )
    meta = {
        "kind": "dpo",
        "train": {**run, "dtype": args.dtype, "compile": args.compile, "world_size": info.world_size},
        "parent": s.parent,
        "data": data_meta(s),
        "model": asdict(s.config),
    }
    task = Task(batches=batches, loss=loss, tokens=lambda b: b.tokens, evaluate=evaluate, label="dpo",
                train_metrics=train_metrics,
                samples=lambda m: reply_samples(m, s.tokenizer, s.sample_convs))  # fmt: skip
    settings = LoopSettings.from_run(
        run,
        args,
        max_steps=run["max_steps"],
        accum=s.accum,
        lr=peak,
        warmup=warmup,
        eval_every=run["eval_every"],
    )
    return run_loop(
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


def main(args: argparse.Namespace) -> int:
    return run_cli("dpo", dpo, args, (DataError,))
