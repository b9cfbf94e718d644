"""SFT throughput: packing (best-fit windows + block-diagonal mask) vs padding (one conversation per
row, right-padded to the longest row of its micro-batch), on the same data, model and machine.

A third mode, ``packing_causal_mask_only``, runs the packed windows with the plain causal mask
(conversations attend to each other: wrong, never used for training) to price the block-diagonal
mask, which takes SDPA off its fused causal path.

For each mode: the share of padding positions over one whole epoch (collation only, exact), and
training tokens/s (non-padding input tokens per second of forward + backward + AdamW step, the
real training step of ``train.loop.accumulate``) as the median of ``--repeats`` timed runs of
``--steps`` steps, modes alternated (A B C A B C ...) so that load drift on a shared machine hits
all; ratios are medians of per-round ratios.

    .venv/bin/python bench/sft_speed.py --data ../shared/data/sft_dev.jsonl.gz \\
        --tokenizer runs/english_lm/tokenizer --out bench/results/sft_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from train.data import load_tokenizer  # noqa: E402
from train.loop import Task, accumulate, make_autocast, param_groups, pick_dtype  # noqa: E402
from train.losses import token_cross_entropy  # noqa: E402
from train.model import GPT, GPTConfig  # noqa: E402
from train.parallel import DistInfo  # noqa: E402
from train.sft import SFTBatches, collate, masked_loss, read_conversations, render_examples  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def epoch_padding(batches: SFTBatches, micro_batch: int) -> dict:
    """Positions, real tokens and padding share of one epoch in the loader's micro-batches."""
    order = batches._epoch_order(0)
    positions = tokens = 0
    for i in range(0, len(order), micro_batch):
        rows = [batches.rows[k] for k in order[i : i + micro_batch]]
        x, _, _, n = collate(batches.examples, rows, batches.pad_id, batches.packing)
        positions += x.numel()
        tokens += n
    return {
        "rows": len(batches.rows),
        "positions": positions,
        "tokens": tokens,
        "padding_share": 1 - tokens / positions,
    }


def timed(model, task: Task, steps: int, autocast, info, optimizer) -> float:
    """Non-padding tokens per second over ``steps`` optimizer steps (1 accumulation each)."""
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    tokens = 0.0
    for _ in range(steps):
        _, _, n_tok = accumulate(model, task, 1, autocast=autocast, info=info, params=params)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += n_tok
    return tokens / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True, help="tokenizer folder (with the chat tokens)")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=512)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tok = load_tokenizer(args.tokenizer)
    convs, lineage = read_conversations(args.data)
    ex = render_examples(tok, convs, args.block_size)
    device = torch.device("cpu")
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device)
    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)
    model = GPT(GPTConfig.from_depth(args.depth, tok.vocab_size, args.block_size)).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, 0.0), lr=1e-4)

    def causal_only(model, batch):  # packed windows without the block-diagonal mask: WRONG attention
        x, y, _, _ = batch  # (conversations see each other), timed only to price the mask
        return token_cross_entropy(model(x), y)

    modes = {}
    for name, packing, loss in (
        ("packing", True, masked_loss(device)),
        ("padding", False, masked_loss(device)),
        ("packing_causal_mask_only", True, causal_only),
    ):
        b = SFTBatches(
            ex,
            block_size=args.block_size,
            micro_batch=args.micro_batch,
            pad_id=tok.pad_id,
            packing=packing,
            seed=0,
        )
        modes[name] = {
            "task": Task(batches=b, loss=loss, tokens=lambda x: x[3]),
            "epoch": epoch_padding(b, args.micro_batch),
            "tokens_per_s": [],
        }
        timed(model, modes[name]["task"], 1, autocast, info, optimizer)  # warm-up
    loads = []
    for _ in range(args.repeats):
        for m in modes.values():
            m["tokens_per_s"].append(timed(model, m["task"], args.steps, autocast, info, optimizer))
        loads.append(round(os.getloadavg()[0], 2))

    result = {
        "data": lineage,
        "examples": len(ex.x),
        "truncated": ex.truncated,
        "dropped": ex.dropped,
        "model": {"depth": args.depth, "block_size": args.block_size, "params": model.num_params()},
        "micro_batch": args.micro_batch,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": args.threads,
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "modes": {
            name: {
                **m["epoch"],
                "tokens_per_s": [round(x, 1) for x in m["tokens_per_s"]],
                "median_tokens_per_s": round(statistics.median(m["tokens_per_s"]), 1),
            }
            for name, m in modes.items()
        },
    }
    # ratios: the median of per-round ratios (the modes of a round ran seconds apart, under the same load)
    pk, pd, nm = (modes[k]["tokens_per_s"] for k in ("packing", "padding", "packing_causal_mask_only"))
    result["load_average_1min_per_round"] = loads
    result["speedup_packing_over_padding"] = round(statistics.median(a / b for a, b in zip(pk, pd)), 3)
    result["mask_cost"] = round(statistics.median(1 - a / b for a, b in zip(pk, nm)), 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
