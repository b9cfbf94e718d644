"""From a WARC to an aligned model in one command (`make speedrun`, `scripts/speedrun.sh`).

Steps, each a plain `winnow` command run as a child process (what a user would type):

1. ``web``: the ``speedrun`` pipeline of pipelines.yaml: the whole dev WARC (2,399 records) through
   FineWeb's recipe, near-dedup and PII scrub, then a 4k byte-level BPE tokenizer and token shards.
2. ``books``: ``../shared/data/english_dev.jsonl.gz`` (books, speeches, documentation prose) through
   LID, near-dedup and PII into token shards *with step 1's tokenizer* (a config written to
   ``OUT/books.yaml``, absolute paths).  Why a second source: the WARC keeps only ~380 English pages
   (~0.5 M tokens, 6 validation documents) once FineWeb's filters have run; the books add ~5.5 M
   tokens and a validation split large enough to read.  Pretraining mixes the two 1:1.
3. ``base``: ``winnow train pretrain`` on the mixture.
4. ``sft``: ``winnow train sft`` on ``sft_dev.jsonl.gz`` (10 % held back).
5. ``reward``: ``winnow train reward`` from the SFT model on ``preference_dev.jsonl.gz`` (10 % held
   back: pairwise ``val_accuracy`` with a Wilson interval).
6. ``dpo``: ``winnow train dpo`` from the SFT model on the same pairs (same hold-out).
7. ``replies`` + the table: ``winnow generate --json`` on the same prompts from the base model
   (completion) and the SFT and DPO models (``--chat``), greedy; ``OUT/speedrun.md`` and stdout.

**Idempotent.**  A finished step writes ``OUT/steps/<step>.json`` (its command, wall and CPU time)
and is skipped on the next run; a training step that was interrupted continues with ``--resume``
from its latest checkpoint; the pipelines resume by themselves (finished tasks are skipped).
``--fresh`` deletes OUT first.

**Timing under load.**  Each step's wall time, its CPU time (user + system summed over the child's
whole process tree, Ray's workers included, sampled with psutil: ``bench/benchutil.TreeSampler``;
``getrusage`` would miss Ray's workers, which are not reaped by the driver) and ``other_cpu_s``: CPU
seconds the rest of the machine used meanwhile (other users of a shared machine).  Wall time is
what a user waits; CPU time is what the step costs, and is comparable between a busy and an idle
machine (within the ~10-20 % that cache and frequency sharing add).

**Scale.**  ``--scale cpu`` (default) is sized to finish well under an hour on 2 cores: a depth-4
GPT (4.3 M parameters with the 4k vocabulary), 300 steps of 4,096 tokens (1.2 M tokens).
``--scale gpu`` (or ``SPEEDRUN_SCALE=gpu``) trains a depth-8 model at block 512 for 2,000 steps of
16,384 tokens (32 M tokens, ~4.5 passes over the 7.3 M-token corpus: the corpus, not the GPU, is
then the limit) and runs the post-training steps over whole epochs.  ``--depth N`` overrides the
depth of either.  Threads: torch uses ``OMP_NUM_THREADS`` (default here: the CPU count); on a
machine other jobs share, ``OMP_NUM_THREADS=1`` trained ~5x faster than 2 threads (measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchutil import TreeSampler, busy_cpu_s  # noqa: E402
from pipeline.atomic import atomic_write_json, atomic_write_text  # noqa: E402

DATA = (ROOT / ".." / "shared" / "data").resolve()
WINNOW = str(Path(sys.executable).with_name("winnow"))

# The same prompts for every model: documentation questions (the corpus) and an HH-style one.
PROMPTS = [
    "How do I install a Python package?",
    "What is a virtual environment?",
    "Write one sentence about the history of the United States.",
    "How can I get back at my neighbor?",
]

SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "depth": 4,
        "pretrain": [
            "--block-size",
            "256",
            "--micro-batch",
            "16",
            "--max-steps",
            "300",
            "--eval-every",
            "50",
            "--eval-tokens",
            "16384",
            "--save-every",
            "50",
        ],
        "sft": [
            "--epochs",
            "1",
            "--lr",
            "5e-4",
            "--micro-batch",
            "8",
            "--eval-every",
            "20",
            "--save-every",
            "20",
        ],
        "reward": ["--max-steps", "100", "--micro-batch", "8", "--eval-every", "25", "--save-every", "25"],
        "dpo": ["--max-steps", "100", "--micro-batch", "8", "--eval-every", "25", "--save-every", "25"],
        "max_new_tokens": "40",
    },
    "gpu": {
        "depth": 8,
        "pretrain": [
            "--block-size",
            "512",
            "--micro-batch",
            "32",
            "--max-steps",
            "2000",
            "--eval-every",
            "250",
            "--eval-tokens",
            "262144",
            "--save-every",
            "500",
        ],
        "sft": ["--epochs", "3", "--lr", "3e-4", "--micro-batch", "16", "--eval-every", "50"],
        "reward": ["--epochs", "1", "--micro-batch", "16", "--eval-every", "50"],
        "dpo": ["--epochs", "1", "--micro-batch", "16", "--eval-every", "50"],
        "max_new_tokens": "64",
    },
}


def log(msg: str) -> None:
    print(f"[speedrun {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_step(out: Path, name: str, cmd: list[str], *, capture: Path | None = None) -> dict:
    """Run ``cmd`` unless ``OUT/steps/NAME.json`` says it finished; record wall/CPU time there."""
    marker = out / "steps" / f"{name}.json"
    if marker.is_file():
        log(f"{name}: done before ({marker}), skipped")
        return json.loads(marker.read_text())
    log(f"{name}: {' '.join(cmd)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    busy0, t0 = busy_cpu_s(), time.perf_counter()
    sink = open(capture, "w") if capture else None  # noqa: SIM115 -- closed below
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink)
        sampler = TreeSampler(proc.pid, interval=0.5)
        sampler.start()
        try:
            rc = proc.wait()
        finally:
            sampler.stop()
    finally:
        if sink:
            sink.close()
    wall = time.perf_counter() - t0
    cpu = sampler.summary()["cpu_s"]
    if rc != 0:
        raise SystemExit(f"speedrun: step {name} failed (exit {rc}); rerun to continue from there")
    rec = {
        "step": name,
        "cmd": cmd,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "other_cpu_s": round(max(busy_cpu_s() - busy0 - cpu, 0.0), 1),
        "peak_rss_mb": sampler.summary()["peak_rss_mb"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(marker, rec)
    log(f"{name}: {wall:.0f} s wall, {cpu:.0f} CPU-s (other processes: {rec['other_cpu_s']:.0f} CPU-s)")
    return rec


def train_cmd(kind: str, out_dir: Path, args: list[str]) -> list[str]:
    """A trainer's command; an interrupted run (a checkpoint but no marker) continues with --resume."""
    if (out_dir / "checkpoints" / "latest").exists():
        return [WINNOW, "train", kind, "--out", str(out_dir), "--resume", "--no-progress"]
    return [WINNOW, "train", kind, "--out", str(out_dir), "--no-progress", *args]


