"""Tokenizer training and encoding: winnow's trainer (rustbpe) vs HF ``tokenizers`` and sentencepiece.

Data: ``english_dev.jsonl.gz``; every 10th document is held back (134 docs, 2.75 MB), the other
1,204 (20.9 MB of UTF-8) are the training text.  The same vocabulary for all: 32,768 total =
32,762 ranks + 6 specials for winnow; HF and sentencepiece get ``vocab_size`` 32,762.

* ``train`` (a fresh child process per trainer and repeat, ``benchutil``: peak RSS of the child,
  which holds the ~24 MB of text for every trainer alike):
  - ``winnow``: ``tokenizer.train.train_ranks`` (rustbpe, GPT-4 regex) plus writing the whole
    folder (HF ``tokenizer.json`` with merges rebuilt from the ranks, tiktoken file): what the
    ``tokenizer_train`` stage's train step costs;
  - ``hf``: ``tokenizers`` BPE with the same pre-tokenizer (GPT-4 regex ``Split`` + ``ByteLevel``),
    ``BpeTrainer(vocab_size, min_frequency=0, initial_alphabet=ByteLevel.alphabet())``;
  - ``sentencepiece``: BPE, ``byte_fallback``, identity normalisation, lines of the documents.
  Both Rust trainers use every core (rayon); wall and CPU seconds are both reported.
  Compression: tokens of the held-back text (and of ``lid_dev``, 12.5k texts in ~400 languages).
* ``encode``: the winnow 32k tokenizer over all english_dev + lid_dev documents (26.6 MB), one
  thread: tiktoken (``Tokenizer.encode_ordinary`` per document) vs the same ``tokenizer.json``
  in HF ``tokenizers`` (``encode_batch`` with ``RAYON_RS_NUM_CPUS=1``, its fastest call).
  MB/s per core = UTF-8 MB / CPU seconds.
* ``check``: HF ids == tiktoken ids and ``decode(encode(x)) == x`` on every document.

Usage: ``python bench/tokenizer_bench.py [--repeats 3] [--json bench/results/tokenizer_bench.json]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import benchutil  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
VOCAB = 32768
N_SPECIAL = 6
RANKS = VOCAB - N_SPECIAL
TRAINERS = ("winnow", "hf", "sentencepiece")
ENCODERS = ("tiktoken", "hf")
PACKAGES = ["rustbpe", "tokenizers", "sentencepiece", "tiktoken", "transformers"]


def read(name: str) -> list[str]:
    with gzip.open(SHARED / name, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def split_english() -> tuple[list[str], list[str]]:
    docs = read("english_dev.jsonl.gz")
    return [d for i, d in enumerate(docs) if i % 10], [d for i, d in enumerate(docs) if i % 10 == 0]


def mb(texts: list[str]) -> float:
    return sum(len(t.encode()) for t in texts) / 1e6


# --- children -------------------------------------------------------------------------------------


def child_train(trainer: str, out: Path) -> dict:
    train, held = split_english()
    lid = read("lid_dev.jsonl.gz")
    t0, c0 = time.perf_counter(), time.process_time()
    if trainer == "winnow":
        from tokenizer.folder import save_tokenizer_dir
        from tokenizer.train import train_ranks

        ranks, _ = train_ranks(train, RANKS)
        t_ranks = time.perf_counter() - t0
        save_tokenizer_dir(out / "tokenizer", ranks)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        from tokenizer import Tokenizer

        tok = Tokenizer.from_dir(out)

        def count(texts):
            return sum(len(x) for x in tok.encode_batch(texts, num_threads=1))

        extra = {"ranks_only_s": round(t_ranks, 3)}
    elif trainer == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        from tokenizer.encoding import GPT4_PATTERN

        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tr = trainers.BpeTrainer(
            vocab_size=RANKS,
            min_frequency=0,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf.train_from_iterator(train, tr)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0

        def count(texts):
            return sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))

        extra = {"vocab": hf.get_vocab_size()}
    else:
        import sentencepiece as spm

        lines = [line for t in train for line in t.split("\n") if line.strip()]
        model = out / "sp"
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(model),
            model_type="bpe",
            vocab_size=RANKS,
            byte_fallback=True,
            character_coverage=0.9995,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            max_sentence_length=1 << 16,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        sp = spm.SentencePieceProcessor(model_file=str(model) + ".model")

        def count(texts):
            return sum(len(x) for x in sp.encode(texts))

        extra = {"vocab": sp.get_piece_size()}
    held_tokens, lid_tokens = count(held), count(lid)
    return {
        "trainer": trainer,
        "train_wall_s": round(wall, 3),
        "train_cpu_s": round(cpu, 3),
        "train_mb": round(mb(train), 3),
        "held_mb": round(mb(held), 3),
        "held_tokens": held_tokens,
        "held_bytes_per_token": round(mb(held) * 1e6 / held_tokens, 4),
        "lid_tokens": lid_tokens,
        "lid_bytes_per_token": round(mb(lid) * 1e6 / lid_tokens, 4),
        **extra,
    }


def child_encode(engine: str, folder: Path) -> dict:
    texts = read("english_dev.jsonl.gz") + read("lid_dev.jsonl.gz")
    if engine == "tiktoken":
        from tokenizer import Tokenizer

        tok = Tokenizer.from_dir(folder)
        tok.encode_ordinary("warm up")
        c0, t0 = time.process_time(), time.perf_counter()
        n = sum(len(tok.encode_ordinary(t)) for t in texts)
    else:
        import tokenizers

        hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
        hf.encode("warm up")
        c0, t0 = time.process_time(), time.perf_counter()
        n = sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {
        "engine": engine,
        "mb": round(mb(texts), 3),
        "tokens": n,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "mb_per_s_per_core": round(mb(texts) / cpu, 3),
    }


def child_check(folder: Path) -> dict:
    import tokenizers

    from tokenizer import Tokenizer

    tok = Tokenizer.from_dir(folder)
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
    texts = read("english_dev.jsonl.gz") + read("lid_dev.jsonl.gz")
    ours = tok.encode_batch(texts, num_threads=2)
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    return {
        "documents": len(texts),
        "hf_equal_tiktoken": sum(a == b for a, b in zip(ours, theirs)),
        "round_trip_equal": sum(tok.decode(ids) == t for ids, t in zip(ours, texts)),
        "with_special_text": sum("<|" in t for t in texts),
    }


# --- parent ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(BENCH / "results" / "tokenizer_bench.json"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    benchutil.add_measurement_args(ap)
    args = ap.parse_args()
    if args.child:
        kind, what, path, result = args.child
        out = {"train": child_train, "encode": child_encode}.get(kind)
        res = out(what, Path(path)) if out else child_check(Path(path))
        Path(result).write_text(json.dumps(res))
        return

    work = Path(tempfile.mkdtemp(prefix="tokbench-"))
    log = work / "log.txt"
    runs: dict[str, list] = {t: [] for t in TRAINERS}
    enc: dict[str, list] = {e: [] for e in ENCODERS}
    script = str(Path(__file__).resolve())
    for rep in range(args.repeats):
        for trainer in TRAINERS:
            out = work / f"{trainer}-{rep}"
            out.mkdir()
            r = benchutil.measure(
                [script, "--child", "train", trainer, str(out), str(work / "r.json")],
                work / "r.json",
                log,
                wait_quiet=args.wait_quiet,
                max_attempts=args.attempts,
            )
            runs[trainer].append(r)
            print(
                trainer, rep, {k: r[k] for k in ("train_wall_s", "train_cpu_s", "held_tokens", "peak_rss_mb")}
            )
        for engine in ENCODERS:
            r = benchutil.measure(
                [script, "--child", "encode", engine, str(work / "winnow-0"), str(work / "r.json")],
                work / "r.json",
                log,
                env={"RAYON_RS_NUM_CPUS": "1", "RAYON_NUM_THREADS": "1"},
                wait_quiet=args.wait_quiet,
                max_attempts=args.attempts,
            )
            enc[engine].append(r)
            print(engine, rep, r["mb_per_s_per_core"])
    check = benchutil.run_child(
        [script, "--child", "check", "-", str(work / "winnow-0"), str(work / "r.json")], work / "r.json", log
    )

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    summary = {
        t: {
            "train_wall_s": med(rows, "train_wall_s"),
            "train_cpu_s": med(rows, "train_cpu_s"),
            "peak_rss_mb": med(rows, "peak_rss_mb"),
            "held_bytes_per_token": med(rows, "held_bytes_per_token"),
            "lid_bytes_per_token": med(rows, "lid_bytes_per_token"),
        }
        for t, rows in runs.items()
    }
    for t in TRAINERS:
        per_rep = [a["train_wall_s"] / b["train_wall_s"] for a, b in zip(runs[t], runs["hf"])]
        summary[t]["wall_vs_hf"] = round(statistics.median(per_rep), 3)
        per_rep = [a["train_cpu_s"] / b["train_cpu_s"] for a, b in zip(runs[t], runs["hf"])]
        summary[t]["cpu_vs_hf"] = round(statistics.median(per_rep), 3)
        summary[t]["held_tokens_vs_hf"] = round(
            med(runs[t], "held_tokens") / med(runs["hf"], "held_tokens"), 4
        )
    encode = {e: {"mb_per_s_per_core": med(rows, "mb_per_s_per_core")} for e, rows in enc.items()}
    encode["tiktoken_vs_hf"] = round(
        statistics.median(
            a["mb_per_s_per_core"] / b["mb_per_s_per_core"] for a, b in zip(enc["tiktoken"], enc["hf"])
        ),
        3,
    )
    result = {
        "machine": benchutil.machine_info(PACKAGES),
        "settings": {
            "vocab_size": VOCAB,
            "ranks": RANKS,
            "repeats": args.repeats,
            "held_back": "every 10th doc",
        },
        "summary": {"train": summary, "encode": encode, "check": check},
        "runs": {"train": runs, "encode": enc},
    }
    benchutil.write_json(Path(args.json), result)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
