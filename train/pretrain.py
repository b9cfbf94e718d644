"""``winnow train pretrain``: pretrain a GPT on the token shards of one or more run directories.

The loop (nanoGPT's, made restartable):

    for each step: lr from the schedule → micro-batches (gradient accumulation; DDP syncs only the
    last) → clip → AdamW step → metrics line → every --eval-every steps: val loss and bits per byte
    → every --save-every steps (and at the end, and on SIGINT/SIGTERM): atomic checkpoint

**Optimizer.**  AdamW (β = 0.9, 0.95; decoupled weight decay 0.1, which torch applies as
``p -= lr·wd·p``, so decay follows the schedule).  Weight decay applies to the attention and MLP
matrices and an untied output head; *not* to RMSNorm gains (decay would pull the per-channel scales
towards 0 instead of towards the identity 1, fighting the normalisation) and *not* to the token
embedding (a row only gets gradient when its token occurs, but decay shrinks every row every step:
rare tokens' vectors would decay towards 0 between occurrences; a tied head shares the embedding
and follows it).

**Schedule.**  Linear warmup, then ``cosine`` decay to ``min_lr_ratio · lr`` at the last step, or
``wsd`` (warmup-stable-decay): constant, then a linear decay over the final ``cooldown`` fraction.
WSD's stable phase lets a run be extended (or branched into a cooldown) without restarting.  The
schedule is a pure function of the step, so resuming needs only the step number.

**Resume.**  ``--resume`` restores model, optimizer, data-loader position and RNG states from
``OUT``'s latest checkpoint; the continued run is bit-identical to an uninterrupted one (CPU, fp32:
``tests/test_pretrain.py``).  metrics.jsonl is cut back to the checkpoint's step first: a line is
always written (and fsynced) before the checkpoint of its step, so after a crash the file holds
every line up to the checkpoint and possibly some beyond, which the resumed run writes again.

**bf16.**  ``--dtype auto`` uses bf16 autocast on GPUs with bf16 and on CPUs with AVX512-BF16 or
AMX (~2.5× the fp32 tokens/s for a 14M model, measured on this project's 2-vCPU AMX machines);
weights, gradients and optimizer state stay fp32 and the loss is computed in fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.atomic import atomic_write_text
from train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
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
from train.losses import token_cross_entropy
from train.model import GPT, GPTConfig
from train.parallel import (
    DistInfo,
    all_reduce_max,
    all_reduce_sum,
    init_distributed,
    parallelize,
    shutdown_distributed,
)

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
TIMING_KEYS = ("tokens_per_s", "mfu", "elapsed_s")  # the only metrics that differ between equal runs

# Dense bf16 peak FLOP/s for MFU (vendor datasheets, no sparsity); unknown devices report no mfu.
PEAK_BF16_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "H800": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "4090": 165e12,
    "3090": 71e12,
}


class UsageError(ValueError):
    """Bad flags or an output folder in the wrong state (exit code 2)."""


# --------------------------------------------------------------------------------------------------
# Arguments


def _given(args: argparse.Namespace, name: str):
    return getattr(args, name, None)


def resolve_args(args: argparse.Namespace, saved: dict | None) -> dict:
    """Flags → the run's settings: given flags, else the checkpoint's (on resume), else DEFAULTS."""
    names = set(DEFAULTS) | set(RUN_DEFINING) | set(MODEL_FLAGS) | set(RESUMABLE)
    if saved is not None and "shuffle_tokens" not in saved:
        saved = {**saved, "shuffle_tokens": 0}  # a checkpoint from before the window shuffle
    run = {}
    conflicts = []
    for name in sorted(names):
        value = _given(args, name)
        if name == "data" and value is not None:
            value = [list(parse_data_spec(s)) for s in value]
        if saved is not None and name in saved:
            if value is None:
                value = saved[name]
            elif name in RUN_DEFINING + MODEL_FLAGS and value != saved[name]:
                conflicts.append(f"--{name.replace('_', '-')} {value} (checkpoint: {saved[name]})")
        if value is None:
            value = DEFAULTS.get(name)
        run[name] = value
    if conflicts:
        raise UsageError(
            "--resume with settings that differ from the checkpoint's: "
            + "; ".join(conflicts)
            + ". Leave them out to continue the run, or start a new run in another --out."
        )
    if not run["data"]:
        raise UsageError("--data RUN_DIR is required (repeat it for a mixture: --data A:0.7 --data B:0.3)")
    if args.max_steps is not None or args.tokens is not None:  # the run's length: given, else saved
        run["max_steps"], run["tokens"] = args.max_steps, args.tokens
    for name in ("block_size", "micro_batch", "depth"):
        if run[name] is not None and run[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (got {run[name]})")
    if run["max_steps"] is not None and run["max_steps"] < 1:
        raise UsageError(f"--max-steps must be >= 1 (got {run['max_steps']})")
    for name in ("batch_tokens", "eval_every", "save_every", "eval_tokens", "warmup", "shuffle_tokens"):
        if run[name] is not None and run[name] < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 (got {run[name]})")
    if run["tokens"] is not None and run["tokens"] <= 0:
        raise UsageError(f"--tokens must be > 0 (got {run['tokens']})")
    if not 0 <= run["min_lr_ratio"] <= 1 or not 0 <= run["cooldown"] <= 1:
        raise UsageError("--min-lr-ratio and --cooldown must be in [0, 1]")
    if run["lr"] is not None and run["lr"] <= 0:
        raise UsageError(f"--lr must be > 0 (got {run['lr']})")
    return run


def lr_at(
    step: int, *, peak: float, max_steps: int, warmup: int, schedule: str, min_ratio: float, cooldown: float
) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    floor = peak * min_ratio
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, max_steps - 1 - warmup)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "wsd":
        decay_steps = max(1, round(cooldown * max_steps)) if cooldown > 0 else 0
        start = max_steps - decay_steps
        if step < start or decay_steps == 0:
            return peak
        progress = (step - start + 1) / decay_steps
        return peak + (floor - peak) * min(1.0, progress)
    raise ValueError(f"unknown schedule {schedule!r}")


def param_groups(model: GPT, weight_decay: float) -> list[dict]:
    """Decay matrices of the blocks and an untied head; not norms and not the embedding (see top)."""
    embedding = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied matrix once
        (no_decay if p.dim() < 2 or id(p) in embedding else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "fp32":
        return torch.float32
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if name == "bf16" and not supported:
        raise UsageError(f"--dtype bf16: this {device.type} has no bf16 support; use fp32")
    return torch.bfloat16 if supported else torch.float32


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    return None


# --------------------------------------------------------------------------------------------------
# State that a checkpoint must carry besides the weights


def rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],  # plain types: weights_only
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Metrics:
    """metrics.jsonl: one JSON object per line, appended and flushed; fsynced before checkpoints."""

    def __init__(self, path: Path, *, enabled: bool, keep_through_step: int | None):
        self.path = path
        self.f = None
        if not enabled:
            return
        if keep_through_step is None:
            self.path.write_text("")
        elif self.path.exists():  # resume: drop lines past the checkpoint (written before a crash)
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= keep_through_step:
                        kept.append(line + "\n")
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line cut by a crash mid-write
            atomic_write_text(self.path, "".join(kept))
        self.f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, record: dict) -> None:
        if self.f is not None:
            self.f.write(json.dumps(record) + "\n")
            self.f.flush()

    def sync(self) -> None:
        if self.f is not None:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


class StopFlag:
    """SIGINT/SIGTERM → finish the step, save, exit.  A second SIGINT aborts at once."""

    def __init__(self):
        self.signum = 0
        self._old = {}

    def _handle(self, signum, frame):
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Progress:
    """A rich progress bar on a terminal (rank 0), else a plain line every ~5% of the run."""

    def __init__(self, total: int, start: int, *, enabled: bool):
        self.total, self.bar, self.task = total, None, None
        self.enabled = enabled
        self.every = max(1, total // 20)
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("pretrain", total=total, completed=start, info="")

    def update(self, step: int, record: dict) -> None:
        info = f"loss {record['train_loss']:.4f}" if "train_loss" in record else ""
        if "val_loss" in record:
            info += f" val {record['val_loss']:.4f}"
        if "tokens_per_s" in record:
            info += f" {record['tokens_per_s']:,.0f} tok/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        elif self.enabled and (step % self.every == 0 or step == self.total or "val_loss" in record):
            print(f"step {step}/{self.total} {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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


def pretrain(args: argparse.Namespace) -> int:
    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError(f"--stop-after must be >= 1 (got {args.stop_after})")
    if args.log_every < 1:
        raise UsageError(f"--log-every must be >= 1 (got {args.log_every})")
    info = init_distributed(args.device)
    out = Path(args.out)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if info.is_main else (lambda *a: None)

    ckpt = None
    if args.resume:
        if not list_checkpoints(out / "checkpoints"):
            raise UsageError(f"--resume: no checkpoint in {out / 'checkpoints'}")
        ckpt = load_checkpoint(out)
        if ckpt["trainer_state"] is None:
            raise UsageError(f"--resume: {ckpt['dir']} has no trainer.pt (a weights-only checkpoint)")
    elif list_checkpoints(out / "checkpoints"):
        raise UsageError(f"{out} already has checkpoints: pass --resume to continue, or choose another --out")
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
    dtype = pick_dtype(args.dtype, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
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
    schedule = dict(
        peak=peak,
        max_steps=max_steps,
        warmup=warmup,
        schedule=run["schedule"],
        min_ratio=run["min_lr_ratio"],
        cooldown=run["cooldown"],
    )

    optimizer = torch.optim.AdamW(
        param_groups(model, run["weight_decay"]),
        lr=peak,
        betas=(run["beta1"], run["beta2"]),
        eps=1e-8,
        fused=device.type == "cuda",
    )
    loader = PretrainLoader(
        sources,
        block_size=T,
        micro_batch=B,
        rank=info.rank,
        world_size=W,
        seed=run["seed"],
        shuffle_tokens=run["shuffle_tokens"],
    )

    step, tokens = 0, 0
    if ckpt is not None:
        ts = ckpt["trainer_state"]
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ts["optimizer"])
        loader.load_state_dict(ts["data"])
        step, tokens = int(ts["step"]), int(ts["tokens"])
        set_rng_state(ts["rng"])
        if step >= max_steps:
            log(f"{ckpt['dir']} is at step {step} >= max steps {max_steps}: nothing to do")
            shutdown_distributed()
            return 0
    train_model = parallelize(model, info, compile=args.compile)
    eval_model = train_model.module if info.distributed else train_model

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

    flops_token = model.flops_per_token(T)
    peak_fl = peak_flops(device, dtype)
    log(model.summary(T))
    log(f"parameters: {model.num_params():,}; FLOPs per token (train): {flops_token:,.0f}")
    log(
        f"batch: {batch_tokens:,} tokens = {B} seq × {T} tokens × {W} rank(s) × {accum} accumulation; "
        f"{max_steps:,} steps = {max_steps * batch_tokens:,} tokens; lr {peak:.3g} {run['schedule']}, "
        f"warmup {warmup}; {device.type} {str(dtype).removeprefix('torch.')}"
        + (f"; resuming at step {step}" if ckpt else "")
    )

    meta = {
        "train": {**run, "dtype": args.dtype, "compile": args.compile, "world_size": W},
        "data": {
            "manifests": [s.lineage() for s in sources],
            "val": [s.lineage() for s in val_sources],
            "tokenizer_json_sha256": tokenizer.sha256 if tokenizer else sources[0].tokenizer_sha256,
        },
        "model": asdict(config),
    }

    def checkpoint(at_step: int) -> None:
        if not info.is_main:
            return
        metrics.sync()  # the metrics of every step up to this one are on disk before the checkpoint
        trainer_state = {
            "step": at_step,
            "tokens": tokens,
            "optimizer": optimizer.state_dict(),
            "scheduler": {"name": run["schedule"], "step": at_step, **schedule},
            "data": loader.state_dict(),
            "rng": rng_state(),
        }
        save_checkpoint(
            out,
            at_step,
            model,
            tokenizer_dir=tok_dir,
            meta={**meta, "tokens": tokens},
            trainer_state=trainer_state,
            keep_last=args.keep_checkpoints,
        )

    out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(out / "metrics.jsonl", enabled=info.is_main, keep_through_step=step if ckpt else None)
    progress = Progress(max_steps, step, enabled=info.is_main and not args.no_progress)
    eval_kw = dict(micro_batch=B, device=device, autocast=autocast, token_bytes=token_bytes, info=info)
    stop = torch.zeros(1, device=device)
    exit_code = 0
    try:
        with StopFlag() as flag:
            if ckpt is None and val_sets:
                metrics.write({"step": 0, "tokens": 0, **evaluate(eval_model, val_sets, **eval_kw)})
            t_start = time.perf_counter()
            stop_at = min(max_steps, step + args.stop_after) if args.stop_after else max_steps
            while step < stop_at:
                t0 = time.perf_counter()
                lr = lr_at(step, **schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for micro in range(accum):
                    x, y = loader.next_batch()
                    if device.type == "cuda":
                        x, y = (
                            x.pin_memory().to(device, non_blocking=True),
                            y.pin_memory().to(device, non_blocking=True),
                        )
                    last = micro == accum - 1
                    sync = train_model.no_sync() if info.distributed and not last else nullcontext()
                    with sync:
                        with autocast:
                            total, n = token_cross_entropy(train_model(x), y)
                            loss = total / n  # every window has the same number of targets
                        (loss / accum).backward()
                    loss_sum += loss.detach()
                max_norm = run["grad_clip"] if run["grad_clip"] > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens += batch_tokens

                stop.fill_(flag.signum)
                signum = int(all_reduce_max(stop, info).item())  # every rank stops at the same step
                final = step == max_steps
                record = {}
                if step % args.log_every == 0 or final or signum:
                    mean_loss = all_reduce_sum(loss_sum / accum, info) / W
                    dt = time.perf_counter() - t0
                    record = {
                        "step": step,
                        "tokens": tokens,
                        "train_loss": mean_loss.item(),
                        "lr": lr,
                        "grad_norm": grad_norm.item(),
                        "tokens_per_s": batch_tokens / dt,
                        "elapsed_s": time.perf_counter() - t_start,
                    }
                    if peak_fl:
                        record["mfu"] = flops_token * batch_tokens / dt / (peak_fl * W)
                if eval_every and val_sets and (step % eval_every == 0 or final):
                    record = {
                        "step": step,
                        "tokens": tokens,
                        **record,
                        **evaluate(eval_model, val_sets, **eval_kw),
                    }
                if record:
                    metrics.write(record)
                    progress.update(step, record)
                pause = step == stop_at and not final
                if final or signum or pause or (run["save_every"] and step % run["save_every"] == 0):
                    checkpoint(step)
                if signum:
                    log(f"stopped at step {step}; checkpoint saved. Continue with --resume.")
                    exit_code = 128 + signum
                    break
    finally:
        progress.close()
        metrics.close()
        shutdown_distributed()
    if step < max_steps and not exit_code:
        log(f"--stop-after: paused at step {step} of {max_steps}; continue with --resume")
    elif not exit_code:
        log(f"done: {step} steps, {tokens:,} tokens; checkpoints in {out / 'checkpoints'}")
    return exit_code


def main(args: argparse.Namespace) -> int:
    try:
        return pretrain(args)
    except (UsageError, DataError) as exc:
        print(f"winnow train pretrain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the second Ctrl-C: no checkpoint of the current step
        print("winnow train pretrain: aborted; --resume continues from the last checkpoint", file=sys.stderr)
        return 130
