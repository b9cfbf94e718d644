"""``minhash_dedup`` at scale: memory per phase on up to 1 M documents, and throughput per phase
against datatrove's 4-stage MinHash pipeline on the same documents.

Corpus (synthetic, fixed seed, generated once per size under ``--data-dir``): documents of 50-150
words drawn i.i.d. from the Zipfian word distribution of ``english_dev.jsonl.gz`` (37,945 word
types seen at least twice, with their counts), ending in a full stop.  Of the documents, 10 % are
near-duplicate copies of a random original with 1 word substitution per started 50 words at most
(``1 .. max(1, words // 50)``; 5-gram Jaccard to the original 0.80-1.0, median 0.88) and 3 % are exact
copies; an original may get several copies (clusters of 2, 3, ...).  Copies sit anywhere in the
corpus (mostly in other files than their original).  Written as zstd Parquet parts of 50,000 rows
(``id``, ``text``) plus ``truth.npz`` (each document's cluster root, kind and edits).

1. **Scale** (``--sizes``, default 250k, 500k, 1M documents; 2 workers): the pipeline
   ``input: {format: parquet, paths: [...]}`` -> ``minhash_dedup: {}`` (``default``) and the same
   with ``max_partition_mb: 16`` (``p16``: more (band, hash range) tasks as the corpus grows, so a
   band task's slice stays at <= ~350k rows).  One fresh child process per run
   (``benchutil.measure``: peak RSS / PSS of the whole tree, Ray included).  After each run, the
   largest band item is run again alone in a fresh process (``child_replay``: its arguments rebuilt
   from the step markers) under ``tracemalloc``, for one band task's exact heap peak.
2. **Compare** (``--compare-docs``, default 200k, ``--repeats``): the same winnow pipeline with
   its defaults (``winnow``: 2 band sets, FineWeb's 14 x 8 plus a regrouped 14 x 8) and with
   ``band_sets: 1`` (``winnow-bs1``: FineWeb's 14 x 8 alone, datatrove's banding), and datatrove
   0.10.1's ``MinhashDedupSignature`` -> ``MinhashDedupBuckets`` ->
   ``MinhashDedupCluster`` -> ``MinhashDedupFilter`` (``MinhashConfig(hash_config=HashConfig(
   precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5)``, English word tokenizer =
   spaCy) on ``LocalPipelineExecutor``s as in datatrove's example: stage 1 and 4 ``ParquetReader``
   of the same files with tasks = workers = 2, stage 2 tasks = 14 buckets on 2 workers, stage 3
   one task; stage 4 writes Parquet.  Each datatrove stage is its own child process (its own
   executor, as the example runs them).  Configurations alternate within a repeat.  Two
   benchmark-only adjustments let datatrove run here at all, without changing its work:
   ``xxhash64_str`` (its hash function with the ``str`` encoding xxhash < 4 did) and
   ``stub_tokenizers`` (an import it does not use).  winnow's phases are compared with datatrove's
   stages: read + sign with signature (both read the input Parquet), band with buckets, cluster
   with cluster, filter (phase 1) with filter; end to end = ``run_pipeline`` (Ray start and stop
   included) against the sum of the 4 ``executor.run()`` calls.

Per-phase attribution (the method).  The child runs ``run_pipeline`` itself and passes a
``progress`` callback; the executor calls it with the running step's label when a step or
phase starts and whenever an item finishes.  The callback switches the label of an in-process
sampler thread (``StepSampler``), which polls the child's whole process tree every 0.1 s (and
once more at every switch): per process RSS, ``shared`` (file-backed and shmem pages) and CPU
times, and the title Ray gives a worker (``ray::_timed_call`` while it runs a barrier step item,
``ray::run_task`` while it runs a phase task, ``ray::IDLE`` between).  CPU used between two samples
is charged to the label in force; memory seen in a sample is charged to it too.  Labels: ``start``
(planning), ``ray_start`` / ``ray_stop`` (``init_ray`` and its stop function, wrapped),
``read`` (phase 0: read the input, write the parts), ``sign``, ``band``, ``cluster`` (the
barrier's steps), ``filter`` (phase 1: drop the duplicates, write ``data/``), ``driver`` (the
driver between steps: building the next step's items, ``duplicates.parquet``, stats).  Per step:
wall time, CPU seconds of the tree, peak RSS of the tree, and the peak RSS of one busy worker
(the memory one task of that step needs, as Ray runs one task per worker process).  "anon" is
RSS minus shared pages: memory the process really owns.  The band step reads signatures
memory-mapped, and the pages it touches are page cache mapped into the worker: they count in its
RSS but are reclaimable and not owned by it (``verified`` in ``stages/dedup.py``).  A band item
can be shorter than the 0.1 s interval, so the sampled task growth is a lower bound: the replay
above gives the exact heap peak.  datatrove's stages are measured with the same sampler (one label
per stage), so both sides use one method.

Usage: ``python bench/dedup_scale.py [--sizes 250000,500000,1000000] [--compare-docs 200000]
[--repeats 3] [--json bench/results/dedup_scale.json]``; ``--skip-scale`` / ``--skip-compare``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:  # `python bench/dedup_scale.py` from anywhere
        sys.path.insert(0, p)

import benchutil  # noqa: E402
import numpy as np  # noqa: E402

ENGLISH = Path("/work/shared/data/english_dev.jsonl.gz")
DATA_DIR = Path("/tmp/winnow-dedup-scale")
PACKAGES = ["ray", "datatrove", "spacy", "xxhash", "pyarrow", "numpy", "scipy", "psutil"]
MB = 1024 * 1024

# corpus
SEED = 20261122
ROWS_PER_FILE = 50_000
MIN_WORDS, MAX_WORDS = 50, 150
NEAR_FRACTION, EXACT_FRACTION = 0.10, 0.03
WORDS_PER_EDIT = 50  # a near copy gets 1 .. max(1, words // 50) substitutions
GENERATOR_VERSION = 1  # bump when the generator changes: cached corpora are rebuilt

# winnow configurations of the scale runs: name -> minhash_dedup parameters
SCALE_CONFIGS: dict[str, dict[str, Any]] = {"default": {}, "p16": {"max_partition_mb": 16}}
# winnow configurations of the comparison: its defaults (2 band sets: FineWeb's 14 x 8 plus a
# regrouped 14 x 8), and FineWeb's banding alone, which is datatrove's
COMPARE_WINNOW: dict[str, dict[str, Any]] = {"winnow": {}, "winnow-bs1": {"band_sets": 1}}
WINNOW_PHASES = ["read", "sign", "band", "cluster", "filter"]
DATATROVE_STAGES = ["signature", "buckets", "cluster", "filter"]
DATATROVE_OUTPUT = {
    "signature": "signatures",
    "buckets": "buckets",
    "cluster": "remove_ids",
    "filter": "output",
}
# winnow phases compared with each datatrove stage (datatrove's stage 1 reads the input itself,
# winnow's phase 0 reads it and writes the parts that sign and filter read)
PAIRS = [
    ("signature", ["read", "sign"]),
    ("buckets", ["band"]),
    ("cluster", ["cluster"]),
    ("filter", ["filter"]),
]
GOAL = 1.5
OUTPUTS = ("output data", "dedup parquet", "removed samples")  # the rest of disk_usage is intermediates
STUB_ENV = "WINNOW_BENCH_STUB_TOKENIZERS"


def stub_tokenizers() -> None:
    """Importing ``datatrove.pipeline.dedup.minhash`` runs ``datatrove.pipeline.dedup/__init__``, which
    imports the exact-substring steps and through them HF ``tokenizers`` (not installed here; the
    MinHash steps never use it).  A placeholder module lets the import through.  Installed at
    import of this module when ``STUB_ENV`` is set, so that datatrove's forkserver (which imports
    this file as ``__mp_main__``) and its pool workers get it too."""
    import importlib.util
    import types

    if "tokenizers" in sys.modules or importlib.util.find_spec("tokenizers") is not None:
        return
    package = types.ModuleType("tokenizers")
    processors = types.ModuleType("tokenizers.processors")
    processors.TemplateProcessing = type("TemplateProcessing", (), {})  # type: ignore[attr-defined]
    package.processors = processors  # type: ignore[attr-defined]
    sys.modules["tokenizers"] = package
    sys.modules["tokenizers.processors"] = processors


if os.environ.get(STUB_ENV):
    stub_tokenizers()


# --- corpus ----------------------------------------------------------------------------------------


def vocabulary() -> tuple[list[str], np.ndarray]:
    """Word types of ``english_dev`` seen at least twice, most frequent first, and their counts."""
    counts: Counter[str] = Counter()
    with gzip.open(ENGLISH, "rt", encoding="utf-8") as f:
        for line in f:
            counts.update(re.findall(r"[^\W\d_]+", json.loads(line)["text"]))
    words = [(w, c) for w, c in counts.most_common() if c >= 2]
    return [w for w, _ in words], np.array([c for _, c in words], np.float64)


def corpus_params(n_docs: int) -> dict[str, Any]:
    return {
        "docs": n_docs,
        "seed": SEED,
        "rows_per_file": ROWS_PER_FILE,
        "words": [MIN_WORDS, MAX_WORDS],
        "near_fraction": NEAR_FRACTION,
        "exact_fraction": EXACT_FRACTION,
        "words_per_edit": WORDS_PER_EDIT,
        "generator_version": GENERATOR_VERSION,
    }


def corpus(n_docs: int, data_dir: Path) -> Path:
    """The corpus of ``n_docs`` documents (generated on first use, then reused)."""
    folder = data_dir / f"corpus-{n_docs}"
    meta = folder / "meta.json"
    params = corpus_params(n_docs)
    if meta.exists() and json.loads(meta.read_text()).get("params") == params:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    info = generate(n_docs, folder)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    meta.write_text(json.dumps({"params": params, **info}, indent=1))
    print(f"generated {n_docs:,} documents in {folder} ({info['seconds']} s)", file=sys.stderr)
    return folder


def generate(n_docs: int, folder: Path) -> dict[str, Any]:
    """Write the Parquet parts and ``truth.npz`` (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    words, counts = vocabulary()
    cdf = np.cumsum(counts / counts.sum())
    cdf[-1] = 1.0
    rng = np.random.default_rng([SEED, n_docs])

    def draw(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(words) - 1).astype(np.int32)

    u = rng.random(n_docs)
    kind = np.zeros(n_docs, np.int8)  # 0 original / unique, 1 near copy, 2 exact copy
    kind[u < NEAR_FRACTION + EXACT_FRACTION] = 2
    kind[u < NEAR_FRACTION] = 1
    kind[0] = 0
    originals = np.flatnonzero(kind == 0)
    copies = np.flatnonzero(kind != 0)
    root = np.arange(n_docs, dtype=np.int64)  # the original each document is a copy of
    root[copies] = originals[rng.integers(0, len(originals), len(copies))]
    length = rng.integers(MIN_WORDS, MAX_WORDS + 1, n_docs)
    length[copies] = length[root[copies]]
    offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(length, out=offsets[1:])
    tokens = np.empty(offsets[-1], np.int32)
    step = 1 << 23
    for start in range(0, len(tokens), step):
        tokens[start : start + step] = draw(min(step, len(tokens) - start))
    # copies take their original's words (originals are never copies, so never overwritten)
    cl = length[copies]
    within = np.arange(cl.sum()) - np.repeat(np.cumsum(cl) - cl, cl)
    tokens[np.repeat(offsets[copies], cl) + within] = tokens[np.repeat(offsets[root[copies]], cl) + within]
    # near copies: a few substitutions at random positions
    near = np.flatnonzero(kind == 1)
    edits = np.zeros(n_docs, np.int32)
    edits[near] = rng.integers(1, np.maximum(1, length[near] // WORDS_PER_EDIT) + 1)
    where = np.repeat(near, edits[near])
    tokens[offsets[where] + (rng.random(len(where)) * length[where]).astype(np.int64)] = draw(len(where))

    # texts as Arrow string buffers: every word followed by a space, the last one by a full stop
    encoded = [w.encode() for w in words]
    vlen = np.array([len(w) + 1 for w in encoded], np.int64)
    vstart = np.cumsum(vlen) - vlen
    vbuf = np.frombuffer(b"".join(w + b" " for w in encoded), np.uint8)
    files = 0
    text_bytes = 0
    for a in range(0, n_docs, ROWS_PER_FILE):
        b = min(a + ROWS_PER_FILE, n_docs)
        t = tokens[offsets[a] : offsets[b]]
        lens = vlen[t]
        ends = np.cumsum(lens)
        data = vbuf[np.repeat(vstart[t] - (ends - lens), lens) + np.arange(ends[-1])]
        doc_end = ends[offsets[a + 1 : b + 1] - offsets[a] - 1]
        data[doc_end - 1] = ord(".")
        offs = np.concatenate(([0], doc_end)).astype(np.int32)
        text = pa.StringArray.from_buffers(b - a, pa.py_buffer(offs), pa.py_buffer(data))
        ids = pa.array([f"d{i:08d}" for i in range(a, b)], pa.string())
        pq.write_table(
            pa.table({"id": ids, "text": text}),
            folder / f"docs-{files:05d}.parquet",
            compression="zstd",
            row_group_size=10_000,
        )
        files += 1
        text_bytes += int(ends[-1])
    np.savez(folder / "truth.npz", root=root, kind=kind, edits=edits)
    sizes = np.bincount(root)
    return {
        "files": files,
        "text_bytes": text_bytes,
        "parquet_bytes": sum(f.stat().st_size for f in folder.glob("*.parquet")),
        "words": int(offsets[-1]),
        "near_copies": int((kind == 1).sum()),
        "exact_copies": int((kind == 2).sum()),
        "clusters": int((sizes >= 2).sum()),
        "largest_cluster": int(sizes.max()),
        "documents_to_remove": int((sizes[sizes >= 2] - 1).sum()),
    }


def corpus_files(folder: Path) -> list[str]:
    return [str(f) for f in sorted(folder.glob("docs-*.parquet"))]


def doc_index(ids: list[str]) -> np.ndarray:
    return np.array([int(i[1:]) for i in ids], np.int64)


def score(removed: np.ndarray, root: np.ndarray) -> dict[str, Any]:
    """Removed documents against the generator's clusters: per cluster, ``size - 1`` documents
    should go (any of its members may be the kept one).  TP = sum of min(removed, size - 1) over
    clusters; the rest of the removed documents are false positives (singletons, or a whole
    cluster gone); FN = documents that should have gone and did not."""
    sizes = np.bincount(root, minlength=len(root))
    got = np.bincount(root[removed], minlength=len(root))
    should = np.maximum(sizes - 1, 0)
    tp = int(np.minimum(got, should).sum())
    fp = len(removed) - tp
    fn = int(should.sum()) - tp
    precision = tp / len(removed) if len(removed) else 1.0
    recall = tp / should.sum() if should.sum() else 1.0
    return {
        "removed": len(removed),
        "should_remove": int(should.sum()),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "precision": round(precision, 5),
        "recall": round(float(recall), 5),
        "gold_clusters": int((sizes >= 2).sum()),
        "gold_clusters_complete": int(((got == should) & (sizes >= 2)).sum()),
    }


# --- the in-process sampler (child side) -----------------------------------------------------------


class StepSampler(threading.Thread):
    """Polls this process and its descendants; charges CPU time and memory to the current label."""

    def __init__(self, interval: float = 0.1, series_every: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process()
        self.interval = interval
        self.series_every = series_every
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.label = "imports"  # until the caller switches: interpreter start and imports
        self.t0 = time.perf_counter()
        self.label_since = self.t0
        self.steps: dict[str, dict[str, float]] = {}
        self.order: list[str] = []
        self.series: list[list[Any]] = []
        self._last_series = -1e9
        self._cpu: dict[int, float] = {}
        self._idle_anon: dict[int, int] = {}  # pid -> anon RSS of that worker when last seen idle
        self._procs: list[Any] = []
        self._refreshed = -1e9

    def _step(self, label: str) -> dict[str, float]:
        if label not in self.steps:
            self.order.append(label)
            self.steps[label] = {
                "wall_s": 0.0,
                "cpu_s": 0.0,
                "peak_tree_rss": 0,
                "peak_tree_anon": 0,
                "peak_worker_rss": 0,
                "peak_worker_anon": 0,
                "peak_driver_rss": 0,
                "peak_process_rss": 0,
                "peak_task_anon_growth": 0,
                "busy_worker_samples": 0,
                "samples": 0,
            }
        return self.steps[label]

    def sample(self) -> None:
        import psutil

        with self.lock:
            now = time.perf_counter()
            if now - self._refreshed > 0.5:
                try:
                    self._procs = [self.root, *self.root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                self._refreshed = now
            step = self._step(self.label)
            rss = anon = worker_rss = worker_anon = cpu = largest = 0
            busy = False
            for proc in self._procs:
                try:
                    with proc.oneshot():
                        mem = proc.memory_info()
                        times = proc.cpu_times()
                    title = proc.cmdline()[:1] if proc.pid != self.root.pid else []
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total = times.user + times.system
                cpu += total - self._cpu.get(proc.pid, 0.0)
                self._cpu[proc.pid] = total
                rss += mem.rss
                anon += mem.rss - mem.shared
                largest = max(largest, mem.rss)
                if proc.pid == self.root.pid:
                    step["peak_driver_rss"] = max(step["peak_driver_rss"], mem.rss)
                elif title and title[0] in ("ray::_timed_call", "ray::run_task"):
                    busy = True
                    worker_rss = max(worker_rss, mem.rss)
                    worker_anon = max(worker_anon, mem.rss - mem.shared)
                    if proc.pid in self._idle_anon:
                        growth = mem.rss - mem.shared - self._idle_anon[proc.pid]
                        step["peak_task_anon_growth"] = max(step["peak_task_anon_growth"], growth)
                elif title and title[0] == "ray::IDLE":
                    self._idle_anon[proc.pid] = mem.rss - mem.shared
            step["cpu_s"] += cpu
            step["samples"] += 1
            step["busy_worker_samples"] += busy
            step["peak_tree_rss"] = max(step["peak_tree_rss"], rss)
            step["peak_tree_anon"] = max(step["peak_tree_anon"], anon)
            step["peak_worker_rss"] = max(step["peak_worker_rss"], worker_rss)
            step["peak_worker_anon"] = max(step["peak_worker_anon"], worker_anon)
            step["peak_process_rss"] = max(step["peak_process_rss"], largest)
            if now - self._last_series >= self.series_every:
                self._last_series = now
                self.series.append(
                    [
                        round(now - self.t0, 2),
                        self.label,
                        round(rss / MB),
                        round(anon / MB),
                        round(worker_rss / MB),
                    ]
                )

    def switch(self, label: str) -> None:
        if label == self.label:
            return
        self.sample()  # what happened up to now belongs to the old label
        with self.lock:
            now = time.perf_counter()
            self._step(self.label)["wall_s"] += now - self.label_since
            self.label, self.label_since = label, now

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def finish(self) -> dict[str, dict[str, float]]:
        self.stop_event.set()
        self.join()
        self.switch("end")
        out = {}
        for label in self.order:
            if label == "end":
                continue
            s = self.steps[label]
            out[label] = {
                "wall_s": round(s["wall_s"], 3),
                "cpu_s": round(s["cpu_s"], 2),
                "peak_tree_rss_mb": round(s["peak_tree_rss"] / MB),
                "peak_tree_anon_mb": round(s["peak_tree_anon"] / MB),
                "peak_worker_rss_mb": round(s["peak_worker_rss"] / MB),
                "peak_worker_anon_mb": round(s["peak_worker_anon"] / MB),
                "peak_driver_rss_mb": round(s["peak_driver_rss"] / MB),
                "peak_process_rss_mb": round(s["peak_process_rss"] / MB),
                # a busy worker's anon RSS above what it held when last seen idle: one task's own
                # working memory (Ray runs one task at a time per worker process)
                "peak_task_anon_growth_mb": round(s["peak_task_anon_growth"] / MB),
                "samples": s["samples"],
            }
        return out


# --- child: winnow ----------------------------------------------------------------------------------


def disk_usage(root: Path) -> dict[str, dict[str, int]]:
    """Bytes and files of the run directory's parts (intermediates under ``_work``)."""
    groups = {
        "phase-0 parts": root / "_work" / "phase-0" / "data",
        "signatures": root / "_work" / "stages" / "minhash_dedup" / "sig",
        "band slices": root / "_work" / "stages" / "minhash_dedup" / "bands",
        "pairs": root / "_work" / "stages" / "minhash_dedup" / "pairs",
        "remove lists": root / "_work" / "stages" / "minhash_dedup" / "remove",
        "step markers": root / "_work" / "phase-1" / "steps",
        "output data": root / "data",
        "dedup parquet": root / "dedup",
        "removed samples": root / "removed",
    }
    out = {}
    for name, folder in groups.items():
        size = files = 0
        for dirpath, _dirs, names in os.walk(folder):
            for n in names:
                size += os.path.getsize(os.path.join(dirpath, n))
                files += 1
        out[name] = {"bytes": size, "files": files}
    return out


def child_winnow(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import executor
    from pipeline.config import load_pipelines
    from pipeline.rundir import read_json

    out = Path(args.out)
    params = json.loads(args.params)
    files = corpus_files(Path(args.input))
    body = {
        "input": {"format": "parquet", "paths": files},
        "output": str(out),
        "stages": [{"minhash_dedup": params}],
    }
    config = out.parent / f"{out.name}-pipelines.yaml"
    config.write_text(json.dumps({"pipelines": {"bench": body}}))  # JSON is valid YAML
    spec = load_pipelines(config, ["bench"])[0]

    sampler = StepSampler()
    original_init = executor.init_ray

    def init_ray(address: str | None, num_cpus: int | None) -> Any:
        before = sampler.label
        sampler.switch("ray_start")
        stop = original_init(address, num_cpus)
        sampler.switch(before)

        def timed_stop() -> None:
            sampler.switch("ray_stop")
            stop()

        return timed_stop

    executor.init_ray = init_ray  # type: ignore[assignment]
    names = {"running": "read"}

    def progress(label: str, done: int, total: int, _docs: int) -> None:
        name = names.get(label) or (label.split(" ", 2)[2] if label.count(" ") == 2 else "filter")
        sampler.switch("driver" if done >= total else name)

    done_at: list[float] = []

    def on_done(_result: Any) -> None:
        done_at.append(time.perf_counter())
        sampler.switch("driver")

    sampler.start()
    sampler.switch("start")
    start = time.perf_counter()
    result = executor.run_pipeline(
        spec, output=out, fresh=True, num_cpus=args.workers, progress=progress, on_done=on_done
    )
    wall = time.perf_counter() - start
    steps = sampler.finish()

    work = out / "_work"
    items: dict[str, dict[str, Any]] = {}
    for step in ("sign", "band", "cluster"):
        markers = [read_json(m) for m in sorted((work / "phase-1" / "steps" / step).glob("*.json"))]
        items[step] = {"items": len(markers), "seconds": [m["seconds"] for m in markers]}
        if step == "band":
            items[step]["rows"] = [m["rows"] for m in markers]
            items[step]["candidates"] = sum(m["candidates"] for m in markers)
            items[step]["verified"] = sum(m["verified"] for m in markers)
    for phase, name in ((0, "read"), (1, "filter")):
        markers = [read_json(m) for m in sorted((work / f"phase-{phase}" / "done").glob("*.json"))]
        items[name] = {"items": len(markers), "seconds": [m["seconds"] for m in markers]}
    stats = {s["name"]: s for s in result.stats}
    return {
        "wall_s": round(wall, 3),
        "run_cpu_s": round(sum(v["cpu_s"] for k, v in steps.items() if k != "imports"), 2),
        "results_s": round(done_at[0] - start, 3) if done_at else None,
        "docs_in": stats["read"]["docs_out"],
        "docs_out": stats["minhash_dedup"]["docs_out"],
        "steps": steps,
        "items": items,
        "dedup": stats["minhash_dedup"].get("extra", {}),
        "dedup_stage_seconds": stats["minhash_dedup"]["seconds"],
        "disk": disk_usage(out),
        "series": sampler.series,
    }


# --- child: datatrove ----------------------------------------------------------------------------


def xxhash64_str(text: str) -> int:
    """datatrove's ``xxhash64`` as it works with the ``xxhash<4`` it pins (UTF-8 of a ``str``);
    xxhash 4 (installed here) refuses ``str``."""
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def child_datatrove(args: argparse.Namespace) -> dict[str, Any]:
    os.environ[STUB_ENV] = "1"  # inherited by datatrove's forkserver and workers
    stub_tokenizers()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (  # not datatrove.pipeline.dedup: needs `tokenizers`
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.typeshelper import Languages

    work = Path(args.out)
    folder = DATATROVE_OUTPUT[args.stage]
    # benchutil.measure may run this stage again (a disturbed attempt): start it from scratch, or
    # datatrove's executor would skip the tasks the earlier attempt completed
    shutil.rmtree(work / folder, ignore_errors=True)
    shutil.rmtree(work / "logs" / args.stage, ignore_errors=True)
    config = MinhashConfig(
        hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5
    )
    workers = args.workers
    stage = args.stage

    def reader() -> Any:
        return ParquetReader(args.input, glob_pattern="docs-*.parquet")

    if stage == "signature":
        step = MinhashDedupSignature(
            output_folder=str(work / "signatures"), config=config, language=Languages.english
        )
        step._hash_func = xxhash64_str  # benchmark-only adjustment (see xxhash64_str)
        pipeline, tasks, pool = [reader(), step], workers, workers
    elif stage == "buckets":
        step = MinhashDedupBuckets(
            input_folder=str(work / "signatures"), output_folder=str(work / "buckets"), config=config
        )
        pipeline, tasks, pool = [step], config.num_buckets, workers
    elif stage == "cluster":
        step = MinhashDedupCluster(
            input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"), config=config
        )
        pipeline, tasks, pool = [step], 1, 1
    else:
        pipeline = [
            reader(),
            MinhashDedupFilter(input_folder=str(work / "remove_ids")),
            ParquetWriter(output_folder=str(work / "output"), compression="zstd"),
        ]
        tasks, pool = workers, workers
    ex = LocalPipelineExecutor(pipeline, tasks=tasks, workers=pool, logging_dir=str(work / "logs" / stage))
    sampler = StepSampler()
    sampler.start()
    sampler.switch(stage)
    start = time.perf_counter()
    ex.run()
    wall = time.perf_counter() - start
    steps = sampler.finish()
    size = sum(f.stat().st_size for f in (work / folder).rglob("*") if f.is_file())
    nfiles = sum(1 for f in (work / folder).rglob("*") if f.is_file())
    return {
        "wall_s": round(wall, 3),
        "run_cpu_s": steps[stage]["cpu_s"],
        "tasks": tasks,
        "steps": steps,
        "disk": {folder: {"bytes": size, "files": nfiles}},
        "series": sampler.series,
    }


def proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def child_replay(args: argparse.Namespace) -> dict[str, Any]:
    """Run the largest band item of a finished run again, alone in this fresh process, and measure
    its memory exactly: ``tracemalloc`` (numpy registers its buffers with it) gives the peak of the
    Python and numpy heap, ``VmHWM`` (reset first) the peak RSS, mapped signature pages included.
    The arguments are rebuilt from the step markers as ``run_barrier`` builds them."""
    import tracemalloc

    from pipeline.rundir import read_json
    from stages import dedup

    out = Path(args.out)
    steps = out / "_work" / "phase-1" / "steps"
    signed = {m.stem: read_json(m) for m in sorted((steps / "sign").glob("*.json"))}
    band = {m.stem: read_json(m) for m in sorted((steps / "band").glob("*.json"))}
    name = max(band, key=lambda k: (band[k]["rows"], band[k]["candidates"]))
    cut = read_json(out / "_work" / "phase-1" / "barrier.json")["extra"].get("verify_threshold")
    slices = [signed[k]["slices"][name] for k in sorted(signed)]
    signatures = {k: v["signatures"] for k, v in signed.items() if "signatures" in v}
    target = out / "replay-pairs.npy"
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    rss0, anon0 = proc_status_kb("VmRSS"), proc_status_kb("RssAnon")
    tracemalloc.start()
    t0 = time.perf_counter()
    res = dedup.band_slice(slices, signatures, cut, str(target))
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "item": name,
        "rows": res["rows"],
        "candidates": res["candidates"],
        "verified": res["verified"],
        "seconds_under_tracemalloc": round(seconds, 3),
        "heap_peak_mb": round(peak / MB, 1),
        "heap_peak_bytes_per_row": round(peak / max(res["rows"], 1), 1),
        "rss_peak_growth_mb": round((proc_status_kb("VmHWM") - rss0) / 1024, 1),
        "anon_growth_after_mb": round((proc_status_kb("RssAnon") - anon0) / 1024, 1),
    }


def child_main(args: argparse.Namespace) -> int:
    if args.child == "replay":
        res = child_replay(args)
    else:
        res = child_winnow(args) if args.child == "winnow" else child_datatrove(args)
    Path(args.result).write_text(json.dumps(res))
    return 0


# --- parent ------------------------------------------------------------------------------------------


def winnow_removed(out: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return doc_index(
        pq.read_table(out / "dedup" / "minhash_dedup.parquet", columns=["id"]).column("id").to_pylist()
    )


def datatrove_removed(work: Path, n_docs: int) -> np.ndarray:
    import pyarrow.parquet as pq

    kept = np.zeros(n_docs, bool)
    for f in sorted((work / "output").glob("*.parquet")):
        kept[doc_index(pq.read_table(f, columns=["id"]).column("id").to_pylist())] = True
    return np.flatnonzero(~kept)


class Runner:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.log = work / "children.log"
        self.env = {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH), os.environ.get("PYTHONPATH", "")]),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
        }

    def measure(self, extra: list[str]) -> dict[str, Any]:
        cmd = [str(Path(__file__).resolve()), *extra, "--workers", str(self.args.workers)]
        cmd += ["--result", str(self.work / "result.json")]
        return benchutil.measure(
            cmd,
            self.work / "result.json",
            self.log,
            env=self.env,
            wait_quiet=self.args.wait_quiet,
            max_attempts=self.args.attempts,
        )

    def winnow(
        self, folder: Path, params: dict[str, Any], name: str, replay: bool = False
    ) -> tuple[dict[str, Any], np.ndarray]:
        out = self.work / name
        res = self.measure(
            ["--child", "winnow", "--input", str(folder), "--out", str(out), "--params", json.dumps(params)]
        )
        removed = winnow_removed(out)
        if replay:
            result = self.work / "replay.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "replay", "--out", str(out)]
            cmd += ["--result", str(result)]
            with open(self.log, "ab") as log:
                subprocess.run(
                    cmd, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, check=True
                )
            res["band_replay"] = json.loads(result.read_text())
        if not self.args.keep:
            shutil.rmtree(out, ignore_errors=True)
        return res, removed

    def datatrove(self, folder: Path, name: str, n_docs: int) -> tuple[dict[str, Any], np.ndarray]:
        out = self.work / name
        shutil.rmtree(out, ignore_errors=True)
        stages = {}
        for stage in DATATROVE_STAGES:
            stages[stage] = self.measure(
                ["--child", "datatrove", "--stage", stage, "--input", str(folder), "--out", str(out)]
            )
        removed = datatrove_removed(out, n_docs)
        if not self.args.keep:
            shutil.rmtree(out, ignore_errors=True)
        wall = sum(s["wall_s"] for s in stages.values())
        cpu = sum(s["run_cpu_s"] for s in stages.values())
        res = {
            "wall_s": round(wall, 3),
            "run_cpu_s": round(cpu, 2),
            "process_wall_s": round(sum(s["process_wall_s"] for s in stages.values()), 3),
            "process_cpu_s": round(sum(s["cpu_s"] for s in stages.values()), 2),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
            "peak_pss_mb": max(s["peak_pss_mb"] for s in stages.values()),
            "stages": stages,
        }
        return res, removed


def phase_view(res: dict[str, Any], n_docs: int, workers: int) -> dict[str, dict[str, float]]:
    """docs/s per core (wall-based: docs / wall / workers) and docs per CPU-second, per phase."""
    view = {}
    for label, s in res["steps"].items():
        view[label] = {
            "wall_s": s["wall_s"],
            "cpu_s": s["cpu_s"],
            "docs_per_s_per_core": round(n_docs / s["wall_s"] / workers, 1) if s["wall_s"] else None,
            "docs_per_cpu_s": round(n_docs / s["cpu_s"], 1) if s["cpu_s"] else None,
        }
    return view


def run_scale(runner: Runner, sizes: list[int]) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        folder = corpus(n, runner.args.data_dir)
        truth = np.load(folder / "truth.npz")
        meta = json.loads((folder / "meta.json").read_text())
        for cfg, params in SCALE_CONFIGS.items():
            res, removed = runner.winnow(folder, params, f"scale-{n}-{cfg}", replay=True)
            res["score"] = score(removed, truth["root"])
            res["phases"] = phase_view(res, n, runner.args.workers)
            res.update(
                {"docs": n, "config": cfg, "params": params, "corpus": meta, "workers": runner.args.workers}
            )
            band = res["steps"].get("band", {})
            rp = res.get("band_replay", {})
            print(
                f"scale {n:,} {cfg}: band item replay {rp.get('rows', 0):,} rows, heap peak "
                f"{rp.get('heap_peak_mb')} MB, RSS peak +{rp.get('rss_peak_growth_mb')} MB; "
                f"wall {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB "
                f"(PSS {res['peak_pss_mb']:.0f}), band worker RSS {band.get('peak_worker_rss_mb')} MB "
                f"(anon {band.get('peak_worker_anon_mb')}), partitions/band "
                f"{res['dedup'].get('partitions_per_band')}, removed {res['score']['removed']:,} "
                f"P {res['score']['precision']:.4f} R {res['score']['recall']:.4f}, "
                f"other CPU {res['other_cpu_fraction']:.2f}",
                file=sys.stderr,
            )
            results.append(res)
    return results


def run_compare(runner: Runner, n: int, repeats: int) -> dict[str, Any]:
    folder = corpus(n, runner.args.data_dir)
    truth = np.load(folder / "truth.npz")
    systems = [*COMPARE_WINNOW, "datatrove"]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    removed: dict[str, np.ndarray] = {}
    for rep in range(repeats):
        order = systems if rep % 2 == 0 else systems[::-1]
        for system in order:
            if system in COMPARE_WINNOW:
                res, rem = runner.winnow(folder, COMPARE_WINNOW[system], f"compare-{system}-r{rep}")
            else:
                res, rem = runner.datatrove(folder, f"compare-datatrove-r{rep}", n)
            res["score"] = score(rem, truth["root"])
            res.pop("series", None)
            for stage in res.get("stages", {}).values():
                stage.pop("series", None)
            removed[system] = rem
            runs[system].append(res)
            print(
                f"[{rep + 1}/{repeats}] compare {system}: wall {res['wall_s']:.1f} s, "
                f"removed {res['score']['removed']:,}, P {res['score']['precision']:.4f} "
                f"R {res['score']['recall']:.4f}",
                file=sys.stderr,
            )
    return {
        "docs": n,
        "runs": runs,
        "agreement": {w: agreement(removed[w], removed["datatrove"], truth["root"]) for w in COMPARE_WINNOW},
    }


def agreement(winnow: np.ndarray, datatrove: np.ndarray, root: np.ndarray) -> dict[str, Any]:
    """How the two systems' removals compare (last repeat; both are deterministic)."""
    w, d = set(winnow.tolist()), set(datatrove.tolist())
    sizes = np.bincount(root, minlength=len(root))
    gw = np.bincount(root[winnow], minlength=len(root))
    gd = np.bincount(root[datatrove], minlength=len(root))
    clusters = sizes >= 2
    return {
        "removed_winnow": len(w),
        "removed_datatrove": len(d),
        "removed_by_both": len(w & d),
        "only_winnow": len(w - d),
        "only_datatrove": len(d - w),
        "jaccard_of_removed_sets": round(len(w & d) / len(w | d), 4) if w | d else 1.0,
        # the kept member of a cluster differs (winnow: first in input order; datatrove: the root
        # of its union-find), so also compare how many members of each cluster go
        "gold_clusters": int(clusters.sum()),
        "clusters_same_count_removed": int(((gw == gd) & clusters).sum()),
        "singletons_removed_winnow": int(gw[~clusters & (sizes == 1)].sum()),
        "singletons_removed_datatrove": int(gd[~clusters & (sizes == 1)].sum()),
    }


def summarize_compare(cmp: dict[str, Any], workers: int, system: str) -> dict[str, Any]:
    """Medians per phase, and ratios (winnow / datatrove docs/s per core) per repeat, medianed."""
    med = benchutil.median
    n = cmp["docs"]
    w_runs, d_runs = cmp["runs"][system], cmp["runs"]["datatrove"]

    def w_phase(r: dict[str, Any], labels: list[str], key: str) -> float:
        return sum(r["steps"].get(lab, {}).get(key, 0.0) for lab in labels)

    def d_stage(r: dict[str, Any], stage: str, key: str) -> float:
        return r["stages"][stage]["steps"][stage][key]

    rows = []
    for stage, labels in PAIRS:
        per_rep_wall = [
            d_stage(d, stage, "wall_s") / w_phase(w, labels, "wall_s") for w, d in zip(w_runs, d_runs)
        ]
        per_rep_cpu = [
            d_stage(d, stage, "cpu_s") / w_phase(w, labels, "cpu_s") for w, d in zip(w_runs, d_runs)
        ]
        w_wall = med([w_phase(w, labels, "wall_s") for w in w_runs])
        d_wall = med([d_stage(d, stage, "wall_s") for d in d_runs])
        w_cpu = med([w_phase(w, labels, "cpu_s") for w in w_runs])
        d_cpu = med([d_stage(d, stage, "cpu_s") for d in d_runs])
        rows.append(
            {
                "datatrove": stage,
                "winnow": "+".join(labels),
                "winnow_wall_s": round(w_wall, 2),
                "datatrove_wall_s": round(d_wall, 2),
                "winnow_docs_per_s_per_core": round(n / w_wall / workers),
                "datatrove_docs_per_s_per_core": round(n / d_wall / workers),
                "winnow_cpu_s": round(w_cpu, 2),
                "datatrove_cpu_s": round(d_cpu, 2),
                "winnow_docs_per_cpu_s": round(n / w_cpu) if w_cpu else None,
                "datatrove_docs_per_cpu_s": round(n / d_cpu) if d_cpu else None,
                "ratio_wall_per_repeat": [round(x, 3) for x in per_rep_wall],
                "ratio_wall": round(med(per_rep_wall), 3),
                "ratio_cpu_per_repeat": [round(x, 3) for x in per_rep_cpu],
                "ratio_cpu": round(med(per_rep_cpu), 3),
            }
        )
    sign_only = [
        d_stage(d, "signature", "wall_s") / w_phase(w, ["sign"], "wall_s") for w, d in zip(w_runs, d_runs)
    ]
    total = [d["wall_s"] / w["wall_s"] for w, d in zip(w_runs, d_runs)]
    total_cpu = [d["run_cpu_s"] / w["run_cpu_s"] for w, d in zip(w_runs, d_runs)]
    w_overheads = {
        lab: round(med([w["steps"].get(lab, {}).get("wall_s", 0.0) for w in w_runs]), 2)
        for lab in ("start", "ray_start", "driver", "ray_stop")
    }
    return {
        "winnow_config": system,
        "winnow_params": COMPARE_WINNOW[system],
        "docs": n,
        "workers": workers,
        "phases": rows,
        "ratio_sign_only_wall": round(med(sign_only), 3),
        "total": {
            "winnow_wall_s": round(med([w["wall_s"] for w in w_runs]), 2),
            "datatrove_wall_s": round(med([d["wall_s"] for d in d_runs]), 2),
            "winnow_cpu_s": round(med([w["run_cpu_s"] for w in w_runs]), 1),
            "datatrove_cpu_s": round(med([d["run_cpu_s"] for d in d_runs]), 1),
            "winnow_docs_per_s_per_core": round(n / med([w["wall_s"] for w in w_runs]) / workers),
            "datatrove_docs_per_s_per_core": round(n / med([d["wall_s"] for d in d_runs]) / workers),
            "ratio_per_repeat": [round(x, 3) for x in total],
            "ratio": round(med(total), 3),
            "ratio_cpu_per_repeat": [round(x, 3) for x in total_cpu],
            "ratio_cpu": round(med(total_cpu), 3),
            "goal": GOAL,
            "met": med(total) >= GOAL,
        },
        "winnow_overheads_s": w_overheads,
        "peak_rss_mb": {
            "winnow": round(med([w["peak_rss_mb"] for w in w_runs])),
            "datatrove": round(med([d["peak_rss_mb"] for d in d_runs])),
        },
        "peak_pss_mb": {
            "winnow": round(med([w["peak_pss_mb"] for w in w_runs])),
            "datatrove": round(med([d["peak_pss_mb"] for d in d_runs])),
        },
        "score": {"winnow": w_runs[-1]["score"], "datatrove": d_runs[-1]["score"]},
        "agreement": cmp["agreement"][system],
    }


def markdown_scale(results: list[dict[str, Any]]) -> str:
    """Four tables: memory, time per phase, throughput per phase, disk and outcome."""

    def mem(r: dict[str, Any], label: str) -> str:
        s = r["steps"].get(label, {})
        return (
            f"{s.get('peak_worker_rss_mb', 0)} / {s.get('peak_worker_anon_mb', 0)} "
            f"/ +{s.get('peak_task_anon_growth_mb', 0)}"
        )

    lines = [
        "Memory, MB.  Tree = the child and all its descendants (Ray included); worker = one busy Ray "
        "worker: RSS / anon (RSS minus file-backed and shared pages) / +anon growth of one task",
        "",
        "| docs | config | partitions/band | band tasks | max rows/band task | peak tree RSS | peak tree PSS "
        "| band: tree RSS / anon | band: worker | sign: worker | cluster: worker | filter: worker "
        "| largest band item replayed: heap peak (B/row) / RSS peak growth |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        band = r["steps"].get("band", {})
        rp = r.get("band_replay") or {}
        replay = ""
        if rp:
            replay = f"{rp['heap_peak_mb']:.0f} ({rp['heap_peak_bytes_per_row']:.0f})"
            replay += f" / +{rp['rss_peak_growth_mb']:.0f}"
        lines.append(
            f"| {r['docs']:,} | {r['config']} | {r['dedup'].get('partitions_per_band')} "
            f"| {r['items']['band']['items']} | {max(r['items']['band']['rows']):,} "
            f"| {r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} "
            f"| {band.get('peak_tree_rss_mb', 0)} / {band.get('peak_tree_anon_mb', 0)} "
            f"| {mem(r, 'band')} | {mem(r, 'sign')} | {mem(r, 'cluster')} | {mem(r, 'filter')} "
            f"| {replay} |"
        )
    lines += [
        "",
        "Seconds per phase: wall / CPU of the tree / sum of the items' own seconds (markers)",
        "",
        "| docs | config | " + " | ".join(WINNOW_PHASES) + " | Ray start + stop | total wall |",
        "|---|---|" + "---|" * (len(WINNOW_PHASES) + 2),
    ]
    for r in results:
        cells = []
        for p in WINNOW_PHASES:
            s = r["steps"].get(p, {})
            cells.append(
                f"{s.get('wall_s', 0):.1f} / {s.get('cpu_s', 0):.1f} / {sum(r['items'][p]['seconds']):.1f}"
            )
        ray = r["steps"].get("ray_start", {}).get("wall_s", 0) + r["steps"].get("ray_stop", {}).get(
            "wall_s", 0
        )
        lines.append(
            f"| {r['docs']:,} | {r['config']} | " + " | ".join(cells) + f" | {ray:.1f} | {r['wall_s']:.1f} |"
        )
    lines += [
        "",
        "Throughput per phase: docs/s per core (docs / wall / workers) and docs per CPU-second",
        "",
        "| docs | config | " + " | ".join(WINNOW_PHASES) + " | end to end |",
        "|---|---|" + "---|" * (len(WINNOW_PHASES) + 1),
    ]
    for r in results:
        cells = []
        for p in WINNOW_PHASES:
            v = r["phases"].get(p, {})
            cells.append(f"{v.get('docs_per_s_per_core') or 0:,.0f} / {v.get('docs_per_cpu_s') or 0:,.0f}")
        total = f"{r['docs'] / r['wall_s'] / r['workers']:,.0f} / {r['docs'] / r['run_cpu_s']:,.0f}"
        lines.append(f"| {r['docs']:,} | {r['config']} | " + " | ".join(cells) + f" | {total} |")
    groups = [k for k in results[0]["disk"] if k not in OUTPUTS] if results else []
    lines += [
        "",
        "Disk (MB, files) and outcome against the generator's clusters",
        "",
        "| docs | config | input Parquet | " + " | ".join(groups) + " | intermediates | removed / should "
        "| clusters found / gold | precision | recall |",
        "|---|---|---|" + "---|" * (len(groups) + 5),
    ]
    for r in results:
        inter = sum(r["disk"][g]["bytes"] for g in groups)
        sc = r["score"]
        lines.append(
            f"| {r['docs']:,} | {r['config']} | {r['corpus']['parquet_bytes'] / MB:.0f} | "
            + " | ".join(f"{r['disk'][g]['bytes'] / MB:.0f} ({r['disk'][g]['files']})" for g in groups)
            + f" | {inter / MB:.0f} | {sc['removed']:,} / {sc['should_remove']:,} "
            f"| {r['dedup'].get('clusters', 0):,} / {sc['gold_clusters']:,} "
            f"| {sc['precision']:.4f} | {sc['recall']:.4f} |"
        )
    return "\n".join(lines)


def markdown_compare(s: dict[str, Any]) -> str:
    lines = [
        f"`{s['winnow_config']}` {s['winnow_params']} vs datatrove: {s['docs']:,} documents, "
        f"{s['workers']} workers; docs/s/core = docs / wall / workers; ratio = winnow / datatrove, "
        "median of per-repeat ratios",
        "",
        "| datatrove stage | winnow phase | wall s dt / w | docs/s/core dt / w | CPU s dt / w "
        "| docs/CPU-s dt / w | ratio (wall) | ratio (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["phases"]:
        lines.append(
            f"| {r['datatrove']} | {r['winnow']} | {r['datatrove_wall_s']} / {r['winnow_wall_s']} "
            f"| {r['datatrove_docs_per_s_per_core']:,} / {r['winnow_docs_per_s_per_core']:,} "
            f"| {r['datatrove_cpu_s']} / {r['winnow_cpu_s']} "
            f"| {r['datatrove_docs_per_cpu_s']:,} / {r['winnow_docs_per_cpu_s']:,} "
            f"| {r['ratio_wall']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratio_wall_per_repeat'])}) "
            f"| {r['ratio_cpu']:.2f} |"
        )
    t = s["total"]
    lines.append(
        f"| **end to end** | all (incl. Ray start/stop) | {t['datatrove_wall_s']} / {t['winnow_wall_s']} "
        f"| {t['datatrove_docs_per_s_per_core']:,} / {t['winnow_docs_per_s_per_core']:,} "
        f"| {t['datatrove_cpu_s']} / {t['winnow_cpu_s']} | | **{t['ratio']:.2f}** "
        f"({', '.join(f'{x:.2f}' for x in t['ratio_per_repeat'])}) | {t['ratio_cpu']:.2f} |"
    )
    a, sc = s["agreement"], s["score"]
    lines += [
        "",
        f"goal >= {t['goal']}: {'met' if t['met'] else 'NOT met'}; winnow sign alone vs datatrove "
        f"signature: {s['ratio_sign_only_wall']:.2f}; winnow overheads (s): {s['winnow_overheads_s']}",
        f"removed: winnow {a['removed_winnow']:,} (P {sc['winnow']['precision']:.4f}, "
        f"R {sc['winnow']['recall']:.4f}), datatrove {a['removed_datatrove']:,} "
        f"(P {sc['datatrove']['precision']:.4f}, R {sc['datatrove']['recall']:.4f}); by both "
        f"{a['removed_by_both']:,}; same number removed in {a['clusters_same_count_removed']:,} of "
        f"{a['gold_clusters']:,} clusters",
        f"peak RSS / PSS MB: winnow {s['peak_rss_mb']['winnow']} / {s['peak_pss_mb']['winnow']}, "
        f"datatrove {s['peak_rss_mb']['datatrove']} / {s['peak_pss_mb']['datatrove']} (largest stage)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs / datatrove workers")
    ap.add_argument(
        "--sizes", default="250000,500000,1000000", help="documents per scale run, comma-separated"
    )
    ap.add_argument("--compare-docs", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the comparison")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where corpora are generated and kept")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    benchutil.add_measurement_args(ap)
    # child mode (internal)
    ap.add_argument("--child", choices=["winnow", "datatrove", "replay"], help=argparse.SUPPRESS)
    ap.add_argument("--stage", choices=DATATROVE_STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)

    info = benchutil.machine_info(PACKAGES)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-dedup-", dir=args.data_dir))
    runner = Runner(args, work)
    started = time.perf_counter()
    generator = {k: v for k, v in corpus_params(0).items() if k != "docs"}
    out: dict[str, Any] = {"machine": info, "workers": args.workers, "generator": generator}
    try:
        if not args.skip_scale:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
            out["scale"] = run_scale(runner, sizes)
            print(markdown_scale(out["scale"]))
        if not args.skip_compare:
            cmp = run_compare(runner, args.compare_docs, args.repeats)
            summaries = {w: summarize_compare(cmp, args.workers, w) for w in COMPARE_WINNOW}
            out["compare"] = {**cmp, "summary": summaries}
            for summary in summaries.values():
                print()
                print(markdown_compare(summary))
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
        if args.json:
            benchutil.write_json(args.json, out)
            print(f"wrote {args.json}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
