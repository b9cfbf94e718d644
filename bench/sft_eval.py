"""Does SFT teach the model to close its turn?  Greedy replies to the held-back prompts of an
``winnow train sft --val-fraction F`` run, for the base checkpoint and the SFT checkpoint.

For each held-back row (the same rows the SFT run held out: ``train.sft._split`` with the run's
fraction and seed), the conversation without its last assistant message is rendered with
``tokenizer.chat.render_for_completion`` and decoded greedily (``train.generate.generate_ids``)
until ``<|end|>`` or ``--max-new-tokens``.  Reported per model: the share of replies that end with
``<|end|>`` within the limit, plus a few replies.  Prompts longer than the context minus
``--max-new-tokens`` are skipped (counted).

    .venv/bin/python bench/sft_eval.py --base runs/english_lm_gpt --sft runs/english_lm_sft \\
        --data ../shared/data/sft_dev.jsonl.gz --val-fraction 0.1 --out bench/results/sft_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tokenizer.chat import render_for_completion  # noqa: E402
from train.checkpoint import load_model  # noqa: E402
from train.generate import GenerationConfig, generate_ids  # noqa: E402
from train.sft import _split, read_conversations  # noqa: E402


def replies(
    model, tokenizer, prompts: list[list[int]], max_new: int, batch: int
) -> list[tuple[list[int], bool]]:
    """(reply ids, ended with <|end|>) per prompt, greedy."""
    end = tokenizer.special_tokens["<|end|>"]
    cfg = GenerationConfig(strategy="greedy", max_new_tokens=max_new)
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        # generate_ids strips the stop id: a reply shorter than max_new stopped at <|end|>
        for ids in generate_ids(model, chunk, cfg, eos_id=end, pad_id=tokenizer.pad_id):
            out.append((ids, len(ids) < max_new))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--sft", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    torch.manual_seed(0)

    convs, _ = read_conversations(args.data)
    _, held = _split(convs, args.val_fraction, args.seed)
    result = {"held_out_rows": len(held), "max_new_tokens": args.max_new_tokens, "models": {}}
    texts = {}
    for name, path in (("base", args.base), ("sft", args.sft)):
        model, tok = load_model(path)
        limit = model.config.block_size - args.max_new_tokens
        prompts, kept = [], []
        for j, conv in enumerate(held):
            last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
            ids = render_for_completion(tok, conv[:last])
            if len(ids) <= limit:
                prompts.append(ids)
                kept.append(j)
        t0 = time.perf_counter()
        with torch.no_grad():
            outs = replies(model, tok, prompts, args.max_new_tokens, args.batch)
        ended = sum(e for _, e in outs)
        result["models"][name] = {
            "checkpoint": str(path),
            "prompts": len(prompts),
            "skipped_too_long": len(held) - len(prompts),
            "ended_with_end_of_turn": ended,
            "rate": ended / len(prompts),
            "mean_reply_tokens": sum(len(r) for r, _ in outs) / len(outs),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        texts[name] = {j: tok.decode(r) for j, (r, _) in zip(kept, outs)}
        print(name, result["models"][name], file=sys.stderr)
    shown = [j for j in texts["sft"] if j in texts["base"]][: args.examples]
    result["examples"] = [
        {
            "prompt": held[j][-2]["content"][:300],
            "reference": held[j][-1]["content"][:300],
            "base": texts["base"][j][:300],
            "sft": texts["sft"][j][:300],
        }
        for j in shown
    ]
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
