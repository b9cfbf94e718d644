"""Training output folders and checkpoints on object storage (``--out s3://bucket/prefix``,
``--base s3://...``, ``winnow generate --checkpoint s3://...``).

A store has no rename, and a checkpoint is a folder of several files that must appear whole, so a
trainer never writes to the store directly: it works in a node-local mirror of the output folder
(under ``$WINNOW_SCRATCH``, as the pipeline's run directories, ``pipeline.rundir``) exactly as in a
local folder, and after every checkpoint ``publish_output`` uploads what is new:

    metrics.jsonl, samples.jsonl, tokenizer/, caches → the new step folder's files (each object
    written once) → ``checkpoints/latest`` last → the step folders ``--keep-checkpoints`` pruned

so the store's ``latest`` only ever names a step folder that is complete there; a crash between
uploads leaves at worst a step folder that ``latest`` does not name (``resolve_checkpoint`` ignores
it, and the next checkpoint's upload overwrites nothing: step folders are new names).  metrics.jsonl
may be ahead of the checkpoint after a crash; ``--resume`` cuts it back as it does locally.

``--resume`` starts from the store: the mirror is emptied and filled with the folder's contents
(``--keep-checkpoints`` step folders at most), so a run resumes on another machine.  Each rank of a
distributed run has its own mirror; only the main rank saves checkpoints, so only it uploads.

Reading a checkpoint from a URL (``mirror_checkpoint``) downloads ``latest`` and the one step folder
it names (or the step folder given), once per node: files already mirrored at the store's size are
not fetched again.  Credentials and endpoints come from the environment, as for the pipeline
(``pipeline.storage``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline import storage
from pipeline.rundir import RunDir, scratch_dir

LATEST = "latest"  # train.checkpoint's pointer file name (not imported: checkpoint imports this module)
CHECKPOINTS = "checkpoints"

# this process's output mirrors: mirror root -> its RunDir (the URL)
_OUTPUTS: dict[Path, RunDir] = {}
# every mirror this process made (outputs and checkpoints read): mirror root -> URL
_MIRRORS: dict[Path, str] = {}


def is_remote(path: str | Path) -> bool:
    return storage.is_remote(str(path))


def absolute(path: str) -> str:
    """A path flag as the run records it: a URL as given, a local path made absolute."""
    return path if is_remote(path) else os.path.abspath(path)


def output_dir(out: str) -> str:
    """The folder a trainer writes for ``--out``: ``out`` itself when local; for a URL this rank's
    mirror, filled from the store (empty for a new run).  Called once per command (``run_cli``)."""
    if not is_remote(out):
        return out
    rank = os.environ.get("RANK", "0")
    rd = RunDir(out, scratch=scratch_dir(f"train-out:{rank}:{out.rstrip('/')}"))
    # the store is the truth: a mirror left by an earlier process may hold steps the store never got
    shutil.rmtree(rd.root, ignore_errors=True)
    rd.root.mkdir(parents=True)
    if storage.list_files(rd.url):
        rd.fetch(rd.root)
    _OUTPUTS[rd.root.resolve()] = rd
    _MIRRORS[rd.root.resolve()] = rd.url
    return str(rd.root)


def url_for(path: str | Path) -> str | None:
    """The URL a local path inside one of this process's mirrors stands for, else None: lineage
    records where a checkpoint lives, not the node-local copy it was read from."""
    p = Path(path).resolve()
    for root, url in _MIRRORS.items():
        if p == root or p.is_relative_to(root):
            rel = p.relative_to(root).as_posix()
            return url if rel == "." else f"{url}/{rel}"
    return None


def publish_output(out: str | Path) -> None:
    """Upload a mirrored output folder after a checkpoint (see the module docstring); no-op locally."""
    rd = _OUTPUTS.get(Path(out).resolve())
    if rd is None:
        return
    root = rd.root
    rd.publish_tree(root, exclude=(CHECKPOINTS,))
    ckpts = root / CHECKPOINTS
    steps = []
    if ckpts.is_dir():
        steps = sorted(p for p in ckpts.iterdir() if p.is_dir() and not p.name.startswith("."))
    for step in steps:
        rd.publish_tree(step)  # only files the store lacks: a finished step folder is uploaded once
    if (ckpts / LATEST).is_file():
        rd.publish(ckpts / LATEST)
    storage.invalidate(rd.url_of(ckpts))  # s3fs caches listings: the uploads above are not in them
    remote_steps = {rel.split("/", 1)[0] for rel in storage.list_files(rd.url_of(ckpts))}
    for gone in sorted(remote_steps - {p.name for p in steps} - {LATEST}):
        storage.remove(rd.url_of(ckpts / gone), recursive=True)


def mirror_checkpoint(url: str) -> Path:
    """A local copy of the checkpoint at ``url``: a step folder, or a training output folder (or its
    ``checkpoints/``), of which ``latest`` and the step folder it names are fetched."""
    base = url.rstrip("/")
    rd = RunDir(base, scratch=scratch_dir(f"train-ckpt:{base}"))
    _MIRRORS[rd.root.resolve()] = base
    files = storage.list_files(base)
    if not files:
        raise FileNotFoundError(f"checkpoint path {url} does not exist (nothing stored under it)")
    if "config.json" in files:  # a step folder
        return rd.fetch(rd.root)
    root = rd.root / CHECKPOINTS if f"{CHECKPOINTS}/{LATEST}" in files else rd.root
    pointer = rd.fetch(root / LATEST) if rd.exists(root / LATEST) else None
    if pointer is not None:
        rd.fetch(root / pointer.read_text().strip())
    else:  # no pointer: every step folder (resolve_checkpoint picks the newest complete one)
        rd.fetch(root)
    return rd.root
