"""Quality filters: winnow's four stages against datatrove 0.10.1's filters, on the same documents.

Documents: the texts ``extract`` (trafilatura, FineWeb settings) gets out of ``dev_web.warc.gz``,
2,256 pages in about 30 languages.  They are made once with ``winnow run`` into ``--texts``
(default ``/tmp/winnow-bench/dev_texts``) and reused.

Two measurements:

* ``parity`` (in-process): each winnow stage in filter mode and the datatrove filter with the same
  thresholds (``GopherQualityFilter()``, ``GopherRepetitionFilter()``,
  ``C4QualityFilter(filter_no_terminal_punct=False)`` as FineWeb configures it,
  ``FineWebQualityFilter()``) judge every document independently.  Reports the share of equal
  keep/drop decisions, the share of equal reasons among documents both drop, and every
  disagreement with its class.
* ``throughput``: each filter alone, and the four chained in FineWeb's order (repetition, quality,
  C4, FineWeb), on one core, in a fresh child process per run (spaCy, its caches and ours start
  cold, as in a new Ray worker).  docs/s per core = documents in / CPU seconds of the filtering
  (first call, which loads spaCy, included).  The child then runs the same filtering a second time
  (``warm``): the steady state of a long-lived worker.  Medians over ``--repeats`` runs.

Usage: ``python bench/quality_filters.py [--repeats 3] [--json OUT] [--only parity|throughput]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import benchutil  # noqa: E402

DEV_WARC = Path("/work/shared/data/dev_web.warc.gz")
DEFAULT_TEXTS = Path("/tmp/winnow-bench/dev_texts")
FILTERS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")  # FineWeb's order


def ensure_texts(texts_dir: Path) -> Path:
    """The extracted dev texts (``data/*.parquet``), made with ``winnow run`` when missing."""
    data = texts_dir / "data"
    if list(data.glob("*.parquet")):
        return data
    import subprocess

    texts_dir.parent.mkdir(parents=True, exist_ok=True)
    config = texts_dir.parent / "dev_texts.yaml"
    config.write_text(
        "pipelines:\n  dev_texts:\n"
        f"    input: {{format: warc, paths: [{DEV_WARC}]}}\n"
        f"    output: {texts_dir}\n"
        "    stages:\n      - extract: {}\n"
    )
    winnow = Path(sys.executable).parent / "winnow"
    subprocess.run([str(winnow), "run", "dev_texts", "-c", str(config), "--no-progress"], check=True)
    return data


def load_table(data: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(pq.read_table(f, columns=["id", "text"]) for f in sorted(data.glob("*.parquet")))
    return table.combine_chunks()


def datatrove_filters() -> dict[str, Any]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4_quality": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb_quality": FineWebQualityFilter(),
    }


def winnow_stage(name: str):
    from pipeline import registry

    registry.load_stages()
    stage = registry.STAGES[name]()
    stage.setup()
    return stage


def datatrove_decision(result: Any) -> str | None:
    if result is True:
        return None
    from stages.quality import DATATROVE_REASONS

    reason = result[1] if isinstance(result, tuple) else "dropped"
    return DATATROVE_REASONS.get(reason, reason)


# --------------------------------------------------------------------------------------------
def parity(data: Path) -> dict[str, Any]:
    from datatrove.data import Document

    from stages.words import unsegmented_script

    table = load_table(data)
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    unsegmented = [unsegmented_script(t, None) for t in texts]
    out: dict[str, Any] = {"documents": len(texts), "unsegmented_documents": sum(unsegmented), "filters": {}}
    for name, reference in datatrove_filters().items():
        stage = winnow_stage(name)
        ours: list[str | None] = []
        for batch in table.to_batches(256):
            ours.extend(stage.transform(batch)[1])
        theirs = [
            datatrove_decision(reference.filter(Document(text=t, id=str(i)))) for i, t in enumerate(texts)
        ]
        disagreements = []
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if (a is None) != (b is None):
                disagreements.append(
                    {
                        "id": ids[i],
                        "class": "unsegmented_script" if unsegmented[i] else "other",
                        "winnow": a,
                        "datatrove": b,
                        "text_start": texts[i][:120],
                    }
                )
        both_drop = [(a, b) for a, b in zip(ours, theirs) if a is not None and b is not None]
        n = len(texts)
        n_other = sum(d["class"] == "other" for d in disagreements)
        out["filters"][name] = {
            "decision_agreement": round(1 - len(disagreements) / n, 5),
            "decision_agreement_excluding_unsegmented": round(1 - n_other / (n - sum(unsegmented)), 5),
            "dropped_winnow": sum(a is not None for a in ours),
            "dropped_datatrove": sum(b is not None for b in theirs),
            "same_reason_when_both_drop": round(
                sum(a == b for a, b in both_drop) / max(len(both_drop), 1), 5
            ),
            "reason_differences": [{"winnow": a, "datatrove": b} for a, b in both_drop if a != b],
            "disagreements": disagreements,
        }
        print(
            f"{name:18s} agree {out['filters'][name]['decision_agreement']:.4f} "
            f"(excl. unsegmented {out['filters'][name]['decision_agreement_excluding_unsegmented']:.4f}) "
            f"dropped winnow {out['filters'][name]['dropped_winnow']} datatrove "
            f"{out['filters'][name]['dropped_datatrove']}; disagreements: "
            f"{len(disagreements) - n_other} unsegmented, {n_other} other",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------------------------
def child(system: str, filters: list[str], data: Path, result_file: Path) -> None:
    """One throughput run: the named filters chained, twice (cold, then warm), CPU-timed."""
    table = load_table(data)
    n_docs = table.num_rows
    if system == "winnow":
        import pipeline.stage  # noqa: F401  (imports outside the timed part, as a worker has them)

        batches = table.to_batches(256)

        def run_once() -> int:
            stages = [winnow_stage(name) for name in filters]
            kept = 0
            for batch in batches:
                for stage in stages:
                    batch, _ = stage.transform(batch)
                kept += batch.num_rows
            return kept
    else:
        from datatrove.data import Document

        texts = table.column("text").to_pylist()

        def run_once() -> int:
            chain = [datatrove_filters()[name] for name in filters]
            kept = 0
            for i, text in enumerate(texts):
                doc = Document(text=text, id=str(i))
                if all(f.filter(doc) is True for f in chain):  # all() stops at the first drop
                    kept += 1
            return kept

    timings = {}
    for label in ("cold", "warm"):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        kept = run_once()
        timings[label] = {
            "cpu_s": round(time.process_time() - cpu0, 3),
            "wall_s": round(time.perf_counter() - wall0, 3),
            "kept": kept,
        }
    result_file.write_text(json.dumps({"docs": n_docs, **timings}))


def throughput(data: Path, repeats: int, attempts: int, wait_quiet: bool) -> dict[str, Any]:
    configs = {name: [name] for name in FILTERS}
    configs["combined"] = list(FILTERS)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config, filters in configs.items():
            for system in ("winnow", "datatrove"):
                runs = []
                for r in range(repeats):
                    res = benchutil.measure(
                        [
                            __file__,
                            "--child",
                            system,
                            "--filters",
                            ",".join(filters),
                            "--texts-data",
                            str(data),
                            "--result",
                            f"{tmp}/r.json",
                        ],
                        Path(tmp) / "r.json",
                        Path(tmp) / "log.txt",
                        wait_quiet=wait_quiet,
                        max_attempts=attempts,
                    )
                    runs.append(res)
                    print(
                        f"{config:18s} {system:9s} run {r}: cold {res['cold']['cpu_s']:.2f} CPU-s, "
                        f"warm {res['warm']['cpu_s']:.2f}, kept {res['cold']['kept']}",
                        flush=True,
                    )
                docs = runs[0]["docs"]
                results.setdefault(config, {})[system] = {
                    "docs": docs,
                    "kept": runs[0]["cold"]["kept"],
                    "cold_docs_per_cpu_s": round(
                        docs / benchutil.median([x["cold"]["cpu_s"] for x in runs]), 1
                    ),
                    "warm_docs_per_cpu_s": round(
                        docs / benchutil.median([x["warm"]["cpu_s"] for x in runs]), 1
                    ),
                    "peak_rss_mb": benchutil.median([x["peak_rss_mb"] for x in runs]),
                    "runs": runs,
                }
            w, d = results[config]["winnow"], results[config]["datatrove"]
            results[config]["ratio_cold"] = round(w["cold_docs_per_cpu_s"] / d["cold_docs_per_cpu_s"], 2)
            results[config]["ratio_warm"] = round(w["warm_docs_per_cpu_s"] / d["warm_docs_per_cpu_s"], 2)
            print(
                f"{config:18s} winnow/datatrove docs/s/core: cold {results[config]['ratio_cold']}x, "
                f"warm {results[config]['ratio_warm']}x",
                flush=True,
            )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="winnow run output of the dev texts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["parity", "throughput"])
    ap.add_argument(
        "--json", type=Path, help="write results here (default bench/results/quality_filters.json)"
    )
    benchutil.add_measurement_args(ap)
    ap.add_argument("--child", choices=["winnow", "datatrove"], help=argparse.SUPPRESS)
    ap.add_argument("--filters", help=argparse.SUPPRESS)
    ap.add_argument("--texts-data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.filters.split(","), args.texts_data, args.result)
        return
    data = ensure_texts(args.texts)
    out: dict[str, Any] = {
        "machine": benchutil.machine_info(["datatrove", "spacy", "trafilatura", "numpy", "pyarrow"]),
        "texts": str(data),
    }
    if args.only in (None, "parity"):
        out["parity"] = parity(data)
    if args.only in (None, "throughput"):
        out["throughput"] = throughput(data, args.repeats, args.attempts, args.wait_quiet)
    path = args.json or BENCH / "results" / "quality_filters.json"
    benchutil.write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
