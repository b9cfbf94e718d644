"""Main-text extraction quality of winnow's ``extract`` stage on the dev gold.

Reads the pages of ``dev_web.warc.gz`` that have a record in ``extraction_gold_dev.jsonl.gz``
(linked by ``warc_record_id`` = the WARC-Record-ID header) with winnow's own WARC reader, runs each
engine over them and scores the output with the metric each gold set was published with:

* ``snippets`` (990 pages, trafilatura's ``tests/evaldata.json``): trafilatura's own scoring,
  following ``adbar/trafilatura`` ``tests/eval_common.py`` (``norm``, ``count_item``,
  ``ConfusionMatrix.scores``), which ``tests/evaluate.py`` uses.  Each ``with`` snippet found in the
  output is a true positive, else a false negative; each ``without`` snippet found is a false
  positive, else a true negative.  "Found" is a substring test after collapsing every whitespace
  run to one space and stripping, on both sides (older ``comparison.py`` tested raw substrings;
  the current scorer normalises so that layout differences do not cost recall).  A dropped page
  (no text) counts every ``with`` as fn and every ``without`` as tn, as ``count_item(item, None)``.
  Counts are summed over all pages (micro-average); accuracy = (tp + tn) / all.
* ``article_body`` (181 pages, ``scrapinghub/article-extraction-benchmark``): their
  ``evaluate.py`` (``string_shingle_matching``, ``metrics_from_tp_fp_fns``).  Despite the
  "token-level" label it compares multisets of *4-token shingles* (tokens = ``\\w+`` matches,
  case kept), normalises each page's (tp, fp, fn) to sum to 1, then macro-averages precision over
  pages with tp + fp > 0 and recall over pages with tp + fn > 0; F1 is the harmonic mean of those
  two averages.  A dropped page is scored as the empty string, as their loader's
  ``.get('articleBody', '')`` would: it lowers recall but is left out of precision.

Engines: ``trafilatura`` and ``resiliparse`` are winnow's ``Extract`` stage (``extract_one``);
``trafilatura-direct`` is a plain ``trafilatura.extract`` call with FineWeb's settings, as a reference
for what the stage's wrapping (fresh dedup cache, time budget, strip) changes.

Usage: ``python bench/extraction_quality.py [--engines trafilatura,resiliparse,trafilatura-direct]
[--limit N] [--json OUT]``.  Run from the repository root (or anywhere: the root is put on
``sys.path``).  Timings are wall-clock extraction time only, single process, excluding WARC reading
and ``setup()``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so that `python bench/extraction_quality.py` finds the packages
    sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/data")
WARC_NAME = "dev_web.warc.gz"
GOLD_NAME = "extraction_gold_dev.jsonl.gz"
ENGINES = ("trafilatura", "resiliparse", "trafilatura-direct")

# (text or None, drop reason or None) for one page.
Extractor = Callable[[str, str | None], tuple[str | None, str | None]]


# --- trafilatura's snippet scoring (tests/eval_common.py) --------------------------------------------

_WS = re.compile(r"\s+")


def norm(text: str) -> str:
    """Collapse whitespace runs, as trafilatura's scorer does before its substring test."""
    return _WS.sub(" ", text).strip()


