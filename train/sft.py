"""``winnow train sft``: supervised fine-tuning of a checkpoint on conversations.

**Rows.**  Each ``--data`` / ``--val`` file (``.jsonl`` or ``.jsonl.gz``) holds one format, detected
from its first row: ``messages`` (``[{role, content}]``, at least one assistant turn),
``prompt``/``response`` (a user turn and the assistant's reply; ``prompt`` may also be a message
list), or Alpaca ``instruction``/``input``/``output`` (user turn = instruction, plus ``"\\n\\n" +
input`` when input is non-empty).  Every row is validated; a bad one is a DataError naming the file,
the line and the field.  Rendering is ``tokenizer.chat.render_conversation`` (the one chat format):
the loss mask is 1 on assistant content and its ``<|end|>``, so targets are the ids shifted by one
with ``IGNORE`` wherever the next token is not the assistant's.

**Truncation.**  A conversation longer than the context (``block_size + 1`` tokens: inputs and
shifted targets) keeps its first ``block_size + 1`` tokens (TRL's ``keep_start``, nanochat's
``max_tokens``): the instruction survives, the reply is cut, a reply cut before its first token
leaves nothing to learn and the row is dropped.  Both counts are logged and recorded in the
checkpoint's config.json (``data.truncated``, ``data.dropped``).  On ``sft_dev`` with a 512-token
context: 18.7 % of rows exceed it.

**Packing** (default).  Conversations are packed into windows of ``block_size`` positions by
best-fit decreasing (each goes into the fullest window it fits, longest first; O(n log n) with a
sorted list of free space), and the model gets ``doc_ids`` so attention stays inside each
conversation and positions restart (a block-diagonal causal mask): a packed window's loss sum
equals the sum of its conversations' losses alone (``tests/test_sft.py``, 1e-5), unlike naive
concatenation (MeetKai/functionary #265: 37.55 vs 44.14).  Windows are built once; each epoch
visits them in a new seeded order.  The explicit mask gives up SDPA's fused causal kernel, at
~5 % of the tokens/s on this CPU, while padding would waste 58 % of the positions on ``sft_dev``:
packing trains 1.68× padding's tokens/s (bench/README.md §13).  ``--no-packing``: one conversation
per row, right-padded to the longest row of its micro-batch (padding targets ``IGNORE``; causal
attention never lets a real token see a later pad), the usual collator.

**Batches.**  A step takes ``--batch-rows`` windows (rows) in ``accum`` micro-batches of
``--micro-batch`` per rank; global row ``k`` goes to rank ``k mod world``, as in pretraining.  The
loop divides the gradient by the supervised tokens of the whole global batch (``train.loop``), so
rows with few assistant tokens do not weigh more.  Resume state: epoch and row position.

**Defaults** (fine-tuning, not pretraining): lr 0.1 × the base model's ``peak_lr()``, 3 % warmup,
cosine to 0, no weight decay (TRL's default 0.0), grad clip 1.0, one epoch.

**Lineage.**  config.json has ``kind: "sft"``, ``parent`` (base checkpoint path, step, sha256 of its
config.json, its kind, and its own ``data`` and ``parent``: through a pretraining parent, the
manifests of the pipeline run that made the token shards) and the sha256 of every data file.
"""

from __future__ import annotations

import argparse
import atexit
import bisect
import gzip
import hashlib
import importlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tokenizer.chat import ChatFormatError, render_conversation, require_chat_tokens, validate_messages
from train import remote
from train.checkpoint import load_checkpoint, resolve_checkpoint
from train.data import DataError, load_tokenizer
from train.generate import reply_samples
from train.loop import (
    FINETUNE_OPTIM_DEFAULTS,
    EpochOrder,
    LoopSettings,
    Task,
    UsageError,
    check_settings,
    make_autocast,
    merge_settings,
    open_output,
    pick_dtype,
    run_cli,
    run_loop,
    seed_everything,
    to_device,
)
from train.losses import IGNORE, token_cross_entropy
from train.model import GPT
from train.parallel import DistInfo, all_reduce_sum

