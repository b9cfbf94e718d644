"""Does PPO raise the reward while the KL to the reference stays bounded?  A toy RLHF run end to end.

The task is one a tiny model can learn on CPU in minutes, with a ground truth to check the reward
model against: replies are lists of words, and the "human preference" is for replies that contain
the word ``bright``.

1. A byte-level-BPE tokenizer and a tiny GPT pretrained on random sentences over a 24-word vocabulary
   (``winnow train pretrain`` on a text run).
2. ``winnow train sft`` on ``describe: w1 w2 w3`` → 3-6 random words: the SFT policy writes word
   lists, ``bright`` in about 1 of 5 replies, and closes its turn with ``<|end|>``.
3. ``winnow train reward`` on pairs (chosen: a list containing ``bright``; rejected: the same list with
   ``bright`` replaced by another word), with ``--normalize`` on SFT-like rows, so scores have mean 0
   and std 1 on the policy's distribution (the scale β assumes).
4. ``winnow train ppo`` from the SFT model with that RM on held-in prompts, validation on 10 % held out.
5. Every saved checkpoint (SFT = step 0) samples replies to the held-back prompts with one fixed seed;
   reported: the share containing ``bright`` (the ground truth the RM was taught), the mean RM score,
   and the summed k1 KL to the SFT model (replies sampled from the policy, so its mean estimates
   KL(π‖π_sft)).

Writes ``--json`` (default bench/results/ppo_behaviour.json) and ``--plot`` (docs/ppo_behaviour.png).
About 3-5 minutes on one CPU core of this machine (``--threads``).

    .venv/bin/python bench/ppo_behaviour.py --work /tmp/ppo_behaviour
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cli import main as winnow  # noqa: E402

WORDS = [
    "river",
    "stone",
    "light",
    "wind",
    "quiet",
    "morning",
    "field",
    "house",
    "window",
    "city",
    "road",
    "green",
    "old",
    "small",
    "cold",
    "warm",
    "long",
    "short",
    "slow",
    "soft",
    "open",
    "dark",
    "bright",
]
TARGET = "bright"
MAX_NEW = 12
PPO_FLAGS = ["--val-fraction", 0.1, "--eval-every", 20, "--save-every", 20, "--keep-checkpoints", 0,
             "--rollout-prompts", 32, "--batch-rows", 16, "--micro-batch", 16, "--ppo-epochs", 2,
             "--max-new-tokens", MAX_NEW, "--lr", 1e-3, "--missing-eot-penalty", 1.0]  # fmt: skip
STEPS_PER_ROLLOUT = 2 * 32 // 16  # ppo epochs × rollout prompts / batch rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def words(rng: random.Random, lo: int, hi: int, exclude: str | None = None) -> list[str]:
    pool = [w for w in WORDS if w != exclude]
    return [rng.choice(pool) for _ in range(rng.randint(lo, hi))]


def prompt(rng: random.Random) -> str:
    return "describe: " + " ".join(words(rng, 2, 4))


def build_data(work: Path, seed: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenizer.train import train_tokenizer

    rng = random.Random(seed)
    texts = [" ".join(words(rng, 8, 30)).capitalize() + "." for _ in range(2000)]
    run = work / "text_run"
    (run / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts}),
                   run / "data" / "part-00000.parquet")  # fmt: skip
    tok = train_tokenizer(texts + [prompt(rng) for _ in range(200)], 300, work / "tokenizer")
    sft = [{"prompt": prompt(rng), "response": " ".join(words(rng, 3, 6))} for _ in range(1500)]
    pairs = []
    for _ in range(1500):
        reply = words(rng, 3, 6, exclude=TARGET)
        chosen = list(reply)
        chosen[rng.randrange(len(reply))] = TARGET
        pairs.append({"prompt": prompt(rng), "chosen": " ".join(chosen), "rejected": " ".join(reply)})
    return {
        "run": run,
        "tokenizer": tok,
        "sft": write_jsonl(work / "sft.jsonl", sft),
        "pairs": write_jsonl(work / "pairs.jsonl", pairs),
        "calib": write_jsonl(work / "calib.jsonl", sft[:300]),
        "prompts": write_jsonl(work / "prompts.jsonl", [{"prompt": prompt(rng)} for _ in range(400)]),
    }


def train(kind: str, out: Path, *argv) -> float:
    t0 = time.perf_counter()
    code = winnow(["train", kind, "--out", str(out), "--dtype", "fp32", "--no-progress", *map(str, argv)])
    if code != 0:
        raise SystemExit(f"winnow train {kind} failed ({code})")
    return time.perf_counter() - t0


@torch.no_grad()
def probe(ckpt: Path, ref, rm, prompts: list[list[int]], tokenizer, max_new: int, seed: int) -> dict:
    """Share of sampled replies containing TARGET, mean RM score, mean summed k1 KL to ``ref``."""
    from train.checkpoint import load_model
    from train.losses import kl_estimates
    from train.rollout import sample, token_logprobs

    model, _ = load_model(ckpt)
    roll = sample(model, tokenizer, prompts, max_new_tokens=max_new,
                  generator=torch.Generator().manual_seed(seed))  # fmt: skip
    batch = roll.pack(tokenizer.pad_id)
    k1 = kl_estimates(token_logprobs(model, batch), token_logprobs(ref, batch))["k1"]
    scores = rm.score(batch.input_ids, batch.lengths - 1)
    texts = [tokenizer.decode(c[:-1] if r == "eot" else c)
             for c, r in zip(roll.completion_ids, roll.finish_reasons, strict=True)]  # fmt: skip
    return {
        "target_share": sum(TARGET in t.split() for t in texts) / len(texts),
        "rm_score": scores.mean().item(),
        "kl": (k1 * batch.completion_mask).sum(1).mean().item(),
        "eot_share": sum(r == "eot" for r in roll.finish_reasons) / len(texts),
        "examples": texts[:3],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ppo_behaviour"))
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/ppo_behaviour.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs/ppo_behaviour.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ppo-steps", type=int, default=160)
    ap.add_argument("--kl-coefs", type=float, nargs="+", default=[0.05, 0.2], help="one PPO run per β")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work
    if work.exists() and any(work.iterdir()) and not (work / "prompts.jsonl").is_file():
        raise SystemExit(f"--work {work} is neither empty nor an earlier run of this script: not deleting it")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    d = build_data(work, args.seed)
    model = ["--depth", 2, "--n-embd", 64, "--block-size", 64]
    times = {}
    times["pretrain"] = train(
        "pretrain",
        work / "base",
        "--data",
        d["run"],
        "--tokenizer",
        d["tokenizer"],
        *model,
        "--micro-batch",
        16,
        "--max-steps",
        150,
        "--eval-every",
        0,
        "--lr",
        3e-3,
    )
    times["sft"] = train(
        "sft",
        work / "sft",
        "--base",
        work / "base",
        "--data",
        d["sft"],
        "--max-steps",
        150,
        "--micro-batch",
        16,
        "--lr",
        2e-3,
        "--eval-every",
        0,
    )
    times["reward"] = train(
        "reward",
        work / "rm",
        "--base",
        work / "sft",
        "--data",
        d["pairs"],
        "--val-fraction",
        0.1,
        "--max-steps",
        120,
        "--micro-batch",
        16,
        "--lr",
        2e-3,
        "--eval-every",
        40,
        "--normalize",
        d["calib"],
    )
    rm_rows = [json.loads(x) for x in (work / "rm" / "metrics.jsonl").read_text().splitlines()]
    rm_val = [r for r in rm_rows if "val_accuracy" in r][-1]

    from train.checkpoint import list_checkpoints, load_checkpoint, load_model
    from train.reward import load_reward_model
    from train.rollout import read_prompts, render_prompt
    from train.sft import _split

    ref, tokenizer = load_model(work / "sft")
    rc = load_checkpoint(work / "rm")
    rm = load_reward_model(rc["config"], rc["state_dict"], strict_head=True).eval()
    held = _split(read_prompts(d["prompts"]), 0.1, args.seed)[1]  # the PPO runs' own hold-out
    prompts = [render_prompt(tokenizer, m) for m in held] * 4  # 160 replies per probe
    sft_probe = {"step": 0, **probe(work / "sft", ref, rm, prompts, tokenizer, MAX_NEW, args.seed + 7)}
    runs = []
    for beta in args.kl_coefs:
        out = work / f"ppo_beta{beta}"
        wall = train(
            "ppo",
            out,
            "--policy",
            work / "sft",
            "--reward",
            work / "rm",
            "--prompts",
            d["prompts"],
            *PPO_FLAGS,
            "--max-steps",
            args.ppo_steps,
            "--kl-coef",
            beta,
            "--seed",
            args.seed,
        )
        probes = [sft_probe]
        for c in list_checkpoints(out / "checkpoints"):
            step = json.loads((c / "config.json").read_text())["step"]
            probes.append({"step": step, **probe(c, ref, rm, prompts, tokenizer, MAX_NEW, args.seed + 7)})
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        keys = (
            "step",
            "rlhf_reward",
            "objective/scores",
            "objective/kl",
            "objective/kl_k3",
            "objective/entropy",
            "completions/eot_fraction",
            "timing/generation_s",
            "timing/scoring_s",
            "timing/training_s",
        )
        runs.append({
            "kl_coef": beta,
            "wall_s": wall,
            # a line per rollout (its statistics repeat on the rollout's other steps)
            "rollouts": [{k: r[k] for k in keys} for r in rows
                         if "rlhf_reward" in r and (r["step"] - 1) % STEPS_PER_ROLLOUT == 0],
            "val": [{k: r[k] for k in ("step", "val_reward", "val_kl")} for r in rows if "val_reward" in r],
            "probes": probes,
        })  # fmt: skip
        first, last = probes[0], probes[-1]
        print(f"β {beta}: '{TARGET}' share {first['target_share']:.2f} → {last['target_share']:.2f}; "
              f"RM score {first['rm_score']:.2f} → {last['rm_score']:.2f}; "
              f"KL {first['kl']:.2f} → {last['kl']:.2f} nats; {wall:.0f} s")  # fmt: skip
    result = {
        "task": f"replies that contain '{TARGET}' are preferred",
        "model": {"depth": 2, "n_embd": 64, "params": ref.num_params()},
        "reward_model": {k: rm_val[k] for k in ("val_accuracy", "val_accuracy_low", "val_accuracy_high")},
        "ppo_flags": [str(a) for a in PPO_FLAGS] + ["--max-steps", str(args.ppo_steps)],
        "runs": runs,
        "wall_s": times,
        "threads": args.threads,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.plot)
    print(f"RM val_accuracy {rm_val['val_accuracy']:.3f}; wall {times}")
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    for i, run in enumerate(result["runs"]):
        color, beta = f"C{i}", run["kl_coef"]
        ro, val, pr = run["rollouts"], run["val"], run["probes"]
        steps = [r["step"] for r in ro]
        axes[0].plot(steps, [r["rlhf_reward"] for r in ro], color=color, label=f"β {beta}: rlhf_reward")
        axes[0].plot([v["step"] for v in val], [v["val_reward"] for v in val], "o--", color=color,
                     label=f"β {beta}: val_reward")  # fmt: skip
        axes[1].plot(steps, [r["objective/kl"] for r in ro], color=color, label=f"β {beta}: objective/kl")
        axes[1].plot([v["step"] for v in val], [v["val_kl"] for v in val], "o--", color=color,
                     label=f"β {beta}: val_kl")  # fmt: skip
        axes[2].plot([p["step"] for p in pr], [p["target_share"] for p in pr], "o-", color=color,
                     label=f"β {beta}: contain '{TARGET}'")  # fmt: skip
        axes[2].plot([p["step"] for p in pr], [p["eot_share"] for p in pr], "s:", color=color,
                     label=f"β {beta}: end with <|end|>")  # fmt: skip
    titles = ("reward (RM normalised on SFT replies)", "KL to the SFT reference (k1, summed per reply)",
              "ground truth on held-back prompts")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (0 = the SFT model)")
        ax.legend(fontsize=7)
    axes[2].set_ylim(0, 1.05)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())
