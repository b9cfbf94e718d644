"""``winnow train pretrain``: pretrain a GPT on the token shards of one or more run directories.

What is pretraining-specific lives here: the run's settings (the depth dial, ``--batch-tokens``,
``--tokens``), the data (``train.data.PretrainLoader``: packed windows, every target supervised),
the next-token loss and the validation (loss and bits per byte per source).  The loop itself
(AdamW groups, schedules, accumulation, normalisation, clipping, bf16, compile, metrics.jsonl,
signals, checkpoints, bit-exact resume, DDP) is ``train.loop``, shared with ``winnow train sft``;
see its docstring for the optimizer, schedule, resume and bf16 choices.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from train.data import (
    DEFAULT_SHUFFLE_TOKENS,
    DataError,
    PretrainLoader,
    Source,
    check_compatible,
    load_tokenizer,
    open_source,
    parse_data_spec,
    token_byte_lengths,
    val_windows,
)
from train.loop import (
    TIMING_KEYS,
    LoopSettings,
    Task,
    UsageError,
    check_settings,
    lr_at,
    make_autocast,
    merge_settings,
    open_output,
    param_groups,
    pick_dtype,
    run_cli,
    run_loop,
    seed_everything,
    to_device,
)
from train.losses import token_cross_entropy
from train.model import GPT, GPTConfig
from train.parallel import DistInfo, all_reduce_sum

__all__ = ["TIMING_KEYS", "UsageError", "lr_at", "main", "param_groups", "pretrain", "resolve_args"]

DEFAULTS = {
    "depth": 6,
    "block_size": 1024,
    "micro_batch": 8,
    "schedule": "cosine",
    "cooldown": 0.2,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "seed": 0,
    "eval_every": 250,
    "eval_tokens": 262_144,
    "save_every": 1000,
    "shuffle_tokens": DEFAULT_SHUFFLE_TOKENS,
}
# These define the run: on --resume they must equal the checkpoint's (left out = the checkpoint's).
RUN_DEFINING = (
    "data",
    "tokenizer",
    "block_size",
    "batch_tokens",
    "lr",
    "schedule",
    "warmup",
    "cooldown",
    "min_lr_ratio",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "seed",
    "shuffle_tokens",
)
MODEL_FLAGS = ("depth", "n_embd", "n_head", "n_kv_head", "mlp_hidden", "rope_theta", "tie_embeddings")
# Free to change on resume (they do not change the math of the run, or extend it on purpose).
RESUMABLE = ("val", "micro_batch", "max_steps", "tokens", "eval_every", "eval_tokens", "save_every")


# --------------------------------------------------------------------------------------------------
# Arguments


def resolve_args(args: argparse.Namespace, saved: dict | None) -> dict:
    """Flags → the run's settings: given flags, else the checkpoint's (on resume), else DEFAULTS."""
    names = set(DEFAULTS) | set(RUN_DEFINING) | set(MODEL_FLAGS) | set(RESUMABLE)
    if saved is not None and "shuffle_tokens" not in saved:
        saved = {**saved, "shuffle_tokens": 0}  # a checkpoint from before the window shuffle
    given = {name: getattr(args, name, None) for name in names}
    if given["data"] is not None:
        given["data"] = [list(parse_data_spec(s)) for s in given["data"]]
    run = merge_settings(given, saved, defaults=DEFAULTS, fixed=RUN_DEFINING + MODEL_FLAGS)
    if not run["data"]:
        raise UsageError("--data RUN_DIR is required (repeat it for a mixture: --data A:0.7 --data B:0.3)")
    if args.max_steps is not None or args.tokens is not None:  # the run's length: given, else saved
        run["max_steps"], run["tokens"] = args.max_steps, args.tokens
    for name in ("block_size", "depth"):
        if run[name] is not None and run[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (got {run[name]})")
    for name in ("batch_tokens", "eval_tokens", "shuffle_tokens"):
        if run[name] is not None and run[name] < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 (got {run[name]})")
    if run["tokens"] is not None and run["tokens"] <= 0:
        raise UsageError(f"--tokens must be > 0 (got {run['tokens']})")
    check_settings(run, args)
    return run


# --------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model,
    val_sets: list[tuple[str, np.ndarray]],
    *,
    micro_batch: int,
    device: torch.device,
    autocast,
    token_bytes: torch.Tensor | None,
    info: DistInfo,
) -> dict:
    """Mean val loss (nats per token, every target) and bits per byte (text targets only).

    Sums are reduced over ranks, so the result is the same for any world size.
    """
    model.eval()
    sums = torch.zeros(len(val_sets), 4, dtype=torch.float64, device=device)  # nats, n, text nats, bytes
    for i, (_, windows) in enumerate(val_sets):
        for j in range(0, len(windows), micro_batch):
            w = torch.from_numpy(windows[j : j + micro_batch].astype(np.int64)).to(device)
            x, y = w[:, :-1], w[:, 1:]
            with autocast:
                logits = model(x)
            ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
            sums[i, 0] += ce.sum()
            sums[i, 1] += ce.numel()
            if token_bytes is not None:
                nb = token_bytes[y.flatten()]
                sums[i, 2] += (ce * (nb > 0)).sum()
                sums[i, 3] += nb.sum()
    model.train()
    all_reduce_sum(sums, info)
    total = sums.sum(0).tolist()
    out = {"val_loss": total[0] / total[1]}
    if token_bytes is not None and total[3] > 0:
        out["val_bpb"] = total[2] / (math.log(2) * total[3])
    if len(val_sets) > 1:
        for (name, _), (nats, n, tnats, nbytes) in zip(val_sets, sums.tolist()):
            out[f"val_loss/{name}"] = nats / n
            if token_bytes is not None and nbytes > 0:
                out[f"val_bpb/{name}"] = tnats / (math.log(2) * nbytes)
    return out


# --------------------------------------------------------------------------------------------------
# The run


def _open_data(run: dict, tokenizer) -> tuple[list[Source], list[Source]]:
    sources = [open_source(p, "train", tokenizer=tokenizer, weight=w) for p, w in run["data"]]
    check_compatible(sources)
    if run["val"]:
        vals = [open_source(p, "val", tokenizer=tokenizer) for p in run["val"]]
    else:
        vals = []
        for s in sources:
            if s.kind == "tokens":
                # no val split in this run: reported later when there is no val data at all
                with contextlib.suppress(DataError):
                    vals.append(open_source(s.path, "val", tokenizer=tokenizer))
    if vals:
        check_compatible(sources + vals)
    return sources, vals


def _unique_names(sources: list[Source]) -> list[str]:
    names = [s.name for s in sources]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _task(loader: PretrainLoader, device: torch.device, evaluate_fn) -> Task:
    """Every target of a window is supervised: loss sum and count straight from the windows."""

    def loss(model, batch):
        x, y = batch
        return token_cross_entropy(model(to_device(x, device)), to_device(y, device))

    return Task(
        batches=loader,
        loss=loss,
        tokens=lambda batch: batch[0].numel(),
        evaluate=evaluate_fn,
        label="pretrain",
    )


def pretrain(args: argparse.Namespace, info: DistInfo, log: Callable[..., None]) -> int:
    """``winnow train pretrain`` (run through ``train.loop.run_cli``)."""
    out = Path(args.out)
    ckpt = open_output(out, args.resume)
    run = resolve_args(args, ckpt["meta"]["train"] if ckpt else None)

    tokenizer = load_tokenizer(run["tokenizer"]) if run["tokenizer"] else None
    sources, val_sources = _open_data(run, tokenizer)
    tok_dir = tokenizer.path if tokenizer else sources[0].tokenizer_dir
    if tokenizer is None and tok_dir is not None:
        tokenizer = load_tokenizer(tok_dir)
    vocab_size = sources[0].vocab_size
    if tokenizer is None:
        log(
            "warning: no tokenizer found next to the token shards: no val_bpb, and checkpoints carry no "
            "tokenizer/ (pass --tokenizer DIR)"
        )
    elif tokenizer.vocab_size != vocab_size:
        raise DataError(
            f"vocab mismatch: tokenizer {tokenizer.path} has {tokenizer.vocab_size} ids, "
            f"the data {vocab_size}"
        )

    # ---- model
    if ckpt is not None:
        config = ckpt["config"]
    else:
        overrides = {k: run[k] for k in MODEL_FLAGS if k != "depth" and run[k] is not None}
        try:
            config = GPTConfig.from_depth(run["depth"], vocab_size, run["block_size"], **overrides)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if config.vocab_size != vocab_size:
        raise DataError(
            f"vocab mismatch: the checkpoint's model has vocab_size {config.vocab_size}, "
            f"the data {vocab_size}"
        )
    seed_everything(run["seed"])
    device = info.device
    model = GPT(config).to(device)
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- batch and length
    T, B, W = config.block_size, run["micro_batch"], info.world_size
    per_pass = B * T * W
    batch_tokens = run["batch_tokens"] or per_pass
    if batch_tokens % per_pass:
        raise UsageError(
            f"--batch-tokens {batch_tokens} is not a multiple of micro-batch × block × world = "
            f"{B} × {T} × {W} = {per_pass}"
        )
    accum = batch_tokens // per_pass
    if run["max_steps"] is not None:
        max_steps = run["max_steps"]
    else:
        target = run["tokens"] if run["tokens"] is not None else 20 * model.num_params()
        max_steps = max(1, math.ceil(target / batch_tokens))
    if ckpt is not None and ckpt["meta"]["train"].get("max_steps") != max_steps:
        log(
            f"note: the run now ends at step {max_steps} (was {ckpt['meta']['train'].get('max_steps')}): "
            f"the learning-rate schedule is stretched from here on"
        )
    run["max_steps"], run["batch_tokens"] = max_steps, batch_tokens
    peak = run["lr"] if run["lr"] is not None else config.peak_lr()
    warmup = run["warmup"] if run["warmup"] is not None else min(1000, max(1, max_steps // 20))
    run["lr"], run["warmup"] = peak, warmup

    loader = PretrainLoader(
        sources,
        block_size=T,
        micro_batch=B,
        rank=info.rank,
        world_size=W,
        seed=run["seed"],
        shuffle_tokens=run["shuffle_tokens"],
    )

    # ---- validation data
    eval_every = run["eval_every"]
    val_sets = []
    if eval_every and val_sources:
        per_set = max(1, run["eval_tokens"] // (T * len(val_sources)))
        for name, vs in zip(_unique_names(val_sources), val_sources):
            val_sets.append((name, val_windows(vs, T, per_set, rank=info.rank, world_size=W)))
    elif eval_every:
        log("no validation data (no --val and no val split in --data): val_loss is not reported")
    token_bytes = None
    if tokenizer is not None:
        token_bytes = torch.from_numpy(token_byte_lengths(tokenizer, vocab_size)).to(device)
    eval_kw = dict(micro_batch=B, device=device, autocast=autocast, token_bytes=token_bytes, info=info)
    evaluate_fn = (lambda m: evaluate(m, val_sets, **eval_kw)) if val_sets else None

    log(model.summary(T))
    log(f"parameters: {model.num_params():,}; FLOPs per token (train): {model.flops_per_token(T):,.0f}")
    log(
        f"batch: {batch_tokens:,} tokens = {B} seq × {T} tokens × {W} rank(s) × {accum} accumulation; "
        f"{max_steps:,} steps = {max_steps * batch_tokens:,} tokens; lr {peak:.3g} {run['schedule']}, "
        f"warmup {warmup}; {device.type} {str(dtype).removeprefix('torch.')}"
        + (f"; resuming at step {ckpt['trainer_state']['step']}" if ckpt else "")
    )
    meta = {
        "kind": "pretrain",
        "train": {**run, "dtype": args.dtype, "compile": args.compile, "world_size": W},
        "data": {
            "manifests": [s.lineage() for s in sources],
            "val": [s.lineage() for s in val_sources],
            "tokenizer_json_sha256": tokenizer.sha256 if tokenizer else sources[0].tokenizer_sha256,
        },
        "model": asdict(config),
    }
    settings = LoopSettings.from_run(
        run, args, max_steps=max_steps, accum=accum, lr=peak, warmup=warmup, eval_every=eval_every
    )
    return run_loop(
        model,
        _task(loader, device, evaluate_fn),
        settings,
        out=out,
        info=info,
        dtype=dtype,
        meta=meta,
        tokenizer_dir=tok_dir,
        trainer_state=ckpt["trainer_state"] if ckpt else None,
        flops_per_token=model.flops_per_token(T),
        log=log,
    )


def main(args: argparse.Namespace) -> int:
    return run_cli("pretrain", pretrain, args, (DataError,))