DEFAULTS = {
    **FINETUNE_OPTIM_DEFAULTS,
    "micro_batch": 8,
    "seed": 0,
    "eval_every": 100,
    "save_every": 500,
    "packing": True,
}
RUN_DEFINING = (
    "base",
    "data",
    "val",
    "val_fraction",
    "packing",
    "batch_rows",
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
)
RESUMABLE = ("micro_batch", "max_steps", "epochs", "eval_every", "save_every")
FORMATS = ("messages", "prompt/response", "alpaca")


# --------------------------------------------------------------------------------------------------
# Rows → conversations


def _read_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line; DataError naming the line on bad JSON."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                yield n, row
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def detect_format(row: dict, where: str) -> str:
    if "messages" in row:
        return "messages"
    if "prompt" in row and "response" in row:
        return "prompt/response"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise DataError(
        f"{where}: unknown row format (fields {sorted(row)}); expected `messages`, "
        "`prompt`+`response`, or `instruction`+`input`+`output`"
    )


def _text(row: dict, field: str, where: str, *, optional: bool = False) -> str:
    value = row.get(field)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        got = "missing" if field not in row else type(value).__name__
        raise DataError(f"{where}: field `{field}` must be a string ({got})")
    return value


def row_messages(row: dict, fmt: str, where: str) -> list[dict]:
    """The conversation of one row of format ``fmt``; DataError naming the field when malformed."""
    if fmt == "messages":
        messages, field = row.get("messages"), "messages"
    elif fmt == "prompt/response":
        prompt, field = row.get("prompt"), "prompt"
        if isinstance(prompt, list):
            messages = [*prompt, {"role": "assistant", "content": _text(row, "response", where)}]
        else:
            messages = [
                {"role": "user", "content": _text(row, "prompt", where)},
                {"role": "assistant", "content": _text(row, "response", where)},
            ]
    else:
        instruction = _text(row, "instruction", where)
        extra = _text(row, "input", where, optional=True)
        user = instruction + ("\n\n" + extra if extra else "")
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(row, "output", where)},
        ]
        field = "instruction"
    try:
        validate_messages(messages)
    except ChatFormatError as exc:
        raise DataError(f"{where}: field `{field}`: {exc}") from None
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field `{field}`: no assistant message (nothing to learn)")
    return messages


def read_conversations(path: str | Path) -> tuple[list[list[dict]], dict]:
    """All conversations of a file and its lineage ``{path, sha256, rows, format}``."""
    path = Path(path)
    fmt, convs = None, []
    for n, row in _read_lines(path):
        where = f"{path}:{n}"
        fmt = fmt or detect_format(row, where)
        convs.append(row_messages(row, fmt, where))
    if not convs:
        raise DataError(f"{path}: no rows (an empty file)")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return convs, {"path": str(path), "sha256": sha, "rows": len(convs), "format": fmt}


# --------------------------------------------------------------------------------------------------
# Conversations → examples → packed rows


@dataclass
class Examples:
    """Rendered conversations: inputs ``x[i]`` and targets ``y[i]`` (IGNORE = not supervised)."""

    x: list[np.ndarray]
    y: list[np.ndarray]
    truncated: int = 0
    dropped: int = 0

    def lengths(self) -> list[int]:
        return [len(a) for a in self.x]


