"""Preference tuning, measured: reward-model accuracy with a confidence interval, DPO's implicit
rewards on training and held-back pairs over steps, and the KL to the reference for two β values.

    .venv/bin/python bench/preference_eval.py --base runs/speedrun/sft   # ~16 CPU-min (1 thread)

What it does (every training run is the real ``winnow train`` command, as a child process):

1. Splits ``preference_dev.jsonl.gz`` (2,303 Anthropic HH pairs) with ``--seed`` into ``--heldout``
   pairs that no model trains on and ``--train-pairs`` training pairs (files in ``--out``).
2. ``winnow train reward`` from the SFT model: ``val_accuracy`` on the held-back pairs at every
   ``--eval-every`` steps, with the trainer's 95 % Wilson interval.  Why Wilson and not ±1.96·SE:
   with a few hundred pairs and accuracy near 0.5–0.7 the normal interval is nearly the same, but
   Wilson stays inside [0, 1] and keeps its coverage for small n.  With 230 pairs the interval is
   ±~6 points: a tiny model's edge over chance must be larger than that to count.
3. ``winnow train dpo`` once per ``--betas`` value, same steps, learning rate, data order and seed,
   saving a checkpoint at every evaluation.  Held-back curves come from ``metrics.jsonl``
   (``val_rewards/*``, ``val_kl``); training-pair curves are computed here afterwards, by loading
   each saved checkpoint and running ``train.dpo.make_evaluate`` on the first ``--train-eval``
   training pairs (pairs the policy has been trained on), so both curves use one definition.
4. Writes ``--results`` (JSON: every curve, timings) and ``--plot`` (PNG, four panels).

``val_kl`` is the exact KL(π‖π_ref) over the whole vocabulary, averaged over the held-back replies'
token positions (teacher-forced), i.e. how far the policy's next-token distributions moved on
prompts it never trained on.  DPO's implicit reward is β·log(π/π_ref), so margins of two β values
are on different scales; accuracies and KL are comparable directly.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.speedrun import run_step, train_cmd  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402
from train.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from train.dpo import Reference, make_evaluate, reference_logps  # noqa: E402
from train.loop import make_autocast, pick_dtype  # noqa: E402
from train.model import GPT  # noqa: E402
from train.parallel import DistInfo  # noqa: E402
from train.preference import read_pairs, render_pairs  # noqa: E402

DATA = (ROOT / ".." / "shared" / "data").resolve()


def split(data: Path, out: Path, heldout: int, train_pairs: int, seed: int) -> tuple[Path, Path]:
    """Shuffle the rows with ``seed``; the first ``heldout`` are held back, the next ``train_pairs``
    train.  Rows are copied byte for byte (the trainers parse and check them)."""
    opener = gzip.open if data.suffix == ".gz" else open
    with opener(data, "rt", encoding="utf-8") as f:
        rows = [line for line in f if line.strip()]
    if heldout + train_pairs > len(rows):
        raise SystemExit(f"{data}: {len(rows)} rows, fewer than --heldout + --train-pairs")
    random.Random(seed).shuffle(rows)
    paths = out / "heldout.jsonl", out / "train.jsonl"
    for path, part in zip(paths, (rows[:heldout], rows[heldout : heldout + train_pairs]), strict=True):
        path.write_text("".join(r if r.endswith("\n") else r + "\n" for r in part))
    return paths


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@torch.no_grad()
def train_pair_curves(base: Path, run_dir: Path, train_file: Path, n: int, beta: float, micro: int) -> list:
    """``rewards/*`` and per-token KL on the first ``n`` training pairs at each saved checkpoint."""
    device = torch.device("cpu")
    ref_ckpt = load_checkpoint(base)
    ref = GPT(ref_ckpt["config"])
    ref.load_state_dict(ref_ckpt["state_dict"])
    ref.eval().requires_grad_(False)
    tok = Tokenizer.from_dir(ref_ckpt["dir"] / "tokenizer")
    pairs, _ = read_pairs(train_file)
    ex = render_pairs(tok, pairs[:n], ref_ckpt["config"].block_size + 1)
    autocast = make_autocast(device, pick_dtype("auto", device))
    info = DistInfo(0, 0, 1, device)
    table = reference_logps(ref, ex, micro_batch=micro, pad_id=tok.pad_id, device=device, autocast=autocast)
    evaluate = make_evaluate(
        ex,
        Reference(table=table),
        ref,
        micro_batch=micro,
        pad_id=tok.pad_id,
        beta=beta,
        device=device,
        autocast=autocast,
        info=info,
    )
    curve = [{"step": 0, **{k.removeprefix("val_"): v for k, v in evaluate(ref).items()}}]  # all 0: π = π_ref
    for step_dir in list_checkpoints(run_dir / "checkpoints"):
        ck = load_checkpoint(step_dir)
        model = GPT(ck["config"])
        model.load_state_dict(ck["state_dict"])
        row = evaluate(model)
        curve.append({"step": ck["meta"]["step"], **{k.removeprefix("val_"): v for k, v in row.items()}})
    return curve


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    rm = [r for r in results["reward"]["curve"] if "val_accuracy" in r]
    steps = [r["step"] for r in rm]
    a = ax[0][0]
    a.plot(steps, [r["val_accuracy"] for r in rm], "o-", label="held-back pairs")
    a.fill_between(
        steps,
        [r["val_accuracy_low"] for r in rm],
        [r["val_accuracy_high"] for r in rm],
        alpha=0.25,
        label="95 % Wilson interval",
    )
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.set(
        title="Reward model: pairwise accuracy on held-back pairs",
        xlabel="step",
        ylabel="accuracy",
    )
    a.legend()
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    panels = ((ax[0][1], "rewards/accuracies", False), (ax[1][0], "rewards/margins", True))
    for i, (beta, d) in enumerate(results["dpo"].items()):
        c, b = colors[i % len(colors)], float(beta)
        val = [r for r in d["metrics"] if "val_rewards/accuracies" in r]
        tr = d["train_pairs"]
        for a, key, per_beta in panels:  # margins ÷ β: the log-ratio margin, one scale for every β
            div = b if per_beta else 1.0
            a.plot(
                [r["step"] for r in tr],
                [r[key] / div for r in tr],
                "o-",
                color=c,
                label=f"β {beta}, training",
            )
            a.plot(
                [r["step"] for r in val],
                [r["val_" + key] / div for r in val],
                "s--",
                color=c,
                label=f"β {beta}, held back",
            )
        ax[1][1].plot([r["step"] for r in val], [r["val_kl"] for r in val], "s--", color=c, label=f"β {beta}")
    ax[0][1].set(title="DPO rewards/accuracies", xlabel="step", ylabel="share of pairs with r_c > r_r")
    ax[1][0].set(title="DPO rewards/margins ÷ β (log-ratio margin)", xlabel="step", ylabel="nats")
    ax[0][1].axhline(0.5, color="grey", lw=0.8, ls=":")
    ax[1][1].set(
        title="DPO: KL(policy ‖ reference) per token, held-back replies", xlabel="step", ylabel="nats / token"
    )
    for a in (ax[0][1], ax[1][0], ax[1][1]):
        a.legend(fontsize=8)
    fig.suptitle(f"Preference tuning from {results['base']} (CPU, seed {results['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="runs/speedrun/sft", help="SFT checkpoint (the reference of DPO)")
    ap.add_argument("--data", default=str(DATA / "preference_dev.jsonl.gz"))
    ap.add_argument("--out", default="bench/out/preference_eval", help="work folder (runs, split files)")
    ap.add_argument("--heldout", type=int, default=230, help="pairs held back from every model")
    ap.add_argument("--train-pairs", type=int, default=800)
    ap.add_argument("--rm-steps", type=int, default=100)
    ap.add_argument("--dpo-steps", type=int, default=100)
    ap.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.5])
    ap.add_argument("--lr", type=float, default=None, help="DPO and RM peak lr (default: the trainers')")
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--train-eval", type=int, default=150, help="training pairs re-evaluated per checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default="bench/results/preference_eval.json")
    ap.add_argument("--plot", default="docs/preference_eval.png")
    args = ap.parse_args(argv)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    base = (ROOT / args.base).resolve()
    heldout_file, train_file = split(Path(args.data), out, args.heldout, args.train_pairs, args.seed)
    common = [
        "--base",
        str(base),
        "--data",
        str(train_file),
        "--val",
        str(heldout_file),
        "--seed",
        str(args.seed),
        "--micro-batch",
        str(args.micro_batch),
        "--eval-every",
        str(args.eval_every),
    ]
    common += ["--lr", str(args.lr)] if args.lr else []
    t0 = time.perf_counter()
    timings = {}
    timings["reward"] = run_step(
        out, "reward", train_cmd("reward", out / "reward", [*common, "--max-steps", str(args.rm_steps)])
    )
    results: dict = {
        "base": args.base,
        "seed": args.seed,
        "heldout": args.heldout,
        "train_pairs": args.train_pairs,
        "reward": {"curve": read_metrics(out / "reward" / "metrics.jsonl")},
        "dpo": {},
    }
    for beta in args.betas:
        name = f"dpo_beta{beta:g}"
        timings[name] = run_step(
            out,
            name,
            train_cmd(
                "dpo",
                out / name,
                [
                    *common,
                    "--beta",
                    str(beta),
                    "--max-steps",
                    str(args.dpo_steps),
                    "--save-every",
                    str(args.eval_every),
                    "--keep-checkpoints",
                    "0",
                ],
            ),
        )
        t = time.perf_counter()
        curve = train_pair_curves(base, out / name, train_file, args.train_eval, beta, args.micro_batch)
        results["dpo"][f"{beta:g}"] = {
            "metrics": read_metrics(out / name / "metrics.jsonl"),
            "train_pairs": curve,
            "train_eval_s": round(time.perf_counter() - t, 1),
        }
    results["timings"] = timings
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(ROOT / args.results).write_text(json.dumps(results, indent=1) + "\n")
    plot(results, ROOT / args.plot)
    summary(results)
    return 0


def summary(results: dict) -> None:
    rm = [r for r in results["reward"]["curve"] if "val_accuracy" in r][-1]
    print(
        f"reward model, step {rm['step']}: val_accuracy {rm['val_accuracy']:.3f} "
        f"[{rm['val_accuracy_low']:.3f}, {rm['val_accuracy_high']:.3f}] on {results['heldout']} pairs"
    )
    for beta, d in results["dpo"].items():
        val = [r for r in d["metrics"] if "val_rewards/accuracies" in r]
        by_step = {t["step"]: t for t in d["train_pairs"]}
        for r in val:
            t = by_step.get(r["step"])
            tr = (
                f"train acc {t['rewards/accuracies']:.3f} margin {t['rewards/margins']:+.4f} kl {t['kl']:.4f}"
                if t
                else ""
            )
            print(
                f"dpo beta {beta} step {r['step']:4d}: held-back acc {r['val_rewards/accuracies']:.3f} "
                f"margin {r['val_rewards/margins']:+.4f} kl {r['val_kl']:.4f} | {tr}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