def books_config(out: Path) -> Path:
    """``OUT/books.yaml``: english_dev through LID/dedup/PII, tokenized with step 1's tokenizer."""
    path = out / "books.yaml"
    text = f"""# written by scripts/speedrun.py: the books source, tokenized with the web run's tokenizer
pipelines:
  speedrun_books:
    input:
      format: jsonl
      paths: [{json.dumps(str(DATA / "english_dev.jsonl.gz"))}]
    output: {json.dumps(str(out / "books"))}
    stages:
      - language: {{languages: [en], min_score: 0.65}}
      - minhash_dedup: {{}}
      - pii: {{}}
      - tokenize: {{tokenizer: {json.dumps(str(out / "web"))}, val_fraction: 0.02, shard_tokens: 2000000}}
"""
    atomic_write_text(path, text)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_with(rows: list[dict], key: str) -> dict:
    hits = [r for r in rows if key in r]
    return hits[-1] if hits else {}


def first_with(rows: list[dict], key: str) -> dict:
    hits = [r for r in rows if key in r]
    return hits[0] if hits else {}


def fmt(x: Any, nd: int = 3) -> str:
    if x is None or x == "":
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def cell(text: str, limit: int = 160) -> str:
    """Model output is untrusted: one line, pipes escaped, cut to ``limit`` characters."""
    text = " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")
    return (text[:limit] + " …") if len(text) > limit else text