def render_examples(tokenizer, conversations: Sequence[Sequence[dict]], block_size: int) -> Examples:
    """Render, truncate to ``block_size + 1`` tokens (keep the start), shift, drop rows left with no
    supervised target (see the module docstring)."""
    ex = Examples([], [])
    for messages in conversations:
        ids, mask = render_conversation(tokenizer, messages)
        if len(ids) > block_size + 1:
            ids, mask = ids[: block_size + 1], mask[: block_size + 1]
            ex.truncated += 1
        ids_a, mask_a = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
        y = np.where(mask_a[1:], ids_a[1:], IGNORE)
        if not (y != IGNORE).any():
            ex.dropped += 1
            continue
        ex.x.append(ids_a[:-1])
        ex.y.append(y)
    return ex


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices grouped into bins of total length <= ``capacity``.

    Longest first, each into the bin with the least free space that still fits it (a sorted list of
    (free, bin) and a binary search: O(n log n) searches plus list inserts).  Deterministic: ties
    break on the index.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (free space, bin index), sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} of length {n} exceeds the capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            bins.append([i])
            left, b = capacity - n, len(bins) - 1
        else:
            space, b = free.pop(k)
            bins[b].append(i)
            left = space - n
        if left > 0:
            bisect.insort(free, (left, b))
    return bins


