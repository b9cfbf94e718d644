"""``winnow train grpo``: group relative policy optimisation against a programmatic verifier
(DeepSeekMath's GRPO, with the loss normalisations of DAPO and Dr. GRPO selectable).

**One step** (``train.loop``'s Task/Batches; ``GroupBatches.next_batch`` is a rollout): for each of
the micro-batch's prompts, sample ``--num-generations`` G completions from the *current* policy
(``train.rollout.sample``, KV-cached, temperature ``--temperature``), score each with the verifier
(``train.tasks``), turn the G rewards of a prompt into advantages ``(r - mean) / (std + 1e-4)``
(``--scale-rewards group``) or ``r - mean`` (``none``, Dr. GRPO), then one forward and backward of
the padded prompt + completion rows.  **On-policy**: one optimizer step per rollout batch, so the
importance ratio ``exp(logp - logp_old)`` is exactly 1 and PPO's clip never binds; the loss is
written with it anyway (``train.losses.grpo_loss``), so its gradient is ``-A ∇logp``.  Several
optimizer steps per rollout (``num_iterations`` > 1) are not offered: they would need the rollout
and its old log-probs kept across steps and in the checkpoint, for a speed-up that matters when
generation is expensive relative to training (long answers); on the arithmetic bench (0.46M
parameters, 128 completions of ~4 tokens per step, one CPU thread) generation is 35 % of a step
(0.18 s of 0.52 s), so reuse would save at most that (bench/README.md).

**Loss normalisation** (``--loss-type``): ``token`` (default; DAPO, TRL's default ``dapo``) divides
the step's summed per-token loss by its completion tokens, through the loop's normalisation by
"supervised" items (``(sum, tokens)`` per micro-batch), so accumulation and ranks do not change it.
Why the default: every completion token weighs the same whatever its sequence's length.  The
original ``sequence`` mean first averages inside each completion, so a token of a long answer
weighs less than one of a short answer (NeMo-RL PR #3656: a 10- and a 1000-token answer get 99 %
and 1 % of the weight), and long wrong answers are penalised too little: TRL PR #3138 shows runs
drifting into long gibberish under it; verl #593 works the bias out on a 2-row example (3.33 vs 6.0).
``dr_grpo`` divides by the constant ``--max-new-tokens`` instead (Dr. GRPO, TRL PR #3256), no
length bias either, with a gradient scale that does not depend on the batch's lengths.  Each is
hand-checked on a 2-sequence example in ``tests/test_grpo.py``.

**KL** (``--beta``, default 0 as TRL and DAPO: no reference model is loaded).  With β > 0 the
frozen starting policy (the ``--policy`` checkpoint; on resume the parent recorded in the
checkpoint) gives ``ref_logp`` and ``β · k3`` is added to every token's loss (``kl`` logged).

**Metrics** (TRL's names): ``reward`` (mean over completions), ``reward_std`` (mean over groups of
each group's std), ``frac_reward_zero_std`` (groups whose G rewards are all equal: all right or all
wrong; their advantages are 0 and they give no gradient), ``completions/mean_length``,
``completions/clipped_ratio`` (share that hit ``--max-new-tokens`` without the end token),
``entropy`` (mean per completion token), ``kl`` (β > 0), ``reward_errors`` (verifier exceptions and
non-numbers, each scored 0), ``timing/generation_s`` (sampling + scoring) and
``timing/training_s`` (forward, backward, optimizer step) of the logged step; validation:
``val_accuracy`` (greedy completions of the held-back items whose reward is >= 1: the verifier's
"correct"), ``val_reward``, ``val_completions/mean_length``.

**train_loss ≈ 0 is expected.**  On-policy with group-normalised advantages, each group's
advantages sum to 0 and the ratio is 1, so the loss value is ``-Σ A_i n_i / N`` ≈ 0 (exactly 0 when
a group's completions are equally long, and always for zero-std groups) while its *gradient*
``-Σ A_i ∇ log π(o_i)`` is not: a grad_norm > 0 with a loss at 0 is the normal state, not a bug
(huggingface/trl #3452, #3857).  Watch ``reward``, ``val_accuracy`` and ``frac_reward_zero_std``
(at 1.0 nothing is learned: the task is too easy or too hard for the policy, raise G or change it).

**Resume** restores the weights, the optimizer, the item order (epoch, position) and the sampling
generator's state (``GroupBatches.state_dict``), and the loop's RNGs: the continued run is
bit-identical to an uninterrupted one (``tests/test_grpo.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tokenizer.chat import ChatFormatError, require_chat_tokens
from train import remote
from train.checkpoint import load_checkpoint, resolve_checkpoint
from train.data import DataError, load_tokenizer
from train.loop import (
    FINETUNE_OPTIM_DEFAULTS,
    EpochOrder,
    LoopSettings,
    Task,
    UsageError,
    check_settings,
    make_autocast,
    merge_settings,
    open_output,
    pick_dtype,
    run_cli,
    run_loop,
    seed_everything,
)
from train.losses import GRPO_LOSS_TYPES, group_advantages, grpo_loss, kl_estimates
from train.model import GPT
from train.parallel import DistInfo, all_reduce_sum
from train.rollout import RolloutBatch, render_prompt, sample, token_logprobs
from train.sft import copy_base_tokenizer, parent_lineage
from train.tasks import Item, TaskSpec, Verifier, parse_digits, resolve_task

DEFAULTS = {
    **FINETUNE_OPTIM_DEFAULTS,
    "micro_batch": 4,
    "num_generations": 8,
    "max_new_tokens": 64,
    "temperature": 1.0,
    "loss_type": "token",
    "scale_rewards": "group",
    "beta": 0.0,
    "digits": "2",
    "val_size": 200,
    "max_steps": 200,
    "warmup": 0,
    "seed": 0,
    "eval_every": 25,
    "save_every": 100,
}
RUN_DEFINING = (
    "policy", "task", "prompts", "val", "val_fraction", "digits", "val_size", "num_generations",
    "max_new_tokens", "temperature", "top_k", "top_p", "loss_type", "scale_rewards", "beta",
    "batch_prompts", "lr", "schedule", "warmup", "cooldown", "min_lr_ratio", "weight_decay", "beta1",
    "beta2", "grad_clip", "seed",
)  # fmt: skip
RESUMABLE = ("micro_batch", "max_steps", "eval_every", "save_every")
SCALE_REWARDS = ("group", "none")


@dataclass
class GroupBatch:
    """One micro-batch: ``batch`` holds n prompts × G completions, group by group; ``advantages``
    (n·G,) float32 on the device."""

    batch: RolloutBatch
    advantages: torch.Tensor
    tokens: int


# stats that GroupBatches and the loss accumulate between two metrics lines (sums; means follow)
STAT_NAMES = ("reward", "completions", "group_std", "groups", "zero_std", "length", "clipped",
              "reward_errors", "entropy", "kl", "loss_tokens")  # fmt: skip


class GroupBatches:
    """The loop's batch source: every ``next_batch()`` samples a fresh group rollout with the current
    policy.  Items are visited in a new seeded order every epoch (rank r takes every world-th item of
    the global order, as SFT's rows); the sampling generator is seeded by (seed, rank).  Resume
    state: epoch, position and the generator's state."""

    FORMAT = "winnow.grpo_batches/1"

    def __init__(
        self,
        model: GPT,
        tokenizer,
        items: list[Item],
        prompt_ids: list[list[int]],
        verifier: Verifier,
        *,
        run: dict,
        accum: int,
        stats: torch.Tensor,
        info: DistInfo,
        autocast=None,
    ):
        self.model, self.tokenizer, self.items, self.prompt_ids = model, tokenizer, items, prompt_ids
        # the loop calls next_batch outside its autocast: sampling enters it here (bf16 rollouts)
        self.autocast = autocast if autocast is not None else contextlib.nullcontext()
        self.verifier, self.run, self.accum, self.stats, self.info = verifier, run, accum, stats, info
        self.G = run["num_generations"]
        seed = int(np.random.SeedSequence([run["seed"], info.rank]).generate_state(1)[0])
        self.generator = torch.Generator(device=info.device).manual_seed(seed)
        self.order = EpochOrder(len(items), run["seed"])
        self.micro = 0
        self.step_start = time.perf_counter()
        self.generation_s = 0.0

    def next_batch(self) -> GroupBatch:
        t0 = time.perf_counter()
        if self.micro % self.accum == 0:  # the first micro-batch of a step: the step's clock starts
            self.step_start, self.generation_s = t0, 0.0
        self.micro += 1
        W, run = self.info.world_size, self.run
        index = [self.order.next() for _ in range(run["micro_batch"] * W)][self.info.rank :: W]
        prompts = [self.prompt_ids[i] for i in index for _ in range(self.G)]
        with self.autocast:
            rollout = sample(self.model, self.tokenizer, prompts, max_new_tokens=run["max_new_tokens"],
                             temperature=run["temperature"], top_k=run["top_k"], top_p=run["top_p"],
                             generator=self.generator)  # fmt: skip
        errors_before = self.verifier.errors
        rows = [i for i in index for _ in range(self.G)]
        texts = completion_texts(self.tokenizer, rollout)
        scores = [self.verifier(self.items[i], t) for i, t in zip(rows, texts, strict=True)]
        rewards = torch.tensor(scores, dtype=torch.float32)
        advantages, zero_std = group_advantages(rewards, self.G, scale=run["scale_rewards"])
        batch = rollout.pack(self.tokenizer.pad_id).to(self.info.device)
        lengths = torch.tensor([len(c) for c in rollout.completion_ids], dtype=torch.float64)
        groups = rewards.double().view(-1, self.G)
        with torch.no_grad():
            self.stats[:8] += torch.tensor([
                rewards.double().sum(), len(rewards), groups.std(dim=1).sum(), len(groups), zero_std.sum(),
                lengths.sum(), sum(r == "length" for r in rollout.finish_reasons),
                self.verifier.errors - errors_before,
            ], dtype=torch.float64, device=self.stats.device)  # fmt: skip
        self.generation_s += time.perf_counter() - t0
        return GroupBatch(batch, advantages.to(self.info.device), int(batch.lengths.sum()))

    def state_dict(self) -> dict:
        return {
            "format": self.FORMAT,
            "epoch": self.order.epoch,
            "position": self.order.position,
            "items": len(self.items),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != self.FORMAT or state.get("items") != len(self.items):
            raise DataError(
                f"the checkpoint's data state ({state.get('format')}, {state.get('items')} items) does not "
                f"match this run's {len(self.items)} items"
            )
        self.order.seek(state["epoch"], state["position"])
        self.generator.set_state(state["generator"])


def completion_texts(tokenizer, rollout) -> list[str]:
    """Each completion's text without its end token (what a verifier judges)."""
    return [
        tokenizer.decode(c[:-1] if reason == "eot" else c)
        for c, reason in zip(rollout.completion_ids, rollout.finish_reasons, strict=True)
    ]


def make_loss(run: dict, ref_model: GPT | None, stats: torch.Tensor):
    """The loop's loss: GRPO's per-token loss aggregated by ``--loss-type`` (``(sum, n)``)."""
    beta = run["beta"]

    def loss(model, b: GroupBatch):
        logp, entropy, _ = token_logprobs(model, b.batch, return_entropy=True)
        mask = b.batch.completion_mask
        ref = None
        if beta:
            with torch.no_grad():
                ref = token_logprobs(ref_model, b.batch)
        total, n = grpo_loss(
            logp,
            b.advantages,
            mask,
            loss_type=run["loss_type"],
            max_completion_length=run["max_new_tokens"],
            ref_logp=ref,
            beta=beta,
        )
        with torch.no_grad():
            kl = (kl_estimates(logp, ref)["k3"] * mask).sum() if beta else torch.zeros(())
            stats[8:] += torch.stack([(entropy * mask).sum(), kl, mask.sum()]).double().to(stats.device)
        return total, n

    return loss


def make_train_metrics(stats: torch.Tensor, batches: GroupBatches, info: DistInfo, beta: float):
    def train_metrics() -> dict:
        all_reduce_sum(stats, info)
        s = dict(zip(STAT_NAMES, stats.tolist(), strict=True))
        stats.zero_()
        if not s["completions"]:
            return {}
        out = {
            "reward": s["reward"] / s["completions"],
            "reward_std": s["group_std"] / s["groups"],
            "frac_reward_zero_std": s["zero_std"] / s["groups"],
            "completions/mean_length": s["length"] / s["completions"],
            "completions/clipped_ratio": s["clipped"] / s["completions"],
            "entropy": s["entropy"] / max(s["loss_tokens"], 1),
            "reward_errors": int(s["reward_errors"]),
        }
        if beta:
            out["kl"] = s["kl"] / max(s["loss_tokens"], 1)
        step_s = time.perf_counter() - batches.step_start
        out["timing/generation_s"] = batches.generation_s
        out["timing/training_s"] = step_s - batches.generation_s
        return out

    return train_metrics


def make_evaluate(tokenizer, items: list[Item], prompt_ids: list[list[int]], verifier: Verifier, *,
                  run: dict, info: DistInfo, autocast=None):  # fmt: skip
    """``val_accuracy`` (greedy completions scoring >= 1), ``val_reward``, ``val_completions/mean_length``."""
    chunk = run["micro_batch"] * run["num_generations"]  # the rollouts' own batch size

    @torch.no_grad()
    def evaluate(model) -> dict:
        mine = list(range(info.rank, len(items), info.world_size))
        sums = torch.zeros(4, dtype=torch.float64, device=info.device)
        for j in range(0, len(mine), chunk):
            index = mine[j : j + chunk]
            prompts = [prompt_ids[i] for i in index]
            with autocast if autocast is not None else contextlib.nullcontext():
                r = sample(model, tokenizer, prompts, max_new_tokens=run["max_new_tokens"], temperature=0.0)
            scores = [
                verifier(items[i], t) for i, t in zip(index, completion_texts(tokenizer, r), strict=True)
            ]
            length = sum(len(c) for c in r.completion_ids)
            got = [sum(scores), sum(s >= 1.0 for s in scores), len(scores), length]
            sums += torch.tensor(got, dtype=torch.float64, device=info.device)
        all_reduce_sum(sums, info)
        n = sums[2].item()
        if not n:
            return {}
        return {"val_accuracy": sums[1].item() / n, "val_reward": sums[0].item() / n,
                "val_completions/mean_length": sums[3].item() / n}  # fmt: skip

    return evaluate


SAMPLES = 4  # greedy completions of the final policy logged to samples.jsonl


def make_samples(tokenizer, items: list[Item], prompt_ids: list[list[int]], verifier: Verifier, *,
                 run: dict, autocast=None):  # fmt: skip
    """The final policy's greedy completions of the first held-back items, with the verifier's
    reward (``samples.jsonl``, shown by ``winnow report``)."""

    @torch.no_grad()
    def samples(model) -> list[dict]:
        index = list(range(min(SAMPLES, len(items))))
        if not index:
            return []
        with autocast if autocast is not None else contextlib.nullcontext():
            r = sample(model, tokenizer, [prompt_ids[i] for i in index],
                       max_new_tokens=run["max_new_tokens"], temperature=0.0)  # fmt: skip
        texts = completion_texts(tokenizer, r)
        return [
            {"prompt": items[i].prompt, "completion": t, "reward": verifier(items[i], t),
             "finish_reason": reason}
            for i, t, reason in zip(index, texts, r.finish_reasons, strict=True)
        ]  # fmt: skip

    return samples


# --------------------------------------------------------------------------------------------------
# The run


def resolve_args(args: argparse.Namespace, saved: dict | None) -> dict:
    """Flags over the checkpoint's settings (resume) over DEFAULTS, paths absolute, range checks."""
    names = set(DEFAULTS) | set(RUN_DEFINING) | set(RESUMABLE)
    given = {name: getattr(args, name, None) for name in names}
    for name in ("policy", "prompts", "val"):
        if given[name] is not None:
            given[name] = remote.absolute(given[name])  # a checkpoint URL stays a URL
    if given["digits"] is not None:  # one spelling per setting, so --resume compares like with like
        d1, d2 = parse_digits(given["digits"])
        given["digits"] = str(d1) if d1 == d2 else f"{d1},{d2}"
    task = given["task"]
    if task and ":" in task:  # a .py path: absolute, so --resume from another directory finds it
        module, _, fn = task.rpartition(":")
        if module.endswith(".py") or "/" in module:
            given["task"] = f"{os.path.abspath(module)}:{fn}"
    run = merge_settings(given, saved, defaults=DEFAULTS, fixed=RUN_DEFINING)
    if not run["policy"]:
        raise UsageError("--policy CKPT is required (the chat model to train: an SFT checkpoint)")
    check_settings(run, args)
    problems = []
    if run["num_generations"] < 2:
        problems.append(
            f"--num-generations must be >= 2: advantages compare a group (got {run['num_generations']})"
        )
    if run["max_new_tokens"] < 1:
        problems.append(f"--max-new-tokens must be >= 1 (got {run['max_new_tokens']})")
    if not run["temperature"] > 0:
        problems.append(f"--temperature must be > 0: a greedy group has no spread (got {run['temperature']})")
    if run["beta"] < 0:
        problems.append(f"--beta must be >= 0 (got {run['beta']})")
    if run["loss_type"] not in GRPO_LOSS_TYPES or run["scale_rewards"] not in SCALE_REWARDS:
        problems.append("--loss-type must be token|sequence|dr_grpo and --scale-rewards group|none")
    if run["val_fraction"] is not None and not 0 < run["val_fraction"] < 1:
        problems.append(f"--val-fraction must be in (0, 1) (got {run['val_fraction']})")
    if run["batch_prompts"] is not None and run["batch_prompts"] < 1:
        problems.append(f"--batch-prompts must be >= 1 (got {run['batch_prompts']})")
    if problems:
        raise UsageError("; ".join(problems))
    return run


def _render_items(tokenizer, items: list[Item], block_size: int) -> tuple[list[Item], list[list[int]], int]:
    """(kept items, their prompt ids, dropped): a prompt that fills the context leaves no room to answer."""
    kept, ids, dropped = [], [], 0
    for it in items:
        p = render_prompt(tokenizer, it.messages)
        if len(p) >= block_size:
            dropped += 1
            continue
        kept.append(it)
        ids.append(p)
    return kept, ids, dropped


def _policy(run: dict, ckpt: dict | None, out: Path, info: DistInfo):
    """(config, state_dict, parent lineage, tokenizer dir) of the starting policy or the resumed run."""
    if ckpt is not None:
        return ckpt["config"], ckpt["state_dict"], ckpt["meta"]["parent"], out / "tokenizer"
    try:
        policy_dir = resolve_checkpoint(run["policy"])
        base = load_checkpoint(policy_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--policy: {exc}") from None
    if base["meta"].get("kind") == "reward":
        raise UsageError(
            f"--policy {policy_dir} is a reward model (kind: reward): GRPO trains a policy that generates; "
            "pass the SFT checkpoint (a reward model scores text and has no next-token head)"
        )
    return (
        base["config"],
        base["state_dict"],
        parent_lineage(policy_dir, base),
        copy_base_tokenizer(policy_dir, out, info),
    )


def _reference(run: dict, parent: dict, ckpt: dict | None, state_dict: dict, config, device) -> GPT:
    """The frozen starting policy (β > 0): the --policy weights, or on resume the recorded parent."""
    if ckpt is not None:
        try:
            base = load_checkpoint(parent["path"])
        except FileNotFoundError as exc:
            raise UsageError(
                f"--resume with --beta > 0: the reference (the --policy checkpoint) is gone: {exc}"
            ) from None
        state_dict, config = base["state_dict"], base["config"]
    ref = GPT(config)
    ref.load_state_dict(state_dict)  # copied into ref's own tensors: the policy's updates never reach it
    return ref.to(device).eval().requires_grad_(False)


def grpo(args: argparse.Namespace, info: DistInfo, log: Callable[..., None]) -> int:
    """``winnow train grpo`` (run through ``train.loop.run_cli``)."""
    out = Path(args.out)
    ckpt = open_output(out, args.resume)
    run = resolve_args(args, ckpt["meta"]["train"] if ckpt else None)
    spec: TaskSpec = resolve_task(run, log)  # the verifier's import errors before any model work
    config, state_dict, parent, tok_dir = _policy(run, ckpt, out, info)
    tokenizer = load_tokenizer(tok_dir)
    try:
        require_chat_tokens(tokenizer)
    except ChatFormatError as exc:
        raise UsageError(f"--policy: {exc}; run `winnow train sft` on it first") from None

    T = config.block_size
    train_items, train_ids, dropped = _render_items(tokenizer, spec.train, T)
    val_items, val_ids, val_dropped = _render_items(tokenizer, spec.val, T)
    if not train_items:
        raise DataError(f"no training item: all {len(spec.train)} prompts fill the {T}-token context")
    log(f"task {run['task']}: {len(train_items):,} training items ({dropped:,} dropped: the prompt fills the "
        f"context), {len(val_items):,} validation items ({val_dropped:,} dropped)")  # fmt: skip

    seed_everything(run["seed"])
    device = info.device
    model = GPT(config)
    model.load_state_dict(state_dict)
    model.to(device)
    ref_model = _reference(run, parent, ckpt, state_dict, config, device) if run["beta"] else None

    B, W, G = run["micro_batch"], info.world_size, run["num_generations"]
    batch_prompts = run["batch_prompts"] or B * W
    if batch_prompts % (B * W):
        raise UsageError(
            f"--batch-prompts {batch_prompts} is not a multiple of micro-batch × world = {B} × {W}"
        )
    run["batch_prompts"] = batch_prompts
    accum = batch_prompts // (B * W)
    peak = run["lr"] if run["lr"] is not None else 0.1 * config.peak_lr()
    run["lr"] = peak

    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)
    stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=device)
    batches = GroupBatches(model, tokenizer, train_items, train_ids, spec.verifier, run=run, accum=accum,
                           stats=stats, info=info, autocast=autocast)  # fmt: skip
    evaluate = None
    val_verifier = Verifier(spec.verifier.fn, takes_item=spec.verifier.takes_item, log=log)
    shown, shown_ids = (val_items, val_ids) if val_items else (train_items, train_ids)
    samples = make_samples(tokenizer, shown, shown_ids, val_verifier, run=run, autocast=autocast)
    if run["eval_every"] and val_items:
        evaluate = make_evaluate(
            tokenizer, val_items, val_ids, val_verifier, run=run, info=info, autocast=autocast
        )
    elif run["eval_every"]:
        log("no validation items (--val, --val-fraction, arithmetic's --val-size): no val_accuracy")
    log(model.summary(T))
    log(
        f"batch: {batch_prompts} prompts × {G} completions = {B} × {W} rank(s) × {accum} accumulation; "
        f"{run['max_steps']:,} steps; lr {peak:.3g}; loss {run['loss_type']}, scale {run['scale_rewards']}, "
        f"beta {run['beta']}; {device.type} {str(dtype).removeprefix('torch.')}"
        + (f"; resuming at step {ckpt['trainer_state']['step']}" if ckpt else "")
    )
    meta = {
        "kind": "grpo",
        "train": {**run, "dtype": args.dtype, "compile": args.compile, "world_size": W},
        "parent": parent,
        "data": {
            **spec.lineage,
            "examples": len(train_items),
            "val_items": len(val_items),
            "dropped": dropped + val_dropped,
            "tokenizer_json_sha256": tokenizer.sha256,
        },
        "model": asdict(config),
    }
    task = Task(
        batches=batches,
        loss=make_loss(run, ref_model, stats),
        tokens=lambda b: b.tokens,
        evaluate=evaluate,
        label="grpo",
        train_metrics=make_train_metrics(stats, batches, info, run["beta"]),
        samples=samples,
    )
    settings = LoopSettings.from_run(run, args, max_steps=run["max_steps"], accum=accum, lr=peak,
                                     warmup=run["warmup"], eval_every=run["eval_every"])  # fmt: skip
    return run_loop(
        model,
        task,
        settings,
        out=out,
        info=info,
        dtype=dtype,
        meta=meta,
        tokenizer_dir=tok_dir,
        trainer_state=ckpt["trainer_state"] if ckpt else None,
        log=log,
    )


def main(args: argparse.Namespace) -> int:
    return run_cli("grpo", grpo, args, (DataError,))
