"""``tokenizer_train`` and ``tokenize``: barrier stages that end a pipeline where training starts.

``tokenizer_train`` (steps: ``sample`` per part, then one ``train``): an even, deterministic
sample of the text so far (``tokenizer.sample``) trains byte-level BPE with the GPT-4 split regex
(rustbpe, ``tokenizer.train``) and writes ``OUTPUT/tokenizer/`` (``tokenizer.json`` for Hugging
Face, ``tokenizer.tiktoken`` ranks, ``winnow_tokenizer.json``).

``tokenize`` (steps: ``encode`` per part, ``shard`` per output shard): every document's ids +
``<|endoftext|>`` in ``OUTPUT/tokens/{train,val}/shard-NNNNN.parquet``, globally shuffled by a
keyed hash of the document id, and ``OUTPUT/tokens/manifest.json`` (``tokenizer.shards``).  Its
tokenizer is ``OUTPUT/tokenizer/`` from a ``tokenizer_train`` earlier in the pipeline, or the
folder given as ``tokenizer: PATH`` (copied into ``OUTPUT/tokenizer/`` so that the run directory
is self-contained).

Both pass every document through unchanged to the stages after them; each step item is a
resumable Ray task (``BarrierContext.map``), so a killed run redoes only unfinished items.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from pipeline.atomic import atomic_dir, atomic_write_json
from pipeline.registry import register_stage
from pipeline.rundir import part_name
from pipeline.stage import BarrierContext, Params, Resources, RunFailed, Stage, Task


class _PassThrough(Stage):
    """A barrier stage whose per-row part keeps every document as it is: the executor hands the
    previous phase's parts on instead of copying them (``Stage.passes_through``)."""

    barrier = True
    passes_through = True

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[str | None]]:
        return batch, [None] * batch.num_rows


def _parts(ctx: BarrierContext) -> list[Task]:
    return sorted(ctx.tasks, key=lambda t: t.index)


def _corpus_bytes(tasks: list[Task]) -> int:
    from tokenizer.sample import text_bytes

    return sum(text_bytes(t.part) for t in tasks)


# --- tokenizer_train ------------------------------------------------------------------------------


class TokenizerTrainParams(Params):
    vocab_size: int = Field(
        32768, ge=263, le=2**24, description="total vocabulary, the special tokens included"
    )
    special_tokens: list[str] = Field(
        default_factory=list, description="extra special tokens, after the six fixed ones"
    )
    sample_chars: int = Field(
        500_000_000, ge=1000, description="target size of the training sample (characters)"
    )
    seed: int = Field(0, description="seed of the sample's keyed hash")

    @field_validator("special_tokens")
    @classmethod
    def _specials(cls, value: list[str]) -> list[str]:
        from tokenizer.encoding import SPECIAL_TOKENS

        for s in value:
            if not s or s.strip() != s:
                raise ValueError(f"special token {s!r} is empty or has surrounding spaces")
            if s in SPECIAL_TOKENS:
                raise ValueError(f"{s!r} is always a special token; list only extra ones")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate special tokens in {value}")
        return value

    @model_validator(mode="after")
    def _room(self) -> TokenizerTrainParams:
        from tokenizer.encoding import SPECIAL_TOKENS

        need = 256 + len(SPECIAL_TOKENS) + len(self.special_tokens) + 1
        if self.vocab_size < need:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no room for merges (need >= {need})")
        return self


def train_step(
    files: list[str], vocab_size: int, special_tokens: list[str], out_dir: str, trained_on: dict
) -> dict[str, Any]:
    from tokenizer.encoding import HF_FILE, META_FILE, RANKS_FILE
    from tokenizer.sample import iter_sample
    from tokenizer.train import train_tokenizer

    d = train_tokenizer(
        iter_sample(files), vocab_size, out_dir, extra_special_tokens=special_tokens, trained_on=trained_on
    )
    meta = json.loads((d / META_FILE).read_text())
    return {
        "vocab_size": meta["vocab_size"],
        "tokenizer_json_sha256": meta["tokenizer_json_sha256"],
        "files": {str(d / f): (d / f).stat().st_size for f in (RANKS_FILE, HF_FILE, META_FILE)},
    }