def count_snippets(item: dict[str, Any], text: str | None) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of one page; no text means nothing was found."""
    if text is None:
        tp = fp = 0
    else:
        found = norm(text)
        tp = sum(norm(s) in found for s in item["with"])
        fp = sum(norm(s) in found for s in item["without"])
    return tp, fp, len(item["with"]) - tp, len(item["without"]) - fp


def snippet_scores(counts: list[tuple[int, int, int, int]]) -> dict[str, float]:
    """Micro-averaged precision, recall, F1 and accuracy (0.0 for an empty denominator)."""
    tp, fp, fn, tn = (sum(c[i] for c in counts) for i in range(4))
    total = tp + fp + fn + tn
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "accuracy": (tp + tn) / total if total else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


# --- scrapinghub's article-body scoring (evaluate.py) ------------------------------------------------

_TOKEN = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.IGNORECASE | re.DOTALL)
SHINGLE = 4


def shingles(text: str, n: int = SHINGLE) -> Counter[tuple[str, ...]]:
    """Multiset of n-token shingles; a text shorter than n tokens is one (short) shingle."""
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i : i + n])


def shingle_matching(true: str, pred: str) -> tuple[float, float, float]:
    """(tp, fp, fn) over shingle counts, normalised to sum to 1 so long pages do not weigh more."""
    t, p = shingles(true), shingles(pred)
    tp = float(sum((t & p).values()))
    fp = float(sum((p - t).values()))
    fn = float(sum((t - p).values()))
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s > 0 else (tp, fp, fn)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fn == 0 else tp / (tp + fn)


def article_scores(tp_fp_fns: list[tuple[float, float, float]]) -> dict[str, float]:
    """Macro-averaged precision and recall (each over the pages where it is defined), F1 of the two."""
    precisions = [_precision(*c) for c in tp_fp_fns if c[0] + c[1] > 0]
    recalls = [_recall(*c) for c in tp_fp_fns if c[0] + c[2] > 0]
    precision = statistics.mean(precisions) if precisions else 0.0
    recall = statistics.mean(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "pages_in_precision": len(precisions)}


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Page:
    id: str
    url: str | None
    html: str
    gold: dict[str, Any]


def load_gold(path: Path) -> dict[str, dict[str, Any]]:
    gold: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["warc_record_id"] in gold:
                raise ValueError(f"duplicate warc_record_id in gold: {rec['warc_record_id']}")
            gold[rec["warc_record_id"]] = rec
    return gold


def read_pages(warc: Path, gold: dict[str, dict[str, Any]], notes: list[str]) -> Iterator[Page]:
    """Gold pages in WARC order, read by winnow's reader (so charset handling is the pipeline's)."""
    from stages.warc import WarcParams, WarcSource

    src = WarcSource(WarcParams(paths=[str(warc)]))
    for shard in src.plan([str(warc)]):
        for batch in src.read(shard):
            cols = (batch.column(name).to_pylist() for name in ("id", "url", "html"))
            for rid, url, html in zip(*cols):
                rec = gold.get(rid)
                if rec is None:
                    continue
                if url != rec["url"]:
                    notes.append(f"url differs for {rid}: WARC {url!r}, gold {rec['url']!r}")
                yield Page(rid, url, html, rec)


# --- engines ---------------------------------------------------------------------------------------


def make_extractor(engine: str) -> Extractor:
    """One set-up extractor per engine; ``setup()`` runs once, here, outside the timed loop."""
    if engine == "trafilatura-direct":
        import trafilatura

        def direct(html: str, url: str | None) -> tuple[str | None, str | None]:
            # FineWeb's settings on the plain API; its dedup cache is trafilatura's module-level one.
            try:
                text = trafilatura.extract(
                    html, url=url, favor_precision=True, include_comments=False, deduplicate=True
                )
            except Exception as exc:  # count, as the stage does, rather than abort the benchmark
                return None, f"extract_error:{type(exc).__name__}"
            return (text, None) if text else (None, "no_text")

        return direct

    from stages.extract import Extract, ExtractParams

    stage = Extract(ExtractParams(engine=engine))
    stage.setup()
    return stage.extract_one


@dataclass
class Result:
    engine: str
    pages: int = 0
    seconds: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    snippet_counts: list[tuple[int, int, int, int]] = field(default_factory=list)
    article_counts: list[tuple[float, float, float]] = field(default_factory=list)
    per_page: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "pages": self.pages,
            "seconds": self.seconds,
            "docs_per_s": self.pages / self.seconds if self.seconds else 0.0,
            "dropped": dict(self.dropped.most_common()),
            "snippets": {"pages": len(self.snippet_counts), **snippet_scores(self.snippet_counts)},
            "article_body": {"pages": len(self.article_counts), **article_scores(self.article_counts)},
        }


def run_engine(engine: str, pages: list[Page]) -> Result:
    extract = make_extractor(engine)
    res = Result(engine)
    texts: list[str | None] = []
    # Pages go through in WARC order, in one loop, because trafilatura's dedup cache makes a page's
    # output depend on the pages extracted before it; scoring happens after, outside the timing.
    start = time.perf_counter()
    for page in pages:
        text, reason = extract(page.html, page.url)
        texts.append(text)
        if reason is not None:
            res.dropped[reason] += 1
    res.seconds = time.perf_counter() - start
    res.pages = len(pages)
    for page, text in zip(pages, texts):
        row: dict[str, Any] = {"id": page.id, "chars": len(text) if text else 0}
        if page.gold["gold_type"] == "snippets":
            row["tp_fp_fn_tn"] = count_snippets(page.gold, text)
            res.snippet_counts.append(row["tp_fp_fn_tn"])
        else:
            row["tp_fp_fn"] = shingle_matching(page.gold["text"], text or "")
            res.article_counts.append(row["tp_fp_fn"])
        res.per_page.append(row)
    return res


# --- report ----------------------------------------------------------------------------------------


def markdown(results: list[Result]) -> str:
    head = (
        "| engine | snippets P | R | F1 | acc | article P | R | F1 | docs/s | dropped |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        s = r.summary()
        sn, ab = s["snippets"], s["article_body"]
        # A gold type absent from the run (e.g. with --limit) shows as "–", not as a score of 0.
        sn_cells = [f"{sn[k]:.3f}" if sn["pages"] else "–" for k in ("precision", "recall", "f1", "accuracy")]
        ab_cells = [f"{ab[k]:.3f}" if ab["pages"] else "–" for k in ("precision", "recall", "f1")]
        dropped = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()) or "none"
        cells = [r.engine, *sn_cells, *ab_cells, f"{s['docs_per_s']:.1f}", dropped]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated: {', '.join(ENGINES)}")
    ap.add_argument("--limit", type=int, default=None, help="only the first N gold pages in WARC order")
    ap.add_argument("--json", type=Path, default=None, help="write summaries and per-page scores here")
    ap.add_argument("--data", type=Path, default=DATA, help=f"folder with {WARC_NAME} and {GOLD_NAME}")
    args = ap.parse_args(argv)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    warc, gold_path = args.data / WARC_NAME, args.data / GOLD_NAME
    missing = [str(p) for p in (warc, gold_path) if not p.is_file()]
    if missing:
        print(f"SKIP: extraction gold data not found ({', '.join(missing)}); nothing to measure.")
        return 0

    # trafilatura logs every page it discards at WARNING/ERROR; that is noise next to the table.
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)

    gold = load_gold(gold_path)
    notes: list[str] = []
    pages = []
    for page in read_pages(warc, gold, notes):
        pages.append(page)
        if args.limit is not None and len(pages) >= args.limit:
            break
    if args.limit is None:
        not_found = sorted(set(gold) - {p.id for p in pages})
        if not_found:
            # A gold page the reader dropped or never saw would silently vanish from the scores.
            notes.append(f"{len(not_found)} gold record(s) not among the WARC's HTML pages: {not_found[:10]}")
    types = Counter(p.gold["gold_type"] for p in pages)
    print(f"{len(pages)} gold pages read ({dict(types)})", file=sys.stderr)

    results = []
    for engine in engines:
        res = run_engine(engine, pages)
        print(f"{engine}: {res.pages} pages in {res.seconds:.1f} s", file=sys.stderr)
        results.append(res)

    print(markdown(results))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        out = {
            "pages": len(pages),
            "gold_types": dict(types),
            "notes": notes,
            "results": [r.summary() | {"per_page": r.per_page} for r in results],
        }
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
