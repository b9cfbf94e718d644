"""Generation throughput: winnow's KV cache vs re-running the whole sequence, at 256 new tokens.

Greedy decoding of ``--new-tokens`` tokens after a ``--prompt-len``-token prompt, batch ``--batch``:

* ``cache``: ``train.generate.generate_ids`` (one prefill, then one single-token forward per step
  against the preallocated ``KVCache``);
* ``no_cache``: the nanoGPT loop: every step runs the full sequence so far and keeps the last logits;
* ``hf_cache`` (reference): ``transformers``' ``LlamaForCausalLM.generate`` with its dynamic cache,
  same weights, ``do_sample=False``, eos disabled so it also makes exactly ``--new-tokens`` tokens.

All three must produce the same tokens (checked and recorded: ``same_tokens``).  Each is run
``--repeats`` times, interleaved, each after waiting for the shared machine to be idle (other
processes' share of the CPU during each run is recorded); tokens/s = batch · new tokens / median
wall time over the undisturbed runs (other processes < 10% of the CPU; prefill included).
fp32 on CPU (the machine's threads), bf16 weights on CUDA.

    .venv/bin/python bench/generate_speed.py       # depth 6, vocab 8192, 32-token prompt, 256 new
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchutil

from train.export import hf_state_dict
from train.generate import GenerationConfig, generate_ids
from train.model import GPT, GPTConfig

RESULTS = Path(__file__).resolve().parent / "results"


@torch.no_grad()
def no_cache(model: GPT, prompt: torch.Tensor, new_tokens: int) -> list[list[int]]:
    idx = prompt
    for _ in range(new_tokens):
        logits = model(idx, last_only=True)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx[:, prompt.shape[1] :].tolist()


def cached(model: GPT, prompt: torch.Tensor, new_tokens: int) -> list[list[int]]:
    cfg = GenerationConfig(strategy="greedy", max_new_tokens=new_tokens)
    return generate_ids(model, prompt.tolist(), cfg)  # no eos: exactly new_tokens each


def hf_model(model: GPT):
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    hc = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=c.mlp_hidden,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.n_kv_head,
        head_dim=c.head_dim,
        max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_embeddings,
    )
    hf = LlamaForCausalLM._from_config(hc, attn_implementation="sdpa", dtype=next(model.parameters()).dtype)
    hf.load_state_dict(hf_state_dict(model, next(model.parameters()).dtype), strict=False)  # tied: re-tied
    return hf.to(next(model.parameters()).device).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers reference")
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--no-wait-quiet", dest="wait_quiet", action="store_false", help="do not wait for an idle machine"
    )
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    config = GPTConfig.from_depth(args.depth, args.vocab, args.prompt_len + args.new_tokens)
    model = GPT(config).to(device).eval()
    if cuda:
        model.to(torch.bfloat16)
    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt_len), device=device)
    runners = {"cache": lambda: cached(model, prompt, args.new_tokens)}
    runners["no_cache"] = lambda: no_cache(model, prompt, args.new_tokens)
    if not args.no_hf:
        hf = hf_model(model)

        def hf_run():
            with torch.no_grad():
                out = hf.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )
            return out[:, args.prompt_len :].tolist()

        runners["hf_cache"] = hf_run

    def timed(fn):
        """(seconds, output, share of the machine's CPU that other processes used meanwhile)."""
        if cuda:
            torch.cuda.synchronize()
        busy, own, t = benchutil.busy_cpu_s(), time.process_time(), time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        other = (benchutil.busy_cpu_s() - busy) - (time.process_time() - own)
        return wall, out, max(0.0, other) / ((os.cpu_count() or 1) * wall)

    for name in ("cache", "hf_cache"):  # warm-up (allocator, oneDNN kernel selection)
        if name in runners:
            timed(runners[name])
    times: dict[str, list[float]] = {k: [] for k in runners}
    disturbed: dict[str, list[float]] = {k: [] for k in runners}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            if args.wait_quiet:
                benchutil.wait_for_quiet()
            seconds, out, other = timed(fn)
            times[name].append(round(seconds, 4))
            disturbed[name].append(round(other, 3))
            outputs[name] = out
            print(f"{name:9s} {seconds:8.3f} s  (other CPU {other:.0%})", flush=True)
    tokens = args.batch * args.new_tokens
    summary = {}
    for name, ts in times.items():
        # runs where other work used <= 10% of the machine (all of them when there is none)
        quiet = [t for t, o in zip(ts, disturbed[name], strict=True) if o <= 0.1] or ts
        med = statistics.median(quiet)
        summary[name] = {"median_s": med, "tokens_per_s": round(tokens / med, 1), "quiet_runs": len(quiet)}
    doc = {
        "benchmark": "generate_speed",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": str(device),
        "dtype": "bfloat16" if cuda else "float32",
        "threads": torch.get_num_threads(),
        "model": config.to_dict(),
        "params": model.num_params(),
        "summary": summary,
        "speedup_cache_vs_no_cache": round(summary["no_cache"]["median_s"] / summary["cache"]["median_s"], 2),
        "goal": "cache / no cache >= 5x at 256 new tokens",
        "same_tokens": all(out == outputs["cache"] for out in outputs.values()),
        "times_s": times,
        "other_cpu_fraction": disturbed,
        "machine": benchutil.machine_info(["torch", "transformers"]),
    }
    if "hf_cache" in summary:
        doc["cache_vs_hf_cache"] = round(summary["hf_cache"]["median_s"] / summary["cache"]["median_s"], 2)
    out = args.out or RESULTS / ("generate_speed-cuda.json" if cuda else "generate_speed.json")
    benchutil.write_json(out, doc)
    print(json.dumps({k: doc[k] for k in ("summary", "speedup_cache_vs_no_cache", "same_tokens")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