@register_stage
class TokenizerTrain(_PassThrough):
    """Byte-level BPE (GPT-4 regex) trained on an even sample of the corpus: ``OUTPUT/tokenizer/``."""

    name = "tokenizer_train"
    Params = TokenizerTrainParams
    resources = Resources(cpus=1, memory_mb=1024)

    def run_barrier(self, ctx: BarrierContext) -> None:
        from tokenizer.sample import sample_part

        p = self.params
        assert self.work is not None
        tasks = _parts(ctx)
        corpus = _corpus_bytes(tasks)
        fraction = min(1.0, p.sample_chars / corpus) if corpus else 1.0
        sampled = ctx.map(
            "sample",
            sample_part,
            {
                part_name(t.index): {
                    "part": t.part,
                    "out": str(self.work / "sample" / f"{part_name(t.index)}.parquet"),
                    "fraction": fraction,
                    "seed": p.seed,
                }
                for t in tasks
            },
        )
        keys = sorted(sampled)
        totals = {k: sum(sampled[key][k] for key in keys) for k in ("documents", "chars", "sampled_chars")}
        totals["sampled_documents"] = sum(sampled[key]["sampled_documents"] for key in keys)
        totals["sampled_pieces"] = sum(sampled[key]["sampled_pieces"] for key in keys)
        if totals["sampled_chars"] == 0:
            raise RunFailed(
                f"tokenizer_train: no text to train on ({totals['documents']} documents reach the stage)"
            )
        trained_on = {
            "pipeline": ctx.spec.name,
            "config_hash": ctx.spec.config_hash(),
            "seed": p.seed,
            "sample_fraction": round(fraction, 9),
            "corpus_documents": totals["documents"],
            "corpus_chars": totals["chars"],
            "documents": totals["sampled_documents"],
            "pieces": totals["sampled_pieces"],
            "chars": totals["sampled_chars"],
        }
        # The chunk table of the trainer grows with the distinct pre-tokens of the sample (~150 MB
        # for 21 MB of English, bench/tokenizer_bench.py), so size the reservation by the sample.
        memory = int(max(1024, 512 + 8 * totals["sampled_chars"] / 2**20))
        trained = ctx.map(
            "train",
            train_step,
            {
                "tokenizer": {
                    "files": [next(iter(sampled[key]["files"])) for key in keys],
                    "vocab_size": p.vocab_size,
                    "special_tokens": list(p.special_tokens),
                    "out_dir": str(ctx.run_dir.root / "tokenizer"),
                    "trained_on": trained_on,
                }
            },
            Resources(cpus=1, memory_mb=memory),
        )["tokenizer"]
        shutil.rmtree(self.work / "sample", ignore_errors=True)  # the folder is written: no longer needed
        self.stats.seconds += sum(r["seconds"] for r in sampled.values()) + trained["seconds"]
        self.stats.extra.update(
            {
                **{k: v for k, v in trained_on.items() if k not in ("pipeline", "config_hash")},
                "vocab_size": trained["vocab_size"],
                "vocab_size_requested": p.vocab_size,
                "tokenizer_json_sha256": trained["tokenizer_json_sha256"],
            }
        )


# --- tokenize ---------------------------------------------------------------------------------------


class TokenizeParams(Params):
    tokenizer: str | None = Field(
        None,
        description="tokenizer folder or run directory holding tokenizer/ (default: this run's, "
        "from a tokenizer_train stage earlier)",
    )
    seed: int = Field(0, description="seed of the shuffle and of the validation split")
    val_fraction: float = Field(0.005, ge=0.0, lt=1.0, description="share of documents held out")
    shard_tokens: int = Field(50_000_000, ge=1000, description="target tokens per output shard")

    dir_fields: ClassVar[tuple[str, ...]] = ("tokenizer",)


def _shard_key(name: str) -> str:
    return name.removesuffix(".parquet").replace("/", "-")


