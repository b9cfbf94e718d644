"""Training throughput: winnow's GPT vs ``transformers``' ``LlamaForCausalLM``, same configuration.

Both models get the identical architecture (depth/width/heads/kv heads/SwiGLU width/vocab/tied
embeddings, from ``GPTConfig.from_depth``), the same batch of random tokens, the same optimizer
(``torch.optim.AdamW``, foreach) and the same dtype policy: fp32, or bf16 autocast with fp32 weights.
transformers runs with ``attn_implementation="sdpa"`` (its fastest attention on CPU; on CUDA
``flash_attention_2`` is used when the package is installed) and ``use_cache=False``.  A training step
is forward + loss + backward + ``optimizer.step()`` + ``zero_grad``; transformers computes its loss
on T-1 positions (it shifts labels), winnow on T (0.4% fewer at T=256).

Each configuration runs in a fresh child process (``benchutil.measure``: no import or allocator state
carries over, the process tree's peak RSS is sampled, and a run disturbed by other work on the machine
is measured again).  Rounds alternate the order of configurations so slow drifts of a shared machine
hit all; a configuration's tokens/s is the median, over its undisturbed rounds, of tokens per step /
median step time after warmup, and a ratio is the median over rounds of the same-round ratio.
On CUDA the child also reports ``torch.cuda.max_memory_allocated`` and MFU (H100 bf16 dense peak
989 TFLOPS; ``GPT.flops_per_token`` for both, as they compute the same thing).

    .venv/bin/python bench/train_speed.py                 # depth 6, vocab 8192, 8 x 256 tokens, fp32 + bf16
    .venv/bin/python bench/train_speed.py --compile       # adds winnow + torch.compile
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchutil

RESULTS = Path(__file__).resolve().parent / "results"
H100_BF16_PEAK = 989e12


def model_config(args):
    from train.model import GPTConfig

    overrides = {"n_kv_head": args.n_kv_head} if args.n_kv_head else {}
    return GPTConfig.from_depth(args.depth, args.vocab, args.seq_len, **overrides)


def llama_from(config, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    hc = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.mlp_hidden,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_kv_head,
        head_dim=config.head_dim,
        max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=config.tie_embeddings,
        use_cache=False,
    )
    attn = "sdpa"
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            attn = "flash_attention_2"
        except ImportError:
            pass
    return LlamaForCausalLM._from_config(hc, attn_implementation=attn), attn


def child(args) -> None:
    """One configuration: build, warm up, time ``--steps`` training steps, write the result JSON."""
    import torch

    from train.export import hf_state_dict
    from train.losses import token_cross_entropy
    from train.model import GPT

    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    torch.manual_seed(0)
    config = model_config(args)
    reference = GPT(config)
    attn = "sdpa"
    if args.impl == "winnow":
        model = reference
    else:
        model, attn = llama_from(config, device)
        # the same weights (export's renaming): same numerics, not just the same shapes
        model.load_state_dict(hf_state_dict(reference), strict=False)
    del reference
    model.to(device).train()
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, config.vocab_size, (args.batch, args.seq_len), generator=gen).to(device)
    bf16 = args.dtype == "bf16"

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if args.impl == "winnow":
                total, n = token_cross_entropy(step_model(x), x)
                loss = total / n
            else:
                loss = step_model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # syncs on CUDA

    rss_setup = psutil.Process().memory_info().rss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_s = time.perf_counter() - t0
    times, losses = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t)
    tokens = args.batch * args.seq_len
    med = statistics.median(times)
    gpt = GPT(config) if args.impl != "winnow" else model
    flops = gpt.flops_per_token(args.seq_len)
    result = {
        "impl": args.impl,
        "dtype": args.dtype,
        "compile": args.compile,
        "attention": attn,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "step_s": [round(t, 4) for t in times],
        "median_step_s": round(med, 4),
        "tokens_per_s": round(tokens / med, 1),
        "warmup_s": round(warmup_s, 2),
        "losses": [round(v, 4) for v in losses],
        "rss_after_setup_mib": round(rss_setup / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops,
    }
    result["train_peak_above_setup_mib"] = round(result["peak_rss_mib"] - result["rss_after_setup_mib"], 1)
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["mfu"] = round(flops * tokens / med / H100_BF16_PEAK, 4)
        result["gpu"] = torch.cuda.get_device_name()
    Path(args.result).write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--n-kv-head", type=int, default=0, help="GQA: kv heads (0: as many as query heads)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per configuration")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--compile", action="store_true", help="also time winnow under torch.compile")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, help="result JSON (default bench/results/train_speed[-DEVICE].json)")
    benchutil.add_measurement_args(ap)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="winnow", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    import torch

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    out = args.out or RESULTS / ("train_speed-cuda.json" if cuda else "train_speed.json")
    work = Path(__file__).resolve().parent / "out"  # git-ignored
    work.mkdir(parents=True, exist_ok=True)
    variants = [(impl, dtype, False) for dtype in args.dtypes.split(",") for impl in ("winnow", "hf")]
    if args.compile:
        variants += [("winnow", dtype, True) for dtype in args.dtypes.split(",")]
    shared = ["--depth", str(args.depth), "--vocab", str(args.vocab), "--seq-len", str(args.seq_len)]
    shared += ["--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    shared += ["--n-kv-head", str(args.n_kv_head), "--device", args.device]
    runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for impl, dtype, comp in variants if r % 2 == 0 else variants[::-1]:
            key = f"{impl}{'+compile' if comp else ''}/{dtype}"
            cmd = [
                __file__,
                "--child",
                "--impl",
                impl,
                "--dtype",
                dtype,
                "--result",
                str(work / "r.json"),
                *shared,
            ]
            cmd += ["--compile"] if comp else []
            res = benchutil.measure(
                cmd,
                work / "r.json",
                work / "train_speed.log",
                wait_quiet=args.wait_quiet,
                max_attempts=args.attempts,
            )
            print(
                f"round {r}: {key:22s} {res['tokens_per_s']:9.1f} tok/s"
                f"  peak RSS {res['peak_rss_mib']:.0f} MiB"
                f"  (other CPU {res['other_cpu_fraction']:.0%})",
                flush=True,
            )
            runs.setdefault(key, []).append(res)

    def quiet(rs: list[dict]) -> list[dict]:
        """Runs where other work used <= 10% of the machine (all runs when there is none)."""
        return [r for r in rs if r["other_cpu_fraction"] <= 0.1] or rs

    summary = {}
    for key, rs in runs.items():
        summary[key] = {
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in quiet(rs)), 1),
            "median_step_s": round(statistics.median(r["median_step_s"] for r in quiet(rs)), 4),
            "quiet_runs": len(quiet(rs)),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "train_peak_above_setup_mib": max(r["train_peak_above_setup_mib"] for r in rs),
            "attention": rs[0]["attention"],
        }
        for extra in ("cuda_max_allocated_mib", "mfu"):
            if extra in rs[0]:
                summary[key][extra] = statistics.median(r[extra] for r in rs)
    # the shared machine's speed drifts between rounds (~25% seen): a ratio is the median over rounds
    # of the two configurations' tokens/s measured in the same round
    ratios = {}
    for dtype in args.dtypes.split(","):
        for ours in (f"winnow/{dtype}", f"winnow+compile/{dtype}"):
            if ours in runs:
                pairs = zip(runs[ours], runs[f"hf/{dtype}"])
                paired = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs]
                ratios[f"{ours} vs hf/{dtype}"] = round(statistics.median(paired), 3)
    config = model_config(args)
    doc = {
        "benchmark": "train_speed",
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("child", "impl", "dtype", "result", "out")
        },
        "model": config.to_dict(),
        "tokens_per_step": args.batch * args.seq_len,
        "summary": summary,
        "ratios": ratios,
        "goal": "winnow / transformers >= 1.2",
        "machine": benchutil.machine_info(["torch", "transformers"]),
        "runs": runs,
    }
    benchutil.write_json(out, doc)
    print(json.dumps({"summary": summary, "ratios": ratios}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
