"""RL speed: rollout tokens/s with and without the KV cache, and where PPO's and GRPO's time goes.

**Rollouts** (``train.rollout.sample``, what both RL trainers call): ``--batch`` prompts, each
sampled for exactly ``--new-tokens`` tokens (stop ids disabled, so both paths do the same work), with
the KV cache (one prefill, then one single-token forward per step) and without (``use_cache=False``:
the whole sequence again for every new token).  Same seeded generator, so both must draw the same
tokens (checked: ``same_tokens``).  tokens/s = batch × new tokens / wall (prefill included), median
of ``--repeats`` interleaved runs.

**Time split**: ``winnow train ppo`` and ``winnow train grpo --task arithmetic`` from the same
``--policy``, fp32, 16 completions per rollout of at most ``--rl-new-tokens`` tokens, prompts of one
kind, ``What is A + B?`` (GRPO's built-in task makes its own; PPO reads such questions from a file;
its reward model is trained for a few steps from the policy on ``preference_dev``: its scores do not
matter for timing).  PPO: 4 epochs of one 16-row minibatch per rollout (4 optimizer steps); GRPO:
2 prompts × 8 completions, one step per rollout (on-policy); both sample the rollout's 16 replies
as one batch (GRPO samples per micro-batch: ``--micro-batch 2``).  Sums of the trainers' ``timing/*``
over ``--rollouts`` rollouts: PPO's ``generation_s`` is sampling only, its ``scoring_s`` the
rollout's forwards (policy log-probs and values, reference, RM); GRPO's ``generation_s`` is
sampling plus the verifier.  Replies end at ``<|end|>``, so their lengths differ between the runs
(``mean_completion_length``).

One torch thread by default (``--threads``): on this shared 2-core machine, busy with other work,
2 threads sampled ~10× *slower* than 1 (14 vs 160 tokens/s, cached, batch 16: the threads wait
on each other while the cores are taken).

    .venv/bin/python bench/rl_speed.py --policy runs/english_lm_sft
    .venv/bin/python bench/rl_speed.py --only split      # re-measure one part, keep the other
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchutil  # noqa: E402

from pipeline.cli import main as winnow  # noqa: E402
from train.checkpoint import load_model  # noqa: E402
from train.rollout import render_prompt, sample  # noqa: E402
from train.tasks import question  # noqa: E402

PREFERENCES = ROOT.parent / "shared" / "data" / "preference_dev.jsonl.gz"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    """(result, wall seconds, share of the machine's CPU that other processes used meanwhile)."""
    busy0, own0, t0 = benchutil.busy_cpu_s(), cpu_s(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    other = max(0.0, benchutil.busy_cpu_s() - busy0 - (cpu_s() - own0))
    return out, wall, other / ((os.cpu_count() or 1) * wall)


def questions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [question(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(n)]


def rollout_speed(policy: Path, batch: int, new_tokens: int, repeats: int) -> dict:
    model, tok = load_model(policy)
    prompts = [render_prompt(tok, [{"role": "user", "content": q}]) for q in questions(batch, 0)]
    runs: dict[str, list] = {"cache": [], "no_cache": []}
    tokens = {}
    for _ in range(repeats):
        for name, use_cache in (("cache", True), ("no_cache", False)):
            benchutil.wait_for_quiet(max_wait_s=15)
            roll, wall, other = timed(lambda uc=use_cache: sample(
                model, tok.pad_id, prompts, max_new_tokens=new_tokens, stop_ids=(),
                generator=torch.Generator().manual_seed(1), use_cache=uc))  # fmt: skip
            runs[name].append({"wall_s": round(wall, 3), "other_cpu_fraction": round(other, 3)})
            tokens[name] = roll.completion_ids
    lengths = [len(p) for p in prompts]
    out = {"batch": batch, "new_tokens": new_tokens, "prompt_tokens": [min(lengths), max(lengths)],
           "same_tokens": tokens["cache"] == tokens["no_cache"], "runs": runs}  # fmt: skip
    for name, rs in runs.items():
        out[f"{name}_tokens_per_s"] = round(
            batch * new_tokens / statistics.median(r["wall_s"] for r in rs), 1
        )
    out["speedup"] = round(out["cache_tokens_per_s"] / out["no_cache_tokens_per_s"], 2)
    return out


def train(kind: str, out: Path, *argv) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    code = winnow(["train", kind, "--out", str(out), "--dtype", "fp32", "--no-progress", *map(str, argv)])
    if code != 0:
        raise SystemExit(f"winnow train {kind} failed ({code})")
    return time.perf_counter() - t0


def totals(metrics: Path, keys: tuple[str, ...]) -> dict:
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    rows = [r for r in rows if "timing/training_s" in r]
    out = {k.removeprefix("timing/"): round(sum(r[k] for r in rows), 2) for k in keys}
    out["steps"] = len(rows)
    out["mean_completion_length"] = round(statistics.mean(r["completions/mean_length"] for r in rows), 1)
    return out


def time_split(policy: Path, work: Path, rollouts: int, new_tokens: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    prompts = work / "arithmetic_prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions(16 * rollouts, 1)))
    train("reward", work / "rm", "--base", policy, "--data", PREFERENCES, "--max-steps", 2,
          "--micro-batch", 2, "--eval-every", 0)  # fmt: skip
    ppo_wall = train("ppo", work / "ppo", "--policy", policy, "--reward", work / "rm", "--prompts", prompts,
                     "--rollout-prompts", 16, "--batch-rows", 16, "--micro-batch", 8, "--ppo-epochs", 4,
                     "--max-new-tokens", new_tokens, "--max-steps", 4 * rollouts,
                     "--eval-every", 0)  # fmt: skip
    grpo_wall = train("grpo", work / "grpo", "--policy", policy, "--task", "arithmetic", "--batch-prompts", 2,
                      "--num-generations", 8, "--micro-batch", 2, "--max-new-tokens", new_tokens,
                      "--max-steps", rollouts, "--eval-every", 0)  # fmt: skip
    ppo = totals(
        work / "ppo" / "metrics.jsonl", ("timing/generation_s", "timing/scoring_s", "timing/training_s")
    )
    grpo = totals(work / "grpo" / "metrics.jsonl", ("timing/generation_s", "timing/training_s"))
    for res, wall in ((ppo, ppo_wall), (grpo, grpo_wall)):
        res["wall_s"] = round(wall, 1)
        parts = [res[k] for k in ("generation_s", "scoring_s", "training_s") if k in res]
        res["generation_share"] = round(res["generation_s"] / sum(parts), 3)
    return {"rollouts": rollouts, "completions_per_rollout": 16, "max_new_tokens": new_tokens,
            "ppo": {**ppo, "optimizer_steps_per_rollout": 4},
            "grpo": {**grpo, "optimizer_steps_per_rollout": 1}}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", type=Path, default=ROOT / "runs/english_lm_sft")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rollouts", type=int, default=3)
    ap.add_argument("--rl-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rl_speed"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/rl_speed.json")
    ap.add_argument(
        "--only", choices=["rollout", "split"], help="measure one part, keep the other from --out"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.policy)
    result = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    result.update(policy=str(args.policy), params=model.num_params(), config=model.config.to_dict(),
                  threads=args.threads)  # fmt: skip
    if args.only != "split":
        result["rollout"] = rollout_speed(args.policy, args.batch, args.new_tokens, args.repeats)
        result["rollout"]["machine"] = benchutil.machine_info(["torch"])
        print(json.dumps(result["rollout"], indent=1))
        benchutil.write_json(args.out, result)  # kept if the second part fails
    if args.only != "rollout":
        result["split"] = time_split(args.policy, args.work, args.rollouts, args.rl_new_tokens)
        result["split"]["machine"] = benchutil.machine_info(["torch"])
        print(json.dumps(result["split"], indent=1))
    benchutil.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