@register_stage
class Tokenize(_PassThrough):
    """Every document to token ids + <|endoftext|>, globally shuffled shards: ``OUTPUT/tokens/``."""

    name = "tokenize"
    Params = TokenizeParams
    resources = Resources(cpus=1, memory_mb=2048)

    @classmethod
    def check_pipeline(cls, params: Params, before: list[str]) -> list[str]:
        assert isinstance(params, TokenizeParams)
        trained = "tokenizer_train" in before
        if params.tokenizer is None and not trained:
            return [
                "no tokenizer: put a tokenizer_train stage before it, or set 'tokenizer: PATH' "
                "(a tokenizer folder, or a run directory with tokenizer/)"
            ]
        if params.tokenizer is not None and trained:
            return [
                "'tokenizer' is set but tokenizer_train runs earlier and writes OUTPUT/tokenizer/: "
                "use one or the other"
            ]
        if params.tokenizer is not None and Path(params.tokenizer).is_dir():
            from tokenizer.encoding import find_tokenizer_dir

            try:
                find_tokenizer_dir(params.tokenizer)
            except FileNotFoundError as exc:
                return [f"tokenizer: {exc}"]
        return []

    def _tokenizer_dir(self, ctx: BarrierContext) -> Path:
        """``OUTPUT/tokenizer``: trained earlier in the run, or a copy of ``tokenizer: PATH``."""
        from tokenizer.encoding import META_FILE, Tokenizer, find_tokenizer_dir

        own = ctx.run_dir.root / "tokenizer"
        if self.params.tokenizer is None:
            if not (own / META_FILE).is_file():
                raise FileNotFoundError(f"{own} is missing: the tokenizer_train stage did not write it")
            return own
        source = find_tokenizer_dir(self.params.tokenizer)
        wanted = Tokenizer.from_dir(source).sha256
        if (own / META_FILE).is_file() and Tokenizer.from_dir(own).sha256 == wanted:
            return own
        with atomic_dir(own) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        return own

    def run_barrier(self, ctx: BarrierContext) -> None:
        from tokenizer.encoding import Tokenizer
        from tokenizer.shards import bucket_bits, encode_part, plan_shards, token_dtype, write_shard

        p = self.params
        assert self.work is not None
        tok_dir = self._tokenizer_dir(ctx)
        tok = Tokenizer.from_dir(tok_dir)
        tasks = _parts(ctx)
        # ~4 bytes of text per token (bench: 4.6 for English at 32k); only sets bucket granularity
        bits = bucket_bits(_corpus_bytes(tasks) // 4, p.shard_tokens)
        encoded = ctx.map(
            "encode",
            encode_part,
            {
                part_name(t.index): {
                    "part": t.part,
                    "index": t.index,
                    "out": str(self.work / "encoded" / f"{part_name(t.index)}.arrow"),
                    "tokenizer": str(tok_dir),
                    "sha256": tok.sha256,
                    "seed": p.seed,
                    "val_fraction": p.val_fraction,
                    "bits": bits,
                }
                for t in tasks
            },
            Resources(cpus=1, memory_mb=2048),
        )
        for result in encoded.values():
            result["path"] = next(iter(result["files"]))
        shards = plan_shards(encoded, bits, p.shard_tokens)
        tokens_dir = ctx.run_dir.root / "tokens"
        written = ctx.map(
            "shard",
            write_shard,
            {
                _shard_key(s["name"]): {
                    "slices": s["slices"],
                    "out": str(tokens_dir / s["name"]),
                    "vocab_size": tok.vocab_size,
                }
                for s in shards
            },
            Resources(cpus=1, memory_mb=max(1024, 512 + 12 * p.shard_tokens // 2**20)),
        )
        splits: dict[str, dict] = {
            name: {"documents": 0, "tokens": 0, "shards": []} for name in ("train", "val")
        }
        for s in shards:
            r = written[_shard_key(s["name"])]
            split = splits[s["split"]]
            split["documents"] += r["documents"]
            split["tokens"] += r["tokens"]
            split["shards"].append(
                {
                    "path": s["name"],
                    "documents": r["documents"],
                    "tokens": r["tokens"],
                    "row_groups": r["row_groups"],
                }
            )
        manifest = {
            "format": "winnow.tokens/1",
            "vocab_size": tok.vocab_size,
            "dtype": token_dtype(tok.vocab_size).name,
            "eot_id": tok.eot_id,
            "tokenizer": {
                "path": "../tokenizer",
                "tokenizer_json_sha256": tok.sha256,
                **({"source": p.tokenizer} if p.tokenizer else {}),
            },
            "pipeline": {"name": ctx.spec.name, "config_hash": ctx.spec.config_hash()},
            "seed": p.seed,
            "val_fraction": p.val_fraction,
            "shard_tokens": p.shard_tokens,
            "empty_documents_skipped": sum(r["empty_documents"] for r in encoded.values()),
            "splits": splits,
        }
        atomic_write_json(tokens_dir / "manifest.json", manifest)
        shutil.rmtree(self.work / "encoded", ignore_errors=True)  # as large as the shards themselves

        docs = sum(s["documents"] for s in splits.values())
        tokens = sum(s["tokens"] for s in splits.values())
        text_bytes = sum(r["text_bytes"] for r in encoded.values())
        self.stats.seconds += sum(r["seconds"] for step in (encoded, written) for r in step.values())
        self.stats.extra.update(
            {
                "documents": docs,
                "tokens": tokens,
                "train_documents": splits["train"]["documents"],
                "train_tokens": splits["train"]["tokens"],
                "val_documents": splits["val"]["documents"],
                "val_tokens": splits["val"]["tokens"],
                "shards": len(shards),
                "empty_documents_skipped": manifest["empty_documents_skipped"],
                "text_bytes": text_bytes,
                "bytes_per_token": round(text_bytes / max(1, tokens - docs), 4),
                "tokenizer_json_sha256": tok.sha256,
                "bucket_bits": bits,
            }
        )
