"""The one training loop every ``winnow train`` command runs (pretrain, sft, and the trainers after).

A trainer supplies a :class:`Task`: a batch iterator with state (``next_batch()``,
``state_dict()``, ``load_state_dict()``), a loss function returning ``(loss_sum, n_supervised)``
for one micro-batch, a token counter and an eval hook.  The loop owns everything else:

    for each step: lr from the schedule → ``accum`` micro-batches (DDP syncs only the last) →
    gradients ÷ supervised tokens of the whole global batch → clip → AdamW step → metrics line →
    every --eval-every steps: the task's eval → every --save-every steps (and at the end, and on
    SIGINT/SIGTERM): atomic checkpoint with the batch iterator's and the RNGs' state

**Loss normalisation.**  Each micro-batch backpropagates its loss *sum*; after the last one the
supervised-token count is summed over micro-batches and ranks (one all-reduce of three numbers,
together with the loss sum and the token count for the metrics), and the gradients are multiplied
by ``world_size / N`` (DDP's all-reduce *averages* over ranks, the ``world_size`` undoes that).
The gradient is then exactly that of the mean loss over every supervised token of the step,
whatever the split into micro-batches, ranks and examples: micro-batch 8 × accumulation 1 ==
1 × 8 (``tests/test_loop.py``).  The alternative (averaging per micro-batch, then ÷ accum) weights a
token of a micro-batch with few supervised tokens more than one of a full micro-batch, the bug of
transformers #34191 / nanoGPT #206; counting first would need every micro-batch of the step in
memory before the first forward.  Cost of scaling afterwards: one ``_foreach_mul_`` over the
gradients per step (5.3 M parameters: 0.6 ms on this 2-vCPU machine, against ~1-2 s per CPU
step).  Gradients of sums are N× larger than gradients of means, which fp32 gradients (the weights
are fp32 also under bf16 autocast) hold without loss of precision.

**Optimizer.**  AdamW (β = 0.9, 0.95 by default; decoupled weight decay, which torch applies as
``p -= lr·wd·p``, so decay follows the schedule).  Weight decay applies to the attention and MLP
matrices and an untied output head; *not* to RMSNorm gains (decay would pull the per-channel scales
towards 0 instead of towards the identity 1, fighting the normalisation) and *not* to the token
embedding (a row only gets gradient when its token occurs, but decay shrinks every row every step:
rare tokens' vectors would decay towards 0 between occurrences; a tied head shares the embedding
and follows it).

**Schedule.**  Linear warmup, then ``cosine`` decay to ``min_lr_ratio · lr`` at the last step, or
``wsd`` (warmup-stable-decay): constant, then a linear decay over the final ``cooldown`` fraction.
The schedule is a pure function of the step, so resuming needs only the step number.

**Resume.**  The trainer loads the checkpoint's weights; the loop restores the optimizer, the batch
iterator, the step and token counters and the RNG states, and the continued run is bit-identical
to an uninterrupted one (CPU, fp32: ``tests/test_pretrain.py``, ``tests/test_sft.py``).
metrics.jsonl is cut back to the checkpoint's step first: a line is always written (and fsynced)
before the checkpoint of its step, so after a crash the file holds every line up to the checkpoint
and possibly some beyond, which the resumed run writes again.

**bf16.**  ``--dtype auto`` uses bf16 autocast on GPUs with bf16 and on CPUs with AVX512-BF16 or
AMX (~2.5× the fp32 tokens/s for a 14M model, measured on this project's 2-vCPU AMX machines);
weights, gradients and optimizer state stay fp32 and losses are computed in fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.atomic import atomic_write_text, fsync_open
from train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from train.parallel import (
    DistInfo,
    all_reduce_max,
    all_reduce_sum,
    init_distributed,
    parallelize,
    shutdown_distributed,
)
from train.remote import output_dir, publish_output

# with timing/*: the only metrics that differ between equal runs (is_timing)
TIMING_KEYS = ("tokens_per_s", "mfu", "elapsed_s")


# The optimizer defaults of the trainers that start from a trained checkpoint (sft, reward, dpo,
# ppo, grpo): cosine decay to 0 (cooldown only matters for wsd), no weight decay (a fine-tune should
# not pull the base's weights towards 0), AdamW's betas as pretraining, gradients clipped at 1.
FINETUNE_OPTIM_DEFAULTS = {
    "schedule": "cosine",
    "cooldown": 0.2,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.95,
    "grad_clip": 1.0,
}


def is_timing(key: str) -> bool:
    """Whether a metrics key is a measured time or speed (``TIMING_KEYS``, the RL trainers'
    ``timing/*``): the keys two runs that are otherwise bit-identical may differ in."""
    return key in TIMING_KEYS or key.startswith("timing/")


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
# Settings shared by every trainer


def open_output(out: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from (``--resume``), or None for a fresh run into an unused ``out``."""
    if resume:
        if not list_checkpoints(out / "checkpoints"):
            raise UsageError(f"--resume: no checkpoint in {out / 'checkpoints'}")
        ckpt = load_checkpoint(out)
        if ckpt["trainer_state"] is None:
            raise UsageError(f"--resume: {ckpt['dir']} has no trainer.pt (a weights-only checkpoint)")
        return ckpt
    if list_checkpoints(out / "checkpoints"):
        raise UsageError(f"{out} already has checkpoints: pass --resume to continue, or choose another --out")
    return None


def merge_settings(given: dict, saved: dict | None, *, defaults: dict, fixed: tuple[str, ...]) -> dict:
    """Each setting: the flag when given, else the checkpoint's (on resume), else ``defaults``.

    A ``fixed`` setting (one that defines the run) given with a value other than the checkpoint's
    is a UsageError listing every conflict: a resumed run continues the same run or none.
    """
    run, conflicts = {}, []
    for name in sorted(set(given) | set(defaults)):
        value = given.get(name)
        if saved is not None and name in saved:
            if value is None:
                value = saved[name]
            elif name in fixed and value != saved[name]:
                conflicts.append(f"--{name.replace('_', '-')} {value} (checkpoint: {saved[name]})")
        if value is None:
            value = defaults.get(name)
        run[name] = value
    if conflicts:
        raise UsageError(
            "--resume with settings that differ from the checkpoint's: "
            + "; ".join(conflicts)
            + ". Leave them out to continue the run, or start a new run in another --out."
        )
    return run


def check_settings(run: dict, args: argparse.Namespace) -> None:
    """Range checks of the shared flags (``train.cli.add_shared_flags``)."""
    for name in ("micro_batch", "max_steps"):
        if run.get(name) is not None and run[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (got {run[name]})")
    for name in ("eval_every", "save_every", "warmup"):
        if run.get(name) is not None and run[name] < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 (got {run[name]})")
    if run.get("lr") is not None and run["lr"] <= 0:
        raise UsageError(f"--lr must be > 0 (got {run['lr']})")
    if not 0 <= run.get("min_lr_ratio", 0) <= 1 or not 0 <= run.get("cooldown", 0) <= 1:
        raise UsageError("--min-lr-ratio and --cooldown must be in [0, 1]")
    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError(f"--stop-after must be >= 1 (got {args.stop_after})")
    if args.log_every < 1:
        raise UsageError(f"--log-every must be >= 1 (got {args.log_every})")


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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
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


def make_autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast context (re-enterable), or a no-op for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in name:
            return flops
    return None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device copy (pinned and asynchronous on CUDA)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


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
            fsync_open(self.f)

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

    def __init__(self, total: int, start: int, *, enabled: bool, label: str = "train"):
        self.total, self.bar, self.task = total, None, None
        self.enabled = enabled
        self.every = max(1, total // 20)
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=start, info="")

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
# The loop


class Batches(Protocol):
    """What a trainer's data gives the loop: micro-batches of this rank, and a resumable position."""

    def next_batch(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class EpochOrder:
    """Indices ``0..n-1`` in a new seeded permutation every epoch, endlessly: the data order of the
    post-training batch iterators.  The permutation of epoch ``e`` is
    ``np.random.default_rng([*key, e])``'s, a pure function of the key and the epoch, so the state a
    checkpoint needs is two integers (``epoch``, ``position``; ``seek`` restores them)."""

    def __init__(self, n: int, *key: int) -> None:
        self.n, self.key = n, key
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([*self.key, self.epoch]).permutation(self.n)

    def next(self) -> int:
        if self.position == self.n:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation()
        self.position += 1
        return int(self._order[self.position - 1])

    def seek(self, epoch: int, position: int) -> None:
        self.epoch, self.position = int(epoch), int(position)
        self._order = self._permutation()


@dataclass
class Task:
    """What a trainer supplies.

    ``loss(model, batch)`` → ``(loss_sum, n_supervised)`` of one micro-batch on this rank (called
    under autocast; ``train.losses`` has the losses).  ``tokens(batch)`` → input tokens it holds,
    padding excluded (metrics' ``tokens`` and tokens/s).  ``evaluate(model)`` → a dict of
    ``val_*`` metrics, called on the bare (un-DDP'd) model; it must reduce over ranks itself and
    switch the model to eval and back.  ``supervised``: log the running count of supervised tokens
    (``supervised_tokens``), for masked objectives where it differs from ``tokens``.
    ``train_metrics()`` → extra training metrics (the preference trainers' ``rewards/*``, accuracy)
    that ``loss`` accumulated since the previous call; called on every rank whenever a metrics line
    is written, so it may all-reduce.  ``samples(model)`` → a few generations of the final model
    (``{"prompt", "completion", ...}`` rows, ``train.generate.reply_samples``), called on the main rank
    only, once, after the last step; the loop writes them to ``OUT/samples.jsonl`` with the step, and
    ``winnow report`` shows them.
    """

    batches: Batches
    loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]
    tokens: Callable[[Any], int]
    evaluate: Callable[[torch.nn.Module], dict] | None = None
    supervised: bool = False
    label: str = "train"
    train_metrics: Callable[[], dict] | None = None
    samples: Callable[[torch.nn.Module], list[dict]] | None = None


SAMPLES_FILE = "samples.jsonl"


def write_samples(out: Path, step: int, rows: list[dict]) -> None:
    """Replace ``OUT/samples.jsonl``'s rows of ``step`` and later (a resumed or re-run end) by
    ``rows``, keeping earlier steps' (a run continued with more ``--max-steps``); atomic."""
    path = out / SAMPLES_FILE
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line)["step"]) < step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: dropped, as metrics.jsonl does
    new = [json.dumps({"step": step, **r}, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in kept + new))


@dataclass
class LoopSettings:
    max_steps: int
    accum: int
    lr: float
    warmup: int
    schedule: str
    min_lr_ratio: float
    cooldown: float
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    eval_every: int
    save_every: int
    log_every: int = 1
    keep_checkpoints: int = 3
    stop_after: int | None = None
    progress: bool = True
    compile: bool = False

    @classmethod
    def from_run(
        cls, run: dict, args: Any, *, max_steps: int, accum: int, lr: float, warmup: int, eval_every: int
    ) -> LoopSettings:
        """Settings from a trainer's resolved ``run`` dict (the shared flags, after resume) and the
        flags that are never saved (logging, progress, compile); the rest the trainer computed."""
        return cls(
            max_steps=max_steps,
            accum=accum,
            lr=lr,
            warmup=warmup,
            schedule=run["schedule"],
            min_lr_ratio=run["min_lr_ratio"],
            cooldown=run["cooldown"],
            weight_decay=run["weight_decay"],
            beta1=run["beta1"],
            beta2=run["beta2"],
            grad_clip=run["grad_clip"],
            eval_every=eval_every,
            save_every=run["save_every"],
            log_every=args.log_every,
            keep_checkpoints=args.keep_checkpoints,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            compile=args.compile,
        )

    def schedule_kw(self) -> dict:
        return dict(
            peak=self.lr,
            max_steps=self.max_steps,
            warmup=self.warmup,
            schedule=self.schedule,
            min_ratio=self.min_lr_ratio,
            cooldown=self.cooldown,
        )


def accumulate(
    train_model: torch.nn.Module,
    task: Task,
    accum: int,
    *,
    autocast,
    info: DistInfo,
    params: list[torch.nn.Parameter],
) -> tuple[float, float, float]:
    """Forward and backward ``accum`` micro-batches, then scale the gradients to those of the mean
    loss over every supervised token of the global batch (see the module docstring).

    Returns the global ``(loss_sum, supervised tokens, input tokens)``.  DDP all-reduces gradients
    only in the last micro-batch's backward (``no_sync`` before).
    """
    # loss sum, supervised tokens, input tokens of this rank (float64: exact counts up to 2^53)
    stats = torch.zeros(3, dtype=torch.float64, device=info.device)
    for micro in range(accum):
        batch = task.batches.next_batch()
        last = micro == accum - 1
        sync = train_model.no_sync() if info.distributed and not last else nullcontext()
        with sync:
            with autocast:
                total, n = task.loss(train_model, batch)
            total.backward()
        stats[0] += total.detach()
        stats[1] += n
        stats[2] += task.tokens(batch)
    all_reduce_sum(stats, info)
    loss_sum, n_sup, n_tok = stats.tolist()
    if n_sup > 0:
        grads = [p.grad for p in params if p.grad is not None]
        torch._foreach_mul_(grads, info.world_size / n_sup)
    return loss_sum, n_sup, n_tok


def run_loop(
    model: torch.nn.Module,
    task: Task,
    settings: LoopSettings,
    *,
    out: Path,
    info: DistInfo,
    dtype: torch.dtype,
    meta: dict,
    tokenizer_dir: str | Path | None,
    trainer_state: dict | None = None,
    flops_per_token: float | None = None,
    log: Callable[..., None] = lambda *a: None,
) -> int:
    """Train ``model`` (already on ``info.device``, weights loaded) for ``settings.max_steps`` steps.

    ``trainer_state``: a checkpoint's trainer.pt to continue from (``--resume``).  ``meta`` becomes
    every checkpoint's config.json (plus ``tokens``).  Returns the exit code: 0, or 128 + signal.
    """
    s = settings
    device = info.device
    autocast = make_autocast(device, dtype)
    sched = s.schedule_kw()
    optimizer = torch.optim.AdamW(
        param_groups(model, s.weight_decay),
        lr=s.lr,
        betas=(s.beta1, s.beta2),
        eps=1e-8,
        fused=device.type == "cuda",
    )
    step, tokens, supervised = 0, 0, 0
    if trainer_state is not None:
        ts = trainer_state
        optimizer.load_state_dict(ts["optimizer"])
        task.batches.load_state_dict(ts["data"])
        step, tokens = int(ts["step"]), int(ts["tokens"])
        supervised = int(ts.get("supervised_tokens", 0))
        set_rng_state(ts["rng"])
        if step >= s.max_steps:
            log(f"the checkpoint is at step {step} >= max steps {s.max_steps}: nothing to do")
            return 0
    train_model = parallelize(model, info, compile=s.compile)
    eval_model = train_model.module if info.distributed else train_model
    params = [p for p in model.parameters() if p.requires_grad]
    peak_fl = peak_flops(device, dtype)

    def checkpoint(at_step: int) -> None:
        if not info.is_main:
            return
        metrics.sync()  # the metrics of every step up to this one are on disk before the checkpoint
        state = {
            "step": at_step,
            "tokens": tokens,
            "optimizer": optimizer.state_dict(),
            "scheduler": {"name": s.schedule, "step": at_step, **sched},
            "data": task.batches.state_dict(),
            "rng": rng_state(),
        }
        extra = {"tokens": tokens}
        if task.supervised:
            state["supervised_tokens"] = extra["supervised_tokens"] = supervised
        save_checkpoint(
            out,
            at_step,
            model,
            tokenizer_dir=tokenizer_dir,
            meta={**meta, **extra},
            trainer_state=state,
            keep_last=s.keep_checkpoints,
        )
        publish_output(out)  # --out on object storage: upload the new step, then its pointer

    out.mkdir(parents=True, exist_ok=True)
    resumed = trainer_state is not None
    metrics = Metrics(
        out / "metrics.jsonl", enabled=info.is_main, keep_through_step=step if resumed else None
    )
    progress = Progress(s.max_steps, step, enabled=info.is_main and s.progress, label=task.label)
    stop = torch.zeros(1, device=device)
    exit_code = 0
    try:
        with StopFlag() as flag:
            if not resumed and s.eval_every and task.evaluate is not None:
                start = {"step": 0, "tokens": 0, **({"supervised_tokens": 0} if task.supervised else {})}
                metrics.write({**start, **task.evaluate(eval_model)})
            t_start = time.perf_counter()
            stop_at = min(s.max_steps, step + s.stop_after) if s.stop_after else s.max_steps
            while step < stop_at:
                t0 = time.perf_counter()
                lr = lr_at(step, **sched)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum, n_sup, n_tok = accumulate(
                    train_model, task, s.accum, autocast=autocast, info=info, params=params
                )
                if n_sup == 0:
                    log(f"step {step + 1}: no supervised token in the whole batch (a zero gradient)")
                max_norm = s.grad_clip if s.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens += int(n_tok)
                supervised += int(n_sup)

                stop.fill_(flag.signum)
                signum = int(all_reduce_max(stop, info).item())  # every rank stops at the same step
                final = step == s.max_steps
                record = {}
                if step % s.log_every == 0 or final or signum:
                    dt = time.perf_counter() - t0
                    record = {"step": step, "tokens": tokens}
                    if task.supervised:
                        record["supervised_tokens"] = supervised
                    if n_sup > 0:
                        record["train_loss"] = loss_sum / n_sup
                    record.update(
                        lr=lr,
                        grad_norm=grad_norm.item(),
                        tokens_per_s=n_tok / dt,
                        elapsed_s=time.perf_counter() - t_start,
                    )
                    if task.train_metrics is not None:
                        record.update(task.train_metrics())
                    if peak_fl and flops_per_token:
                        record["mfu"] = flops_per_token * n_tok / dt / (peak_fl * info.world_size)
                if final and task.samples is not None and info.is_main:
                    write_samples(out, step, task.samples(eval_model))
                if s.eval_every and task.evaluate is not None and (step % s.eval_every == 0 or final):
                    base = {"step": step, "tokens": tokens}
                    if task.supervised:
                        base["supervised_tokens"] = supervised
                    record = {**base, **record, **task.evaluate(eval_model)}
                if record:
                    metrics.write(record)
                    progress.update(step, record)
                pause = step == stop_at and not final
                if final or signum or pause or (s.save_every and step % s.save_every == 0):
                    checkpoint(step)
                if signum:
                    log(f"stopped at step {step}; checkpoint saved. Continue with --resume.")
                    exit_code = 128 + signum
                    break
    finally:
        progress.close()
        metrics.close()
    if step < s.max_steps and not exit_code:
        log(f"--stop-after: paused at step {step} of {s.max_steps}; continue with --resume")
    elif not exit_code:
        log(f"done: {step} steps, {tokens:,} tokens; checkpoints in {out / 'checkpoints'}")
    return exit_code


def run_cli(
    name: str,
    trainer: Callable[[Any, DistInfo, Callable[..., None]], int],
    args: Any,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """A ``winnow train NAME`` command: ``trainer(args, info, log)`` inside the process group
    (torchrun's, or a single process), ``log`` printing on the main rank only; usage and data errors
    are one line and exit 2 (no traceback), a second Ctrl-C exits 130 (the first one saves a
    checkpoint and stops cleanly)."""
    try:
        if getattr(args, "out", None) is not None:
            args.out = output_dir(str(args.out))  # a URL: this rank's mirror (train.remote)
        info = init_distributed(args.device)
        try:
            log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if info.is_main else (lambda *a: None)
            return trainer(args, info, log)
        finally:
            shutdown_distributed()
    except (UsageError, *errors) as exc:
        print(f"winnow train {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the second Ctrl-C: no checkpoint of the current step
        print(f"winnow train {name}: aborted; --resume continues from the last checkpoint", file=sys.stderr)
        return 130
