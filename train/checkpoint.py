"""Checkpoints: one folder per saved step, written atomically, plus a ``latest`` pointer.

```
OUT/checkpoints/step-00000100/
    model.pt       model state_dict, fp32, keys of the bare model (no ``module.`` / ``_orig_mod.``)
    config.json    {"model": asdict(GPTConfig), "train": {...}, "step", "tokens", "data": {...}}
    tokenizer/     copy of the tokenizer folder the run trained with
    trainer.pt     optimizer, schedule, data-loader state, RNG states (only needed to resume)
OUT/checkpoints/latest   name of the newest complete checkpoint
```

Atomicity (``pipeline.atomic.atomic_dir``): everything is written into a hidden temp folder, every
file and the folder are fsynced, the folder is renamed to its final name (one ``rename(2)``, atomic
on POSIX), the parent directory is fsynced, and only then is ``latest`` replaced (temp file +
rename).  A crash at any
point leaves either the previous checkpoint set or the new one; a half-written temp folder is never
read (``resolve_checkpoint`` only considers ``step-*`` folders holding ``config.json`` and
``model.pt``) and is removed by the next save.  The cost is one extra fsync per file: for a
100M-parameter model (400 MB of fp32 weights + 800 MB of AdamW moments) that is well under a
second on local NVMe, negligible next to the minutes between saves.

All files are loadable with ``torch.load(..., weights_only=True)``: the trainer state holds only
tensors and plain Python values (no pickled classes), so loading a checkpoint runs no code.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_dir, atomic_write_text, remove_stale_temps
from train import remote

CHECKPOINTS = "checkpoints"
LATEST = "latest"
_STEP_RE = re.compile(r"^step-(\d{8,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _complete(step_dir: Path) -> bool:
    return (step_dir / "config.json").is_file() and (step_dir / "model.pt").is_file()


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete ``step-*`` folders under ``ckpt_root``, oldest step first (temp folders never count)."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_RE.match(child.name)
        if m and child.is_dir() and _complete(child):
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    *,
    tokenizer_dir: str | Path | None,
    meta: dict,
    trainer_state: dict | None,
    keep_last: int = 3,
) -> Path:
    """Write ``OUT/checkpoints/step-<step>/`` atomically, point ``latest`` at it, prune old ones.

    ``meta`` becomes config.json (``model`` is filled from ``model.config`` when absent, ``step``
    is always ``step``).  ``keep_last`` complete checkpoints are kept (the new one included);
    ``keep_last <= 0`` keeps all.  Saving a step that already exists replaces it (a resumed run
    that re-reaches a saved step after a crash writes the same content again).
    """
    root = Path(out_dir) / CHECKPOINTS
    remove_stale_temps(root)  # left by a writer that crashed; one writer per run (rank 0)
    name = step_dir_name(step)
    bare = unwrap_model(model)
    # Saving a step that exists replaces it whole (atomic_dir moves the old folder aside first).
    with atomic_dir(root / name) as tmp:
        state = {
            k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
            for k, v in bare.state_dict().items()
        }
        torch.save(state, tmp / "model.pt")
        config = dict(meta)
        if "model" not in config and hasattr(bare, "config"):
            config["model"] = asdict(bare.config)
        config["step"] = int(step)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
    final = root / name
    atomic_write_text(root / LATEST, name + "\n")

    if keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder meant by ``path``: a step folder, ``OUT/checkpoints`` or ``OUT``.

    For the latter two, ``latest`` names the checkpoint; when it is missing or names a folder that
    is gone (pruned, or deleted by hand) the newest complete ``step-*`` folder is used.  A URL
    (``s3://...``) is read from this node's copy (``train.remote.mirror_checkpoint``).
    """
    if remote.is_remote(path):
        path = remote.mirror_checkpoint(str(path))
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path {p} does not exist")
    if p.is_dir() and _complete(p):
        return p
    root = p / CHECKPOINTS if (p / CHECKPOINTS).is_dir() else p
    latest = root / LATEST
    if latest.is_file():
        candidate = root / latest.read_text().strip()
        if candidate.is_dir() and _complete(candidate):
            return candidate
    found = list_checkpoints(root)
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {p}: expected a step folder (with config.json and model.pt), "
            f"a training output folder or its {CHECKPOINTS}/ folder"
        )
    return found[-1]


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """``{"dir", "config": GPTConfig, "meta", "state_dict", "trainer_state"}``; trainer_state is None
    for a weights-only checkpoint (no trainer.pt)."""
    from train.model import GPTConfig

    d = resolve_checkpoint(path)
    meta = json.loads((d / "config.json").read_text())
    if "model" not in meta:
        raise ValueError(f"{d / 'config.json'} has no 'model' section")
    config = GPTConfig(**meta["model"])
    state_dict = torch.load(d / "model.pt", map_location=map_location, weights_only=True)
    trainer = d / "trainer.pt"
    trainer_state = (
        torch.load(trainer, map_location=map_location, weights_only=True) if trainer.is_file() else None
    )
    return {
        "dir": d,
        "config": config,
        "meta": meta,
        "state_dict": state_dict,
        "trainer_state": trainer_state,
    }


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """``(GPT in eval mode on device, Tokenizer)`` from a checkpoint (see ``resolve_checkpoint``)."""
    from tokenizer import Tokenizer
    from train.model import GPT

    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt["meta"].get("kind") == "reward":
        # a scalar head on the backbone: it scores text, it has no next-token distribution to use
        raise ValueError(
            f"{ckpt['dir']} is a reward model (kind: reward): it scores text and cannot generate; "
            "use it as the reward of PPO, or generate with the SFT checkpoint it was trained from"
        )
    model = GPT(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    tok_dir = ckpt["dir"] / "tokenizer"
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"checkpoint {ckpt['dir']} has no tokenizer/ folder")
    return model, Tokenizer.from_dir(tok_dir)