def collate(examples: Examples, rows: Sequence[Sequence[int]], pad_id: int, packed: bool):
    """(x, y, doc_ids or None, non-pad tokens): rows right-padded to the longest; with ``packed``,
    ``doc_ids`` numbers each row's conversations (padding gets its own id)."""
    width = max(sum(len(examples.x[i]) for i in row) for row in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    doc = torch.zeros((len(rows), width), dtype=torch.long) if packed else None
    n = 0
    for r, row in enumerate(rows):
        at = 0
        for d, i in enumerate(row):
            length = len(examples.x[i])
            x[r, at : at + length] = torch.from_numpy(examples.x[i])
            y[r, at : at + length] = torch.from_numpy(examples.y[i])
            if doc is not None:
                doc[r, at : at + length] = d
            at += length
        if doc is not None:
            doc[r, at:] = len(row)
        n += at
    return x, y, doc, n


class SFTBatches:
    """Micro-batches of one rank: ``(x, y, doc_ids | None, tokens)``; resumable (epoch, position)."""

    def __init__(
        self,
        examples: Examples,
        *,
        block_size: int,
        micro_batch: int,
        pad_id: int,
        packing: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.examples, self.micro_batch, self.pad_id = examples, micro_batch, pad_id
        self.packing, self.seed, self.rank, self.world_size = packing, seed, rank, world_size
        lengths = examples.lengths()
        self.rows = pack(lengths, block_size) if packing else [[i] for i in range(len(lengths))]
        self.order = EpochOrder(len(self.rows), seed)

    def _next_row(self) -> list[int]:
        return self.rows[self.order.next()]

    def next_batch(self):
        rows = [self._next_row() for _ in range(self.micro_batch * self.world_size)]
        return collate(self.examples, rows[self.rank :: self.world_size], self.pad_id, self.packing)

    def state_dict(self) -> dict:
        return {
            "format": "winnow.sft_batches/1",
            "epoch": self.order.epoch,
            "position": self.order.position,
            "rows": len(self.rows),
            "packing": self.packing,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != "winnow.sft_batches/1":
            raise DataError(f"unknown SFT data state format {state.get('format')!r}")
        if (state["rows"], state["packing"], state["seed"]) != (len(self.rows), self.packing, self.seed):
            raise DataError(
                f"SFT data state was saved for {state['rows']} rows (packing {state['packing']}, seed "
                f"{state['seed']}); this run has {len(self.rows)} (packing {self.packing}, seed {self.seed})"
            )
        self.order.seek(state["epoch"], state["position"])


def masked_loss(device: torch.device):
    """The SFT loss: cross-entropy summed over supervised targets (assistant tokens)."""

    def loss(model, batch):
        x, y, doc, _ = batch
        doc_ids = to_device(doc, device) if doc is not None else None
        return token_cross_entropy(model(to_device(x, device), doc_ids=doc_ids), to_device(y, device))

    return loss


def make_evaluate(
    examples: Examples,
    *,
    micro_batch: int,
    packing: bool,
    block_size: int,
    pad_id: int,
    device: torch.device,
    autocast,
    info: DistInfo,
):
    """val_loss: mean over every supervised token of the validation set (rows dealt to ranks)."""
    rows = pack(examples.lengths(), block_size) if packing else [[i] for i in range(len(examples.x))]
    mine = rows[info.rank :: info.world_size]
    loss = masked_loss(device)

    @torch.no_grad()
    def evaluate(model) -> dict:
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        for j in range(0, len(mine), micro_batch):
            with autocast:
                total, n = loss(model, collate(examples, mine[j : j + micro_batch], pad_id, packing))
            sums[0] += total
            sums[1] += n
        model.train()
        all_reduce_sum(sums, info)
        return {"val_loss": (sums[0] / sums[1]).item()} if sums[1] > 0 else {}

    return evaluate


# --------------------------------------------------------------------------------------------------
# The run


def resolve_base_run(
    args: argparse.Namespace,
    saved: dict | None,
    *,
    defaults: dict,
    run_defining: tuple[str, ...],
    batch_flag: str,
) -> dict:
    """The settings of a trainer that starts from ``--base`` (sft, reward, dpo): the given flags
    over the saved run (resume) over ``defaults``, paths made absolute, and the checks they share;
    ``batch_flag`` names the trainer's global-batch flag (``batch_rows``, ``batch_pairs``)."""
    names = set(defaults) | set(run_defining) | set(RESUMABLE)
    given = {name: getattr(args, name, None) for name in names}
    for name in ("base", "val"):
        if given[name] is not None:
            given[name] = remote.absolute(given[name])  # a checkpoint URL stays a URL
    if given["data"] is not None:
        given["data"] = [os.path.abspath(p) for p in given["data"]]
    run = merge_settings(given, saved, defaults=defaults, fixed=run_defining)
    if args.max_steps is not None or args.epochs is not None:  # the run's length: given, else saved
        run["max_steps"], run["epochs"] = args.max_steps, args.epochs
    if not run["base"]:
        raise UsageError("--base CKPT is required (the checkpoint to start from)")
    if not run["data"]:
        raise UsageError("--data FILE.jsonl is required")
    vf = run["val_fraction"]
    if vf is not None and not 0 < vf < 1:
        raise UsageError(f"--val-fraction must be in (0, 1) (got {vf})")
    if run["epochs"] is not None and run["epochs"] <= 0:
        raise UsageError(f"--epochs must be > 0 (got {run['epochs']})")
    if run[batch_flag] is not None and run[batch_flag] < 1:
        raise UsageError(f"--{batch_flag.replace('_', '-')} must be >= 1 (got {run[batch_flag]})")
    check_settings(run, args)
    return run


def resolve_args(args: argparse.Namespace, saved: dict | None) -> dict:
    return resolve_base_run(
        args, saved, defaults=DEFAULTS, run_defining=RUN_DEFINING, batch_flag="batch_rows"
    )


def parent_lineage(base_dir: Path, base: dict) -> dict:
    """What a checkpoint records of the checkpoint it started from (and, through it, the pipeline
    run that made the pretraining data)."""
    return {
        "path": remote.url_for(base_dir) or str(base_dir),  # a checkpoint read from a URL: the URL
        "step": base["meta"].get("step"),
        "config_sha256": hashlib.sha256((base_dir / "config.json").read_bytes()).hexdigest(),
        "kind": base["meta"].get("kind", "pretrain"),
        "data": base["meta"].get("data"),
        "parent": base["meta"].get("parent"),
    }


def copy_base_tokenizer(base_dir: Path, out: Path, info: DistInfo) -> Path:
    """The run's own copy of the base's tokenizer, ``OUT/tokenizer``, which every checkpoint copies
    (never a checkpoint's folder, which pruning may delete).  Ranks other than the main one get a
    private temp copy: ranks must not write one folder at once."""
    tok_dir = out / "tokenizer"
    if not info.is_main:
        tok_dir = Path(tempfile.mkdtemp(prefix="winnow-train-")) / "tokenizer"
        atexit.register(shutil.rmtree, tok_dir.parent, True)
    elif tok_dir.exists():
        shutil.rmtree(tok_dir)  # left by a run that failed before its first checkpoint
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base_dir / "tokenizer", tok_dir)
    return tok_dir


def read_train_and_val(
    run: dict, reader: Callable[[str], tuple[list, dict]]
) -> tuple[list, list, list, dict | None]:
    """(train rows, their files' lineage, val rows, val lineage) from ``--data`` and ``--val`` or a
    seeded ``--val-fraction`` hold-out; ``reader(path) -> (rows, lineage)``."""
    rows, files = [], []
    for path in run["data"]:
        got, lineage = reader(path)
        rows += got
        files.append(lineage)
    val, val_lineage = [], None
    if run["val"]:
        val, val_lineage = reader(run["val"])
    elif run["val_fraction"]:
        rows, val = _split(rows, run["val_fraction"], run["seed"])
        val_lineage = {"fraction": run["val_fraction"], "rows": len(val), "seed": run["seed"]}
    return rows, files, val, val_lineage


def _chat_ready(model: GPT, tokenizer, tok_dir: Path, log):
    """``(model, tokenizer)`` with the chat tokens: as they are, or, for an imported base that lacks
    them, extended by ``train.import_hf.add_chat_tokens`` (which rewrites ``tok_dir``, the run's own
    copy of the base's tokenizer, and grows the model's embedding)."""
    try:
        require_chat_tokens(tokenizer)
        return model, tokenizer
    except ChatFormatError as exc:
        missing = str(exc)
    try:
        add = importlib.import_module("train.import_hf").add_chat_tokens
    except (ImportError, AttributeError):
        raise UsageError(
            f"{missing}; this winnow has no train.import_hf.add_chat_tokens to add them"
        ) from None
    try:
        added = add(model, tok_dir)
    except ValueError as exc:
        raise UsageError(f"{missing}; adding them failed: {exc}") from None
    tokenizer = load_tokenizer(tok_dir)
    require_chat_tokens(tokenizer)
    log(f"the base's tokenizer lacked the chat tokens: added {', '.join(added)} to the model and {tok_dir}")
    return model, tokenizer


def _split(convs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a seeded ``fraction`` of the rows held out (at least one), in file order."""
    k = max(1, round(fraction * len(convs)))
    if k >= len(convs):
        raise UsageError(f"--val-fraction {fraction} of {len(convs)} rows leaves no training rows")
    held = set(np.random.default_rng(seed).permutation(len(convs))[:k].tolist())
    return [c for i, c in enumerate(convs) if i not in held], [c for i, c in enumerate(convs) if i in held]


def sft(args: argparse.Namespace, info: DistInfo, log: Callable[..., None]) -> int:
    """``winnow train sft`` (run through ``train.loop.run_cli``)."""
    out = Path(args.out)
    ckpt = open_output(out, args.resume)
    run = resolve_args(args, ckpt["meta"]["train"] if ckpt else None)

    # ---- model and tokenizer: the run keeps its own tokenizer copy in OUT/tokenizer, which every
    # checkpoint copies (never a checkpoint's folder, which pruning may delete)
    tok_dir = out / "tokenizer"
    if ckpt is not None:
        model = GPT(ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
        tokenizer = load_tokenizer(tok_dir)
        require_chat_tokens(tokenizer)
        parent = ckpt["meta"]["parent"]
    else:
        try:
            base_dir = resolve_checkpoint(run["base"])
        except FileNotFoundError as exc:
            raise UsageError(f"--base: {exc}") from None
        base = load_checkpoint(base_dir)
        model = GPT(base["config"])
        model.load_state_dict(base["state_dict"])
        tok_dir = copy_base_tokenizer(base_dir, out, info)
        tokenizer = load_tokenizer(tok_dir)
        model, tokenizer = _chat_ready(model, tokenizer, tok_dir, log)
        parent = parent_lineage(base_dir, base)
    config = model.config
    device = info.device
    model.to(device)
    T = config.block_size

    # ---- data
    train_convs, files, val_convs, val_lineage = read_train_and_val(run, read_conversations)
    train_ex = render_examples(tokenizer, train_convs, T)
    val_ex = render_examples(tokenizer, val_convs, T)
    if not train_ex.x:
        raise DataError("no training row has an assistant token within the context")
    log(
        f"data: {len(train_convs):,} training rows ({train_ex.truncated:,} truncated to {T + 1} "
        f"tokens, keeping the start; {train_ex.dropped:,} dropped: no assistant token left), "
        f"{len(val_convs):,} validation rows ({val_ex.truncated:,} truncated, {val_ex.dropped:,} dropped)"
    )

    seed_everything(run["seed"])
    B, W = run["micro_batch"], info.world_size
    batches = SFTBatches(
        train_ex,
        block_size=T,
        micro_batch=B,
        pad_id=tokenizer.pad_id,
        packing=run["packing"],
        seed=run["seed"],
        rank=info.rank,
        world_size=W,
    )
    batch_rows = run["batch_rows"] or B * W
    if batch_rows % (B * W):
        raise UsageError(f"--batch-rows {batch_rows} is not a multiple of micro-batch × world = {B} × {W}")
    accum = batch_rows // (B * W)
    if run["max_steps"] is not None:
        max_steps = run["max_steps"]
    else:
        epochs = run["epochs"] if run["epochs"] is not None else 1.0
        max_steps = max(1, math.ceil(epochs * len(batches.rows) / batch_rows))
    run["max_steps"], run["batch_rows"] = max_steps, batch_rows
    peak = run["lr"] if run["lr"] is not None else 0.1 * config.peak_lr()
    warmup = run["warmup"] if run["warmup"] is not None else max(0, round(0.03 * max_steps))
    run["lr"], run["warmup"] = peak, warmup

    dtype = pick_dtype(args.dtype, device)
    autocast = make_autocast(device, dtype)
    evaluate = None
    if run["eval_every"] and val_ex.x:
        evaluate = make_evaluate(
            val_ex,
            micro_batch=B,
            packing=run["packing"],
            block_size=T,
            pad_id=tokenizer.pad_id,
            device=device,
            autocast=autocast,
            info=info,
        )
    elif run["eval_every"]:
        log("no validation rows (no --val or --val-fraction): val_loss is not reported")

    supervised = sum(int((y != IGNORE).sum()) for y in train_ex.y)
    log(model.summary(T))
    log(
        f"batch: {batch_rows} {'packed windows' if run['packing'] else 'padded rows'} = {B} × {W} rank(s) × "
        f"{accum} accumulation; {len(batches.rows):,} rows per epoch ({supervised:,} supervised tokens); "
        f"{max_steps:,} steps; lr {peak:.3g} {run['schedule']}, warmup {warmup}; "
        f"{device.type} {str(dtype).removeprefix('torch.')}"
        + (f"; resuming at step {ckpt['trainer_state']['step']}" if ckpt else "")
    )
    meta = {
        "kind": "sft",
        "train": {**run, "dtype": args.dtype, "compile": args.compile, "world_size": W},
        "parent": parent,
        "data": {
            "files": files,
            "val": val_lineage,
            "examples": len(train_ex.x),
            "truncated": train_ex.truncated,
            "dropped": train_ex.dropped,
            "rows_per_epoch": len(batches.rows),
            "tokenizer_json_sha256": tokenizer.sha256,
        },
        "model": asdict(config),
    }
    task = Task(
        batches=batches,
        loss=masked_loss(device),
        tokens=lambda batch: batch[3],
        evaluate=evaluate,
        supervised=True,
        label="sft",
        samples=lambda m: reply_samples(m, tokenizer, (val_convs or train_convs)[:4]),
    )
    settings = LoopSettings.from_run(
        run, args, max_steps=max_steps, accum=accum, lr=peak, warmup=warmup, eval_every=run["eval_every"]
    )
    return run_loop(
        model,
        task,
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
    return run_cli("sft", sft, args, (DataError,))