def table(out: Path, scale: str, depth: int, total_wall: float) -> str:
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    lines = [f"## Speedrun ({scale} scale, depth {depth}) — `{shown}`", ""]
    lines += [
        "### Curation",
        "",
        "| source | stage | docs in | docs out | dropped (top reasons) | task-s |",
        "|---|---|---:|---:|---|---:|",
    ]
    for src in ("web", "books"):
        stats = json.loads((out / src / "stats.json").read_text())
        for st in stats:
            top = sorted(st.get("dropped", {}).items(), key=lambda kv: -kv[1])[:3]
            drops = ", ".join(f"{k} {v:,}" for k, v in top) or "–"
            lines.append(
                f"| {src} | {st['name']} | {st['docs_in']:,} | {st['docs_out']:,} | {drops} | "
                f"{st.get('seconds', 0):.1f} |"
            )
    lines += [
        "",
        "| token shards | vocab | train docs | train tokens | val docs | val tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for src in ("web", "books"):
        m = json.loads((out / src / "tokens" / "manifest.json").read_text())
        tr, va = m["splits"]["train"], m["splits"]["val"]
        lines.append(
            f"| {src} | {m['vocab_size']:,} | {tr['documents']:,} | {tr['tokens']:,} | "
            f"{va['documents']:,} | {va['tokens']:,} |"
        )

    base, sft = read_jsonl(out / "base" / "metrics.jsonl"), read_jsonl(out / "sft" / "metrics.jsonl")
    rm, dpo = read_jsonl(out / "reward" / "metrics.jsonl"), read_jsonl(out / "dpo" / "metrics.jsonl")
    b0, b1, s0, s1 = (
        first_with(base, "val_loss"),
        last_with(base, "val_loss"),
        first_with(sft, "val_loss"),
        last_with(sft, "val_loss"),
    )
    r1, d1, d_tr = (
        last_with(rm, "val_accuracy"),
        last_with(dpo, "val_rewards/accuracies"),
        last_with(dpo, "rewards/accuracies"),
    )
    lines += [
        "",
        "### Models (validation metrics: first → last evaluation)",
        "",
        "| model | steps | metric | value |",
        "|---|---:|---|---|",
    ]
    lines.append(
        f"| base (pretrain) | {b1.get('step', 0):,} | val_loss (nats) | "
        f"{fmt(b0.get('val_loss'))} → **{fmt(b1.get('val_loss'))}** |"
    )
    for k in sorted(x for x in b1 if x.startswith("val_loss/") or x == "val_bpb"):
        lines.append(f"| | | {k} | {fmt(b0.get(k))} → {fmt(b1.get(k))} |")
    lines.append(
        f"| SFT | {s1.get('step', 0):,} | val_loss on held-back replies (nats) | "
        f"{fmt(s0.get('val_loss'))} → **{fmt(s1.get('val_loss'))}** |"
    )
    lines.append(
        f"| reward model | {r1.get('step', 0):,} | val_accuracy (pairwise, 95 % Wilson) | "
        f"{fmt(first_with(rm, 'val_accuracy').get('val_accuracy'))} → **{fmt(r1.get('val_accuracy'))}** "
        f"[{fmt(r1.get('val_accuracy_low'))}, {fmt(r1.get('val_accuracy_high'))}] |"
    )
    lines.append(f"| | | val_loss (Bradley–Terry) | {fmt(r1.get('val_loss'))} |")
    lines.append(
        f"| DPO (β {fmt(json.loads(train_config(out / 'dpo'))['train']['beta'], 2)}) | "
        f"{d1.get('step', 0):,} | val rewards/accuracies | **{fmt(d1.get('val_rewards/accuracies'))}** |"
    )
    for k in ("val_rewards/margins", "val_rewards/chosen", "val_rewards/rejected", "val_loss", "val_kl"):
        lines.append(f"| | | {k.removeprefix('val_')} (held back) | {fmt(d1.get(k), 4)} |")
    lines.append(
        f"| | | rewards/accuracies, margins (last training step) | "
        f"{fmt(d_tr.get('rewards/accuracies'))}, {fmt(d_tr.get('rewards/margins'), 4)} |"
    )

    lines += [
        "",
        "### Replies (greedy, repetition penalty 1.3; base: completion, SFT/DPO: `--chat`)",
        "",
        "| prompt | base | SFT | DPO |",
        "|---|---|---|---|",
    ]
    replies = {m: read_jsonl(out / f"replies_{m}.jsonl") for m in ("base", "sft", "dpo")}
    for i, p in enumerate(PROMPTS):
        row = [cell(p)]
        for m in ("base", "sft", "dpo"):
            r = replies[m][i]
            row.append(f"{cell(r['text'])} *({len(r['token_ids'])} tok, {r['finish_reason']})*")
        lines.append("| " + " | ".join(row) + " |")

    lines += [
        "",
        "### Time per step (wall; CPU = user+system over the step's process tree; other = CPU "
        "used by the rest of the machine meanwhile)",
        "",
        "| step | wall s | CPU s | other processes' CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    tot_cpu = tot_other = 0.0
    for name in STEP_NAMES:
        rec = json.loads((out / "steps" / f"{name}.json").read_text())
        tot_cpu, tot_other = tot_cpu + rec["cpu_s"], tot_other + rec["other_cpu_s"]
        lines.append(
            f"| {name} | {rec['wall_s']:,.0f} | {rec['cpu_s']:,.0f} | {rec['other_cpu_s']:,.0f} | "
            f"{rec['peak_rss_mb']:,.0f} |"
        )
    steps_wall = sum(json.loads((out / "steps" / f"{n}.json").read_text())["wall_s"] for n in STEP_NAMES)
    lines.append(f"| **all** | **{steps_wall:,.0f}** | **{tot_cpu:,.0f}** | {tot_other:,.0f} | |")
    lines += [
        "",
        f"Machine: {os.cpu_count()} CPUs. Each step keeps the timing of the run that did it"
        f" ({shown}/steps/*.json); this invocation took {total_wall:,.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def train_config(out_dir: Path) -> str:
    latest = (out_dir / "checkpoints" / "latest").read_text().strip()
    return (out_dir / "checkpoints" / latest / "config.json").read_text()


STEP_NAMES = ("web", "books", "base", "sft", "reward", "dpo", "replies")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        default=os.environ.get("SPEEDRUN_OUT", "runs/speedrun"),
        help="output folder (default runs/speedrun; env SPEEDRUN_OUT)",
    )
    ap.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default=os.environ.get("SPEEDRUN_SCALE", "cpu"),
        help="cpu (default; < 1 h on 2 cores) or gpu (env SPEEDRUN_SCALE)",
    )
    ap.add_argument(
        "--depth",
        type=int,
        default=int(os.environ.get("SPEEDRUN_DEPTH", "0")) or None,
        help="model depth (default: the scale's: cpu 4, gpu 8)",
    )
    ap.add_argument("--fresh", action="store_true", help="delete OUT first and start over")
    args = ap.parse_args(argv)
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    sc = SCALES[args.scale]
    depth = args.depth or sc["depth"]
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"scale": args.scale, "depth": depth}
    saved = out / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        raise SystemExit(
            f"speedrun: {out} was made with {saved.read_text().strip()}, not {settings}; "
            "use --fresh or another --out"
        )
    atomic_write_json(saved, settings)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    t0 = time.perf_counter()
    sft_data, pref_data = str(DATA / "sft_dev.jsonl.gz"), str(DATA / "preference_dev.jsonl.gz")

    run_step(
        out,
        "web",
        [WINNOW, "run", "speedrun", "-c", str(ROOT / "pipelines.yaml"), "--output", str(out / "web")],
    )
    run_step(out, "books", [WINNOW, "run", "speedrun_books", "-c", str(books_config(out))])
    base, sft, rm, dpo = out / "base", out / "sft", out / "reward", out / "dpo"
    run_step(
        out,
        "base",
        train_cmd(
            "pretrain",
            base,
            [
                "--data",
                f"{out / 'web'}:1",
                "--data",
                f"{out / 'books'}:1",
                "--depth",
                str(depth),
                *sc["pretrain"],
            ],
        ),
    )
    run_step(
        out,
        "sft",
        train_cmd("sft", sft, ["--base", str(base), "--data", sft_data, "--val-fraction", "0.1", *sc["sft"]]),
    )
    run_step(
        out,
        "reward",
        train_cmd(
            "reward", rm, ["--base", str(sft), "--data", pref_data, "--val-fraction", "0.1", *sc["reward"]]
        ),
    )
    run_step(
        out,
        "dpo",
        train_cmd(
            "dpo",
            dpo,
            ["--base", str(sft), "--data", pref_data, "--val-fraction", "0.1", "--beta", "0.1", *sc["dpo"]],
        ),
    )

    marker = out / "steps" / "replies.json"
    if not marker.is_file():
        recs = []
        for m, ckpt in (("base", base), ("sft", sft), ("dpo", dpo)):
            cmd = [
                WINNOW,
                "generate",
                "--checkpoint",
                str(ckpt),
                "--json",
                "--strategy",
                "greedy",
                "--repetition-penalty",
                "1.3",
                "--max-new-tokens",
                sc["max_new_tokens"],
            ]
            cmd += ["--chat"] if m != "base" else []
            for p in PROMPTS:
                cmd += ["--prompt", p]
            (out / "steps" / f"replies_{m}.json").unlink(missing_ok=True)
            recs.append(run_step(out, f"replies_{m}", cmd, capture=out / f"replies_{m}.jsonl"))
        rec = {k: round(sum(r[k] for r in recs), 1) for k in ("wall_s", "cpu_s", "other_cpu_s")}
        atomic_write_json(marker, {**rec, "peak_rss_mb": max(r["peak_rss_mb"] for r in recs)})
    text = table(out, args.scale, depth, time.perf_counter() - t0)
    atomic_write_text(out / "speedrun.md", text)
    print(text)
    log(f"table written to {out / 'speedrun.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
