"""``winnow train ppo``: RLHF with proximal policy optimisation against a reward model
(Ziegler et al. 2019; Ouyang et al. 2022; the details follow lm-human-preference-details and TRL's
PPO trainer, whose metric names are logged).

**One PPO iteration** (a *rollout*): ``--rollout-prompts`` prompts are taken in a seeded order
(every prompt once per pass); the policy samples one reply each with the KV-cached sampler
(``train.rollout.sample``, temperature 1: the behaviour policy is exactly the policy whose
log-probs the ratio uses); then, once, in eval mode and without gradient: the policy's log-probs,
entropies and values, the frozen reference's log-probs, and the reward model's score of each whole
conversation.  The per-token reward is ``−β·kl_t`` on every reply token plus, on the reply's last
token, the score (``RewardModel.score``: the RM's ``--normalize`` gain/bias when it has them, so a
normalised RM gives scores of mean 0 and std 1 on SFT-like replies, the scale β assumes) minus
``--missing-eot-penalty`` when the reply did not end with the end-of-turn token (it ran out of
``--max-new-tokens``).  ``kl_t`` is ``--kl-estimator`` k1 (``logp − ref_logp``, TRL's default: its
gradient through the reward is the true KL's) or k3 (non-negative, lower variance); all three
estimators are logged.  Advantages: GAE (``--gamma``, ``--lam``) over the reply's tokens, then
whitened over the rollout.  Then ``--ppo-epochs`` passes over the rollout in shuffled minibatches of
``--batch-rows`` rows, one optimizer step each (``train.loop``'s step: ``--micro-batch`` rows per
forward, accumulated): ``Σ_tokens [clipped policy loss + --vf-coef × clipped value loss]`` ÷ reply
tokens of the minibatch (``train.losses``: ``clipped_policy_loss``, ``clipped_value_loss``, ``gae``,
``masked_whiten``).  A rollout lasts ``ppo_epochs × rollout_prompts / batch_rows`` steps.

**β** is ``--kl-coef``, fixed, or with ``--target-kl T`` Ziegler et al.'s adaptive controller (as
lm-human-preferences): after each rollout ``β ← β·(1 + clip(KL/T − 1, ±0.2)·n/horizon)``, KL the
mean summed KL of the rollout's replies, n its replies, horizon ``--kl-horizon``.

**Ratio exactly 1 on the first minibatch.**  The old log-probs are computed by the same function
the loss uses (``train.rollout.token_logprobs``) on the *same* rows, padded to the same width, in the
same micro-batches as the first epoch will present them (its shuffled order is known at rollout
time), so the first minibatch's forward repeats the rollout's bit for bit: ``val/ratio`` is 1.0 and
``policy/clipfrac_avg`` 0.0 exactly at step 1 (``tests/test_ppo.py``).  Padding never leaks into a
real token (right padding, causal attention: ``train.rollout``), so other minibatch orders agree to
float rounding.

**Value head: a scalar head on the policy's own final hidden states, initialised to zero**
(``value_head``: n_embd → 1 with bias; lm-human-preferences' std-0 init), not a separate critic
initialised from the reward model.  Why: one forward of the policy gives log-probs *and* values
(``token_logprobs(..., return_hidden=True)``), where a critic costs a fourth model in memory (policy,
reference, RM, critic) and a second forward and backward per minibatch (twice the training
forwards of an equal-sized critic); a zero head makes V = 0 at the start, so the first advantages
are the whitened rewards-to-go instead of a random critic's errors (the value-initialisation bias
VC-PPO blames for collapse, arXiv 2503.01491).  The cost: the value loss's gradient also moves the
shared trunk, which ``--vf-coef`` 0.1 (TRL's) keeps small next to the policy's.

**Checkpoints** are ``kind: "ppo"``: ``model.pt`` is the policy alone, a plain GPT (so ``winnow
generate``, ``chat``, ``export`` and the playground load it as any policy); the value head is
training state, like the optimizer's moments, and lives in ``trainer.pt`` with the rollout buffer.
config.json records ``parent`` (the ``--policy`` checkpoint, also the frozen reference) and
``reward`` (the RM's path, kind and config sha256).

**Resume** is bit-identical (``tests/test_ppo.py``), also in the middle of a rollout: the data state
stores the current rollout's buffer (ids, masks, old log-probs, old values, advantages, returns: 6
floats and an id per token, 0.5 MB for 64 rows × 256 tokens), its statistics, the prompt position, β and the
value head.  Every random draw is seeded by (``--seed``, rollout number): sampling has its own
``torch.Generator``, minibatch orders their own numpy generators.

**Metrics** (TRL's names): ``rlhf_reward`` (= ``objective/rlhf_reward``: score − β·Σkl, mean over the
rollout's replies), ``objective/scores``, ``objective/non_score_reward``, ``objective/kl`` (the
chosen estimator, summed over a reply), ``objective/kl_k1|k2|k3``, ``objective/entropy``,
``objective/kl_coef``, ``completions/mean_length``, ``completions/eot_fraction`` (of the latest
rollout, repeated on each line until the next), and over the step's minibatches ``loss/policy_avg``,
``loss/value_avg``, ``policy/clipfrac_avg``, ``val/clipfrac_avg``, ``val/ratio`` (mean ratio, should
stay near 1), ``policy/approxkl_avg``; ``timing/generation_s`` (sampling), ``timing/scoring_s`` (the
rollout's forwards: policy, reference, RM) and ``timing/training_s`` (the rest of the step) since the
previous line.  Validation (``--val FILE`` / ``--val-fraction``): ``val_reward`` (mean RM score of
replies sampled with a fixed seed), ``val_kl`` (mean summed k1), ``val_completion_length``.

One process only: the rollout, reference and RM live with the policy on one device (no torchrun).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tokenizer.chat import ChatFormatError, require_chat_tokens
from train import remote
from train.checkpoint import load_checkpoint, resolve_checkpoint
from train.data import DataError, load_tokenizer
from train.generate import reply_samples
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
from train.losses import clipped_policy_loss, clipped_value_loss, gae, kl_estimates, masked_whiten
from train.model import GPT
from train.parallel import DistInfo
from train.reward import RewardModel, load_reward_model
from train.rollout import RolloutBatch, read_prompts, render_prompt, sample, token_logprobs
from train.sft import copy_base_tokenizer, parent_lineage, read_train_and_val

DEFAULTS = {
    **FINETUNE_OPTIM_DEFAULTS,
    "micro_batch": 4,
    "warmup": 0,
    "seed": 0,
    "eval_every": 20,
    "save_every": 200,
    "rollout_prompts": 16,
    "ppo_epochs": 4,
    "max_new_tokens": 48,
    "kl_coef": 0.05,
    "kl_estimator": "k1",
    "kl_horizon": 10000.0,
    "missing_eot_penalty": 0.0,
    "gamma": 1.0,
    "lam": 0.95,
    "cliprange": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
}
# settings that define the run: a --resume must not change them (--micro-batch too: the rollout
# buffer's position counts micro-batches, and the old log-probs were computed in micro-batches of it)
RUN_DEFINING = (
    "policy", "reward", "prompts", "val", "val_fraction", "batch_rows", "micro_batch", "lr", "schedule",
    "warmup", "cooldown", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "seed",
    "rollout_prompts", "ppo_epochs", "max_new_tokens", "kl_coef", "kl_estimator", "target_kl", "kl_horizon",
    "missing_eot_penalty", "gamma", "lam", "cliprange", "cliprange_value", "vf_coef",
)  # fmt: skip
KL_ESTIMATORS = ("k1", "k3")


# --------------------------------------------------------------------------------------------------
# The model: the policy and its value head


class PolicyWithValue(nn.Module):
    """The policy GPT and a zero-initialised scalar value head on its final hidden states.

    ``state_dict()`` is the policy's alone (see the module docstring: checkpoints are plain GPTs);
    the head's weights travel in the rollout state (``PPORollouts.state_dict``)."""

    def __init__(self, policy: GPT):
        super().__init__()
        self.policy = policy
        self.config = policy.config
        self.value_head = nn.Linear(policy.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx: torch.Tensor, **kw) -> torch.Tensor:
        return self.policy(idx, **kw)

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T) fp32 values of the states whose final hidden states are ``hidden`` (B, T, C)."""
        return self.value_head(hidden).float().squeeze(-1)

    def state_dict(self, *args, **kwargs):
        return self.policy.state_dict(*args, **kwargs)


class KLController:
    """β of the KL penalty: fixed (``target`` None), or Ziegler et al.'s adaptive controller, which
    moves β by at most ±20 %·n/horizon per rollout towards a summed KL of ``target`` nats."""

    def __init__(self, value: float, target: float | None = None, horizon: float = 10000.0):
        self.value, self.target, self.horizon = float(value), target, float(horizon)

    def update(self, kl: float, n: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon


# --------------------------------------------------------------------------------------------------
# Rollouts and their minibatches (the loop's Batches)


@dataclass
class MicroBatch:
    """Rows of the current rollout (at the rollout's full width) with what the loss needs."""

    batch: RolloutBatch
    old_logp: torch.Tensor  # (b, L-1)
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    tokens: int


BUFFER_KEYS = ("input_ids", "completion_mask", "lengths", "prompt_lengths", "old_logp", "old_values",
               "advantages", "returns")  # fmt: skip
ROLLOUT_STATS = ("rlhf_reward", "objective/rlhf_reward", "objective/scores", "objective/non_score_reward",
                 "objective/kl", "objective/kl_k1", "objective/kl_k2", "objective/kl_k3", "objective/entropy",
                 "objective/kl_coef", "completions/mean_length", "completions/eot_fraction")  # fmt: skip
TRAIN_STATS = ("loss/policy_avg", "loss/value_avg", "policy/clipfrac_avg", "val/ratio", "policy/approxkl_avg",
               "val/clipfrac_avg")  # fmt: skip


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def _rows(batch: RolloutBatch, rows: torch.Tensor) -> RolloutBatch:
    return RolloutBatch(batch.input_ids[rows], batch.completion_mask[rows], batch.lengths[rows],
                        batch.prompt_lengths[rows])  # fmt: skip


class PPORollouts:
    """``next_batch()`` serves the micro-batches of the current rollout's PPO epochs and samples the
    next rollout when they are used up; ``state_dict()`` holds everything a bit-identical resume
    needs, the buffer included (see the module docstring)."""

    FORMAT = "winnow.ppo_rollouts/1"

    def __init__(
        self,
        prompts: list[list[int]],
        *,
        model: PolicyWithValue,
        ref: GPT,
        rm: RewardModel,
        tokenizer,
        run: dict,
        kl: KLController,
        autocast,
        device: torch.device,
    ):
        self.prompts, self.model, self.ref, self.rm = prompts, model, ref, rm
        self.tokenizer, self.pad_id = tokenizer, tokenizer.pad_id
        self.end_id = require_chat_tokens(tokenizer)["<|end|>"]
        self.run, self.kl, self.autocast, self.device = run, kl, autocast, device
        self.n, self.micro = run["rollout_prompts"], run["micro_batch"]
        self.per_epoch = self.n // self.micro
        self.prompt_order = EpochOrder(len(prompts), run["seed"], 0)
        self.rollouts, self.position = 0, 0
        self.buffer: dict[str, torch.Tensor] | None = None
        self.stats: dict[str, float] = {}
        self.timing = {"generation": 0.0, "scoring": 0.0}

    # orders: every random draw is a pure function of (seed, what it is for, its number)
    def _minibatch_order(self, rollout: int, epoch: int) -> torch.Tensor:
        return torch.from_numpy(
            np.random.default_rng([self.run["seed"], 1, rollout, epoch]).permutation(self.n)
        )

    @torch.no_grad()
    def _rollout(self) -> None:
        r = self.run
        prompts = [self.prompts[self.prompt_order.next()] for _ in range(self.n)]
        policy = self.model.policy
        generator = torch.Generator(device=self.device).manual_seed(_seed(r["seed"], 2, self.rollouts))
        t0 = time.perf_counter()
        with self.autocast:  # the loop calls next_batch outside its autocast: bf16 sampling enters it here
            roll = sample(
                policy, self.tokenizer, prompts, max_new_tokens=r["max_new_tokens"], generator=generator
            )
        t1 = time.perf_counter()
        batch = roll.pack(self.pad_id).to(self.device)
        N, W = batch.completion_mask.shape
        logp, entropy, values, ref_logp = (torch.zeros(N, W, device=self.device) for _ in range(4))
        order = self._minibatch_order(self.rollouts, 0)
        was_training = self.model.training
        self.model.eval()
        with self.autocast:
            # the first epoch's micro-batches, exactly as the loss will see them: ratio 1 at step 1
            for j in range(0, N, self.micro):
                rows = order[j : j + self.micro].to(self.device)
                sub = _rows(batch, rows)
                lp, ent, hidden = token_logprobs(policy, sub, return_entropy=True, return_hidden=True)
                logp[rows], entropy[rows], values[rows] = lp, ent, self.model.values(hidden)
                ref_logp[rows] = token_logprobs(self.ref, sub)
            ids, last = batch.input_ids, batch.lengths - 1
            scores = torch.cat([self.rm.score(ids[j : j + self.micro], last[j : j + self.micro])
                                for j in range(0, N, self.micro)])  # fmt: skip
        self.model.train(was_training)
        self.timing["generation"] += t1 - t0
        self.timing["scoring"] += time.perf_counter() - t1

        mask = batch.completion_mask
        kls = {k: v * mask for k, v in kl_estimates(logp, ref_logp).items()}
        kl = kls[r["kl_estimator"]]
        pairs = zip(roll.finish_reasons, roll.completion_ids, strict=True)
        ended = torch.tensor([f == "eot" and c[-1] == self.end_id for f, c in pairs], device=self.device)
        scores = scores.float() - r["missing_eot_penalty"] * (~ended).float()
        beta = self.kl.value
        rewards = -beta * kl
        last = batch.lengths - 2  # the position whose next token is the reply's last one
        rewards[torch.arange(N, device=self.device), last] += scores
        advantages, returns = gae(rewards, values, mask, gamma=r["gamma"], lam=r["lam"])
        advantages = masked_whiten(advantages, mask)

        def per_reply(x: torch.Tensor) -> float:
            return (x * mask).sum(1).mean().item()

        score, non_score = scores.mean().item(), -beta * per_reply(kl)
        values_of_stats = [score + non_score, score + non_score, score, non_score, per_reply(kl),
                           *(per_reply(kls[k]) for k in ("k1", "k2", "k3")), per_reply(entropy), beta,
                           mask.sum(1).mean().item(), ended.float().mean().item()]  # fmt: skip
        self.stats = dict(zip(ROLLOUT_STATS, values_of_stats, strict=True))
        self.kl.update(per_reply(kl), N)
        self.buffer = {
            "input_ids": batch.input_ids, "completion_mask": mask, "lengths": batch.lengths,
            "prompt_lengths": batch.prompt_lengths, "old_logp": logp, "old_values": values,
            "advantages": advantages, "returns": returns,
        }  # fmt: skip
        self.rollouts += 1
        self.position = 0

    def next_batch(self) -> MicroBatch:
        if self.buffer is None or self.position == self.run["ppo_epochs"] * self.per_epoch:
            self._rollout()
        epoch, j = divmod(self.position, self.per_epoch)
        rows = self._minibatch_order(self.rollouts - 1, epoch)[j * self.micro : (j + 1) * self.micro]
        rows = rows.to(self.device)
        self.position += 1
        b = {k: v[rows] for k, v in self.buffer.items()}
        batch = RolloutBatch(b["input_ids"], b["completion_mask"], b["lengths"], b["prompt_lengths"])
        return MicroBatch(batch, b["old_logp"], b["old_values"], b["advantages"], b["returns"],
                          tokens=int(b["lengths"].sum()))  # fmt: skip

    def state_dict(self) -> dict:
        head = self.model.value_head
        return {
            "format": self.FORMAT,
            "prompts": len(self.prompts),
            "prompt_epoch": self.prompt_order.epoch,
            "prompt_position": self.prompt_order.position,
            "rollouts": self.rollouts,
            "position": self.position,
            "kl_coef": self.kl.value,
            "stats": dict(self.stats),
            "value_head": {
                "weight": head.weight.detach().cpu().clone(),
                "bias": head.bias.detach().cpu().clone(),
            },
            "buffer": None if self.buffer is None else {k: v.cpu().clone() for k, v in self.buffer.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != self.FORMAT or state.get("prompts") != len(self.prompts):
            raise DataError(
                f"the checkpoint's data state ({state.get('format')}, {state.get('prompts')} prompts) does "
                f"not match this run's {len(self.prompts)} prompts"
            )
        self.prompt_order.seek(state["prompt_epoch"], state["prompt_position"])
        self.rollouts, self.position = int(state["rollouts"]), int(state["position"])
        self.kl.value = float(state["kl_coef"])
        self.stats = dict(state["stats"])
        with torch.no_grad():
            self.model.value_head.weight.copy_(state["value_head"]["weight"])
            self.model.value_head.bias.copy_(state["value_head"]["bias"])
        buf = state["buffer"]
        self.buffer = None if buf is None else {k: buf[k].to(self.device) for k in BUFFER_KEYS}


# --------------------------------------------------------------------------------------------------
# Loss, metrics, validation


def make_loss(rollouts: PPORollouts, run: dict, device: torch.device):
    """The loop's loss (policy + vf_coef × value loss, summed over reply tokens) and ``train_metrics``."""
    sums = torch.zeros(len(TRAIN_STATS) + 1, dtype=torch.float64, device=device)  # + tokens
    mark = [time.perf_counter()]

    def loss(model, mb: MicroBatch):
        mask = mb.batch.completion_mask
        logp, _, hidden = token_logprobs(model.policy, mb.batch, return_hidden=True)
        values = model.values(hidden)
        pg, pg_sums = clipped_policy_loss(logp, mb.old_logp, mb.advantages, mask, run["cliprange"])
        vf, vf_clipped = clipped_value_loss(values, mb.old_values, mb.returns, mask, run["cliprange_value"])
        n = mask.sum()
        with torch.no_grad():
            sums.add_(torch.stack([pg.detach(), vf.detach(), pg_sums["clipfrac"], pg_sums["ratio"],
                                   pg_sums["approxkl"], vf_clipped, n]).double())  # fmt: skip
        return pg + run["vf_coef"] * vf, n

    def train_metrics() -> dict:
        now = time.perf_counter()
        t = rollouts.timing
        out = dict(rollouts.stats)
        n = sums[-1].item()
        if n:
            out.update(zip(TRAIN_STATS, (sums[:-1] / n).tolist(), strict=True))
        out["timing/generation_s"] = t["generation"]
        out["timing/scoring_s"] = t["scoring"]
        out["timing/training_s"] = max(0.0, now - mark[0] - t["generation"] - t["scoring"])
        sums.zero_()
        t["generation"] = t["scoring"] = 0.0
        mark[0] = now
        return out

    def restart_clock() -> None:  # after a validation: its time is no step's
        mark[0] = time.perf_counter()

    return loss, train_metrics, restart_clock


def make_evaluate(val: list[list[int]], *, ref: GPT, rm: RewardModel, tokenizer, run: dict, autocast,
                  device, after: Callable[[], None]):  # fmt: skip
    """``val_reward``, ``val_kl`` (summed k1 per reply), ``val_completion_length`` on the held-back
    prompts, replies sampled with the same seed at every evaluation."""

    @torch.no_grad()
    def evaluate(model: PolicyWithValue) -> dict:
        policy = model.policy
        generator = torch.Generator(device=device).manual_seed(_seed(run["seed"], 3))
        totals = torch.zeros(3, dtype=torch.float64)
        was_training = model.training
        model.eval()
        B = run["rollout_prompts"]
        for j in range(0, len(val), B):
            with autocast:
                roll = sample(policy, tokenizer, val[j : j + B], max_new_tokens=run["max_new_tokens"],
                              generator=generator)  # fmt: skip
            batch = roll.pack(tokenizer.pad_id).to(device)
            mask = batch.completion_mask
            with autocast:
                k1 = kl_estimates(token_logprobs(policy, batch), token_logprobs(ref, batch))["k1"]
                scores = rm.score(batch.input_ids, batch.lengths - 1).float()
            totals += torch.tensor([scores.sum().item(), (k1 * mask).sum().item(), mask.sum().item()],
                                   dtype=torch.float64)  # fmt: skip
        model.train(was_training)
        after()
        n = len(val)
        return {"val_reward": totals[0].item() / n, "val_kl": totals[1].item() / n,
                "val_completion_length": totals[2].item() / n}  # fmt: skip

    return evaluate


# --------------------------------------------------------------------------------------------------
# The run setup


def resolve_run(args: argparse.Namespace, saved: dict | None) -> dict:
    """The flags over the saved run (resume) over ``DEFAULTS``, paths absolute, ranges checked."""
    names = set(DEFAULTS) | set(RUN_DEFINING) | {"max_steps"}
    given = {name: getattr(args, name, None) for name in names}
    for name in ("policy", "reward", "prompts", "val"):
        if given[name] is not None:
            given[name] = remote.absolute(given[name])  # a checkpoint URL stays a URL
    run = merge_settings(given, saved, defaults=DEFAULTS, fixed=RUN_DEFINING)
    if args.max_steps is not None:
        run["max_steps"] = args.max_steps
    for name, what in (("policy", "CKPT (the chat model to tune)"), ("reward", "RM_CKPT (a reward model)"),
                       ("prompts", "FILE.jsonl (the prompts)")):  # fmt: skip
        if not run[name]:
            raise UsageError(f"--{name} {what} is required")
    problems = []
    for name in ("rollout_prompts", "ppo_epochs", "max_new_tokens"):
        if run[name] < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1 (got {run[name]})")
    for name in ("kl_coef", "vf_coef", "missing_eot_penalty"):
        if not (run[name] >= 0 and math.isfinite(run[name])):
            problems.append(f"--{name.replace('_', '-')} must be >= 0 (got {run[name]})")
    for name in ("gamma", "lam"):
        if not 0 <= run[name] <= 1:
            problems.append(f"--{name} must be in [0, 1] (got {run[name]})")
    for name in ("cliprange", "cliprange_value", "kl_horizon"):
        if not run[name] > 0:
            problems.append(f"--{name.replace('_', '-')} must be > 0 (got {run[name]})")
    if run["target_kl"] is not None and not run["target_kl"] > 0:
        problems.append(f"--target-kl must be > 0 (got {run['target_kl']})")
    if run["kl_estimator"] not in KL_ESTIMATORS:
        problems.append(
            f"--kl-estimator must be one of {', '.join(KL_ESTIMATORS)} (got {run['kl_estimator']})"
        )
    vf = run["val_fraction"]
    if vf is not None and not 0 < vf < 1:
        problems.append(f"--val-fraction must be in (0, 1) (got {vf})")
    if run["batch_rows"] is not None and run["batch_rows"] < 1:
        problems.append(f"--batch-rows must be >= 1 (got {run['batch_rows']})")
    if problems:
        raise UsageError("; ".join(problems))
    check_settings(run, args)
    B = run["micro_batch"]
    run["batch_rows"] = run["batch_rows"] or B
    if run["batch_rows"] % B or run["rollout_prompts"] % run["batch_rows"]:
        raise UsageError(
            f"--rollout-prompts {run['rollout_prompts']} must be a multiple of --batch-rows "
            f"{run['batch_rows']}, itself a multiple of --micro-batch {B} (whole minibatches)"
        )
    return run


def _checkpoint(path: str, flag: str) -> tuple[Path, dict]:
    try:
        d = resolve_checkpoint(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    return d, load_checkpoint(d)


def _check_kinds(policy: dict, policy_dir: Path, rm: dict, rm_dir: Path) -> None:
    if policy["meta"].get("kind") == "reward":
        raise UsageError(
            f"--policy {policy_dir} is a reward model (kind: reward); PPO tunes a chat model (an SFT "
            "checkpoint): give the reward model as --reward"
        )
    kind = rm["meta"].get("kind", "pretrain")
    if kind != "reward":
        raise UsageError(
            f"--reward {rm_dir} is a {kind} checkpoint, not a reward model (kind: reward); train one with "
            "`winnow train reward`"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prompt_reader(path: str) -> tuple[list[list[dict]], dict]:
    prompts = read_prompts(path)
    return prompts, {"path": str(path), "sha256": _sha256(Path(path)), "rows": len(prompts)}


def _render(tokenizer, convs: list[list[dict]], limit: int) -> tuple[list[list[int]], int]:
    """Rendered prompts that leave ``--max-new-tokens`` of room in the context, and how many did not."""
    rendered = [render_prompt(tokenizer, c) for c in convs]
    kept = [p for p in rendered if len(p) <= limit]
    return kept, len(rendered) - len(kept)


def _frozen(model: nn.Module, device) -> nn.Module:
    return model.to(device).eval().requires_grad_(False)


def ppo(args: argparse.Namespace, info: DistInfo, log: Callable[..., None]) -> int:
    """``winnow train ppo`` (run through ``train.loop.run_cli``)."""
    if info.world_size > 1:
        raise UsageError("winnow train ppo runs in one process (rollouts, reference and reward model share "
                         "the policy's device); run it without torchrun")  # fmt: skip
    out = Path(args.out)
    ckpt = open_output(out, args.resume)
    run = resolve_run(args, ckpt["meta"]["train"] if ckpt else None)
    device = info.device

    # the policy (or the resumed checkpoint), the reference (the --policy checkpoint) and the RM
    policy_dir, policy_ckpt = _checkpoint(run["policy"], "--policy")
    rm_dir, rm_ckpt = _checkpoint(run["reward"], "--reward")
    _check_kinds(policy_ckpt, policy_dir, rm_ckpt, rm_dir)
    if ckpt is None:
        parent = parent_lineage(policy_dir, policy_ckpt)
        tok_dir = copy_base_tokenizer(policy_dir, out, info)
    else:
        parent, tok_dir = ckpt["meta"]["parent"], out / "tokenizer"
        for name, d, recorded in (
            ("--policy", policy_dir, parent),
            ("--reward", rm_dir, ckpt["meta"]["reward"]),
        ):
            if _sha256(d / "config.json") != recorded["config_sha256"]:
                raise UsageError(f"--resume: {name} {d} is not the checkpoint this run started from "
                                 "(its config.json changed)")  # fmt: skip
    tokenizer = load_tokenizer(tok_dir)
    try:
        require_chat_tokens(tokenizer)
    except ChatFormatError as exc:
        raise UsageError(f"--policy: {exc}; run `winnow train sft` on it first") from None
    if _sha256(rm_dir / "tokenizer" / "tokenizer.json") != tokenizer.sha256:
        raise UsageError(
            f"--reward {rm_dir} was trained with another tokenizer than --policy {policy_dir}: the reward "
            "model must read the policy's tokens (train it from the same SFT)"
        )

    convs, files, val_convs, val_lineage = read_train_and_val(
        {
            "data": [run["prompts"]],
            "val": run["val"],
            "val_fraction": run["val_fraction"],
            "seed": run["seed"],
        },
        _prompt_reader,
    )
    limit = min(policy_ckpt["config"].block_size, rm_ckpt["config"].block_size) - run["max_new_tokens"]
    prompts, too_long = _render(tokenizer, convs, limit)
    val, val_too_long = _render(tokenizer, val_convs, limit)
    if not prompts:
        raise DataError(f"{run['prompts']}: no prompt leaves --max-new-tokens {run['max_new_tokens']} of "
                        f"room in the context ({limit + run['max_new_tokens']} tokens)")  # fmt: skip
    log(f"data: {len(prompts):,} prompts ({too_long:,} dropped: longer than {limit} tokens), {len(val):,} "
        f"validation prompts ({val_too_long:,} dropped)")  # fmt: skip

    seed_everything(run["seed"])
    config = policy_ckpt["config"]
    policy = GPT(config)
    policy.load_state_dict(ckpt["state_dict"] if ckpt else policy_ckpt["state_dict"])
    model = PolicyWithValue(policy).to(device)
    ref = GPT(config)
    ref.load_state_dict(policy_ckpt["state_dict"])
    ref = _frozen(ref, device)
    rm = _frozen(load_reward_model(rm_ckpt["config"], rm_ckpt["state_dict"], strict_head=True), device)
    reward_lineage = ckpt["meta"]["reward"] if ckpt else parent_lineage(rm_dir, rm_ckpt)
    norm = rm_ckpt["meta"].get("reward_normalization")
    log(f"reward model {rm_dir}: scores normalised to mean 0, std 1 on {norm['n']} calibration rows"
        if norm else f"reward model {rm_dir}: raw scores (trained without --normalize: β acts on the RM's "
        "own scale)")  # fmt: skip
    del policy_ckpt, rm_ckpt
    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)

    B, rows = run["micro_batch"], run["batch_rows"]
    steps_per_rollout = run["ppo_epochs"] * run["rollout_prompts"] // rows
    if run["max_steps"] is None:  # one pass over the prompts
        run["max_steps"] = steps_per_rollout * math.ceil(len(prompts) / run["rollout_prompts"])
    peak = run["lr"] if run["lr"] is not None else 0.1 * config.peak_lr()
    run["lr"] = peak
    kl = KLController(run["kl_coef"], run["target_kl"], run["kl_horizon"])
    rollouts = PPORollouts(prompts, model=model, ref=ref, rm=rm, tokenizer=tokenizer, run=run, kl=kl,
                           autocast=autocast, device=device)  # fmt: skip
    loss, train_metrics, restart_clock = make_loss(rollouts, run, device)
    evaluate = None
    if run["eval_every"] and val:
        evaluate = make_evaluate(val, ref=ref, rm=rm, tokenizer=tokenizer, run=run, autocast=autocast,
                                 device=device, after=restart_clock)  # fmt: skip
    elif run["eval_every"]:
        log("no validation prompts (no --val or --val-fraction): val_reward is not reported")
    log(policy.summary(config.block_size))
    beta = f"adaptive, target {run['target_kl']}" if run["target_kl"] else "fixed"
    log(f"ppo: {run['rollout_prompts']} prompts per rollout, {run['ppo_epochs']} epochs of minibatches of "
        f"{rows} rows ({B} per forward): {steps_per_rollout} steps per rollout; {run['max_steps']:,} steps; "
        f"lr {peak:.3g}; β {run['kl_coef']} ({beta}, {run['kl_estimator']})")  # fmt: skip
    meta = {
        "kind": "ppo",
        "train": {**run, "dtype": args.dtype, "compile": args.compile, "world_size": info.world_size},
        "parent": parent,
        "reward": reward_lineage,
        # examples: the playground's lineage line ("ppo on FILE (N examples)")
        "data": {"files": files, "val": val_lineage, "prompts": len(prompts), "examples": len(prompts),
                 "dropped_too_long": too_long, "tokenizer_json_sha256": tokenizer.sha256},
        "model": asdict(config),
        "value_head": {"on": "the policy's final hidden states", "init": "zeros", "saved_in": "trainer.pt"},
    }  # fmt: skip
    task = Task(batches=rollouts, loss=loss, tokens=lambda mb: mb.tokens, evaluate=evaluate, supervised=True,
                label="ppo", train_metrics=train_metrics,
                samples=lambda m: reply_samples(m.policy, tokenizer, (val_convs or convs)[:4],
                                                run["max_new_tokens"]))  # fmt: skip
    settings = LoopSettings.from_run(run, args, max_steps=run["max_steps"], accum=rows // B, lr=peak,
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
        flops_per_token=policy.flops_per_token(config.block_size),
        log=log,
    )


def main(args: argparse.Namespace) -> int:
    return run_cli("ppo", ppo, args, (DataError,))
