"""GRPO on the built-in arithmetic task: does ``val_accuracy`` on held-out problems rise from the
SFT starting point?  Everything from scratch, on CPU, in ~5-6 minutes per run:

1. a byte-level tokenizer (with the chat tokens) and a randomly initialised GPT (2 layers × 128,
   0.46M parameters, context 64);
2. ``winnow train sft`` on ``--sft-rows`` prompt/response rows of the task's *training* problems
   (``train.tasks.sft_rows``: ``What is A + B?`` → ``S``); with ``--hedge h`` a share h of the
   replies add a second, wrong guess (``"S, or maybe S±10"``): imperfect demonstrations, which the
   verifier (it judges the *last* number) scores 0;
3. ``winnow train grpo --task arithmetic`` from that checkpoint (G completions per problem, reward 1
   for the right final number), ``val_accuracy`` (greedy) every ``--eval-every`` steps;
4. the same held-out problems answered greedily by the SFT and the GRPO checkpoints: accuracy with a
   95 % Wilson interval each, the problems that flipped either way and a two-sided sign test on them
   (the comparison is paired: same problems), and what changed: the share whose *first* number is
   right (the arithmetic itself) and the share that hedges;
5. rollout speed of the SFT model: tokens/s of ``train.rollout.sample`` with and without the KV cache
   (``--speed-new-tokens`` new tokens per prompt, no stop token), and GRPO's per-step time split
   between generation (sampling + scoring) and training (forward, backward, optimizer) from its
   metrics.jsonl.

Torch runs on one thread (``--threads``): on this 2-vCPU machine shared with other jobs, one thread
gave 8-10k SFT tokens/s steadily where two swung between 400 and 8,000.  Results: JSON and a plot
(val_accuracy and mean training reward against the GRPO step).

    .venv/bin/python bench/grpo_arithmetic.py             # hedged SFT → bench/results/grpo_arithmetic.*
    .venv/bin/python bench/grpo_arithmetic.py --hedge 0 \\
        --out bench/results/grpo_arithmetic-clean.json --plot bench/results/grpo_arithmetic-clean.png
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tinygpt import byte_tokenizer_dir  # noqa: E402

from pipeline.cli import main as winnow  # noqa: E402
from train.checkpoint import load_model, save_checkpoint  # noqa: E402
from train.grpo import completion_texts  # noqa: E402
from train.model import GPT, GPTConfig  # noqa: E402
from train.reward import wilson  # noqa: E402
from train.rollout import render_prompt, sample  # noqa: E402
from train.tasks import _INTEGER as INTEGER  # noqa: E402
from train.tasks import arithmetic_items, arithmetic_reward, sft_rows  # noqa: E402

RESULTS = REPO / "bench" / "results"


def run(*argv) -> None:
    code = winnow([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:3]))} failed with exit code {code}")


def greedy_answers(ckpt: Path, items, max_new: int, batch: int = 256) -> list[dict]:
    """Per problem, the greedy completion judged three ways: ``correct`` (its last number is the sum:
    the trainer's val_accuracy), ``first_correct`` (its first number is: the arithmetic alone) and
    ``hedged`` (it gives a second number)."""
    model, tok = load_model(ckpt)
    out = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        r = sample(model, tok, [render_prompt(tok, it.messages) for it in chunk], max_new_tokens=max_new,
                   temperature=0.0)  # fmt: skip
        for it, text in zip(chunk, completion_texts(tok, r), strict=True):
            numbers = INTEGER.findall(text)
            out.append({
                "correct": arithmetic_reward(it.prompt, text) >= 1,
                "first_correct": bool(numbers) and int(numbers[0]) == it.row["answer"],
                "hedged": len(numbers) > 1,
            })  # fmt: skip
    return out


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` vs ``losses`` discordant pairs (p = 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    return min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n)


def rollout_speed(ckpt: Path, items, new_tokens: int, batch: int, repeats: int = 3) -> dict:
    """Tokens/s of ``sample`` with and without the KV cache: the same prompts, seed and tokens."""
    model, tok = load_model(ckpt)
    prompts = [render_prompt(tok, it.messages) for it in items[:batch]]
    result, tokens = {}, {}
    for use_cache in [True, False] * repeats:  # interleaved: load changes hit both alike
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        r = sample(
            model,
            tok.pad_id,
            prompts,
            max_new_tokens=new_tokens,
            generator=g,
            stop_ids=[],
            use_cache=use_cache,
        )
        dt = time.perf_counter() - t0
        key = "cache" if use_cache else "no_cache"
        n = sum(len(c) for c in r.completion_ids)
        tokens[key] = r.completion_ids
        result.setdefault(key, []).append(n / dt)
    out = {k: {"tokens_per_s_median": sorted(v)[len(v) // 2], "runs": v} for k, v in result.items()}
    out["same_tokens"] = tokens["cache"] == tokens["no_cache"]
    out["speedup"] = out["cache"]["tokens_per_s_median"] / out["no_cache"]["tokens_per_s_median"]
    out.update(batch=len(prompts), new_tokens=new_tokens, prompt_tokens=sum(map(len, prompts)) / len(prompts))
    return out


def plot(rows: list[dict], before: float, after: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [(r["step"], r["val_accuracy"]) for r in rows if "val_accuracy" in r]
    rew = [(r["step"], r["reward"]) for r in rows if "reward" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(*zip(*rew, strict=True), color="#bbbbbb", lw=0.8, label="reward (training rollouts, T=1)")
    ax.plot(*zip(*val, strict=True), "o-", color="#1f77b4", label="val_accuracy (greedy, held-out)")
    ax.axhline(before, ls="--", color="#888888", lw=0.8)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("share correct")
    ax.set_title(f"{title}: {before:.1%} (SFT) → {after:.1%}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="scratch folder (default /tmp/winnow-grpo-arithmetic-hedge<H>)")
    ap.add_argument("--out", type=Path, default=RESULTS / "grpo_arithmetic.json")
    ap.add_argument("--plot", type=Path, default=RESULTS / "grpo_arithmetic.png")
    ap.add_argument("--digits", type=int, default=2)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--sft-rows", type=int, default=9000)
    ap.add_argument("--sft-steps", type=int, default=800)
    ap.add_argument("--sft-lr", type=float, default=3e-3)
    ap.add_argument("--grpo-steps", type=int, default=150)
    ap.add_argument("--grpo-lr", type=float, default=3e-4)
    ap.add_argument("--grpo-warmup", type=int, default=10)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument(
        "--hedge", type=float, default=0.5, help="share of SFT replies with a second, wrong guess (sft_rows)"
    )
    ap.add_argument("--speed-new-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.work = args.work or Path(f"/tmp/winnow-grpo-arithmetic-hedge{args.hedge:g}")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    w, t_all = args.work, time.perf_counter()
    common = ["--dtype", "fp32", "--no-progress", "--seed", args.seed]

    # 1. tokenizer and a random model
    tok = byte_tokenizer_dir(w / "tokenizer")
    torch.manual_seed(args.seed)
    config = GPTConfig.from_depth(2, 262, block_size=64, n_embd=128, n_head=4, mlp_hidden=384)
    model = GPT(config)
    save_checkpoint(
        w / "init", 0, model, tokenizer_dir=tok, meta={"kind": "pretrain", "tokens": 0}, trainer_state=None
    )

    # 2. SFT on training problems only
    rows = sft_rows(args.seed, args.digits, args.val_size, args.sft_rows, hedge=args.hedge)
    (w / "sft_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.perf_counter()
    sft_flags = ["--no-packing", "--micro-batch", 64, "--max-steps", args.sft_steps, "--lr", args.sft_lr]
    data = ["--data", w / "sft_rows.jsonl"]
    run(
        "train",
        "sft",
        "--base",
        w / "init",
        *data,
        "--out",
        w / "sft",
        *sft_flags,
        "--eval-every",
        0,
        *common,
    )
    sft_s = time.perf_counter() - t0

    # 3. GRPO from the SFT checkpoint
    t0 = time.perf_counter()
    micro = min(8, args.prompts_per_step)
    task = ["--task", "arithmetic", "--digits", args.digits, "--val-size", args.val_size]
    grpo_flags = [
        "--max-steps",
        args.grpo_steps,
        "--lr",
        args.grpo_lr,
        "--warmup",
        args.grpo_warmup,
        "--num-generations",
        args.num_generations,
        "--micro-batch",
        micro,
        "--batch-prompts",
        args.prompts_per_step,
        "--max-new-tokens",
        args.max_new_tokens,
        "--eval-every",
        args.eval_every,
        "--save-every",
        args.grpo_steps,
    ]
    run("train", "grpo", "--policy", w / "sft", *task, "--out", w / "grpo", *grpo_flags, *common)
    grpo_s = time.perf_counter() - t0
    metrics = [json.loads(x) for x in (w / "grpo" / "metrics.jsonl").read_text().splitlines()]

    # 4. paired before/after on the held-out problems
    _, val = arithmetic_items(args.seed, args.digits, args.val_size)
    judged = {name: greedy_answers(w / name, val, args.max_new_tokens) for name in ("sft", "grpo")}
    before = [x["correct"] for x in judged["sft"]]
    after = [x["correct"] for x in judged["grpo"]]
    n = len(val)
    won = sum(a and not b for a, b in zip(after, before, strict=True))
    lost = sum(b and not a for a, b in zip(after, before, strict=True))
    shares = {
        f"{name}_{key}": mean([float(x[key]) for x in answers])
        for name, answers in judged.items()
        for key in ("first_correct", "hedged")
    }

    # 5. speed
    speed = rollout_speed(
        w / "sft", val, args.speed_new_tokens, batch=args.prompts_per_step * args.num_generations
    )
    steps = [r for r in metrics if "timing/generation_s" in r]
    gen = sum(r["timing/generation_s"] for r in steps) / len(steps)
    train_s = sum(r["timing/training_s"] for r in steps) / len(steps)

    result = {
        "task": f"arithmetic, {args.digits}-digit operands, {n} held-out problems (disjoint from training)",
        "model": model.summary(64),
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out), "plot": str(args.plot)},
        "sft": {"steps": args.sft_steps, "rows": args.sft_rows, "wall_s": sft_s},
        "grpo": {
            "steps": args.grpo_steps,
            "wall_s": grpo_s,
            "val_accuracy_curve": [(r["step"], r["val_accuracy"]) for r in metrics if "val_accuracy" in r],
            "reward_first_10": mean([r["reward"] for r in steps[:10]]),
            "reward_last_10": mean([r["reward"] for r in steps[-10:]]),
            "frac_reward_zero_std_first_10": mean([r["frac_reward_zero_std"] for r in steps[:10]]),
            "frac_reward_zero_std_last_10": mean([r["frac_reward_zero_std"] for r in steps[-10:]]),
            "mean_length_last": steps[-1]["completions/mean_length"],
        },
        "val_accuracy": {
            "sft": sum(before) / n,
            "sft_ci95": wilson(sum(before), n),
            "grpo": sum(after) / n,
            "grpo_ci95": wilson(sum(after), n),
            "n": n,
            "flipped_to_right": won,
            "flipped_to_wrong": lost,
            "sign_test_p": sign_test(won, lost),
            **shares,
        },
        "speed": {
            "rollout": speed,
            "grpo_step_s": {
                "generation": gen,
                "training": train_s,
                "generation_share": gen / (gen + train_s),
            },
        },
        "total_wall_s": time.perf_counter() - t_all,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    kind = f"{args.hedge:.0%} hedged SFT replies" if args.hedge else "clean SFT replies"
    plot(
        metrics,
        sum(before) / n,
        sum(after) / n,
        args.plot,
        f"GRPO, held-out {args.digits}-digit sums ({kind})",
    )
    va = result["val_accuracy"]
    print(
        f"val_accuracy (greedy, {n} held-out problems): SFT {va['sft']:.1%} → GRPO {va['grpo']:.1%} "
        f"({won} flipped to right, {lost} to wrong, sign test p = {va['sign_test_p']:.2g}); first number "
        f"right {va['sft_first_correct']:.1%} → {va['grpo_first_correct']:.1%}, "
        f"hedged {va['sft_hedged']:.1%} → {va['grpo_hedged']:.1%}; "
        f"SFT {sft_s:.0f} s, GRPO {grpo_s:.0f} s; rollout {speed['speedup']:.1f}x faster with the KV cache; "
        f"GRPO step: generation {gen:.2f} s, training {train_s:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
