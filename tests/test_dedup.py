"""minhash_dedup / exact_dedup as barrier stages: outputs, determinism, resume, edge cases.

Most tests run the real driver with every task in this process (``run_local``:
``run_pipeline(in_process=True)``, with ``BarrierContext.map`` running its items in-process
because Ray is not started), so that a failure can be injected into one step; one test runs the
CLI on Ray with 1 and 2 workers and compares.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import kill_run_when, read_docs, stats_without_time, winnow, write_config

from pipeline.config import ConfigError, load_pipelines
from pipeline.executor import run_pipeline

WORDS = (  # noqa: SIM905
    "river stone market winter garden letter window silver forest harbor engine candle meadow "
    "lantern orchard valley signal thunder castle ribbon meadow pepper basket violin mirror "
    "compass blanket feather ladder pillow rocket saddle tunnel wagon anchor bridge cabin "
    "desert falcon glacier hammer island jacket kettle lemon marble needle ocean pencil quartz "
    "rabbit sunset timber umbrella velvet walnut yellow zebra copper dolphin emerald "
).split()


def make_doc(rng: random.Random, n: int = 300) -> list[str]:
    return [rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n)]


def perturb(words: list[str], rng: random.Random, k: int) -> list[str]:
    out = list(words)
    for _ in range(k):
        out[rng.randrange(len(out))] = "edit" + str(rng.randrange(10**6))
    return out


def corpus(seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """Documents and the gold kept id of each duplicate: 12 clusters of 1 original + 3 copies with
    5 edits (5-gram Jaccard ~0.8-0.85), 1 exact copy that differs only in case and punctuation,
    and 60 unrelated documents; shuffled so originals are not always first."""
    rng = random.Random(seed)
    docs, cluster_of = [], {}
    for c in range(12):
        base = make_doc(rng)
        variants = [base] + [perturb(base, rng, 5) for _ in range(3)]
        for j, words in enumerate(variants):
            docs.append({"id": f"c{c}-{j}", "text": " ".join(words)})
            cluster_of[f"c{c}-{j}"] = c
        docs.append({"id": f"c{c}-upper", "text": " ".join(base).upper() + "!!"})
        cluster_of[f"c{c}-upper"] = c
    for i in range(60):
        docs.append({"id": f"u{i}", "text": " ".join(make_doc(rng))})
    rng.shuffle(docs)
    first_of: dict[int, str] = {}
    gold = {}
    for d in docs:
        c = cluster_of.get(d["id"])
        if c is None:
            continue
        if c in first_of:
            gold[d["id"]] = first_of[c]
        else:
            first_of[c] = d["id"]
    return docs, gold


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def pipeline(tmp_path, docs, stages, name="p", split_bytes=8192, out="out"):
    data = write_jsonl(tmp_path / f"{name}.jsonl", docs)
    cfg = write_config(
        tmp_path / f"{name}.yaml",
        {
            name: {
                "input": {"format": "jsonl", "paths": [str(data)], "split_bytes": split_bytes},
                "stages": stages,
                "output": str(tmp_path / out),
            }
        },
    )
    (spec,) = load_pipelines(cfg)
    return spec


def run_local(spec) -> list[dict]:
    """The real driver with every task and barrier step in this process (no Ray); its stats."""
    return run_pipeline(spec, in_process=True).stats


def duplicates(run_dir) -> dict[str, str]:
    rows = pq.read_table(run_dir / "dedup" / "duplicates.parquet").to_pylist()
    return {r["id"]: r["kept_id"] for r in rows}


def test_minhash_dedup_finds_the_clusters_and_keeps_the_first(tmp_path):
    docs, gold = corpus()
    spec = pipeline(tmp_path, docs, [{"minhash_dedup": {}}])
    stats = run_local(spec)
    run_dir = tmp_path / "out"
    assert duplicates(run_dir) == gold
    kept = [d["id"] for d in read_docs(run_dir)]
    assert kept == [d["id"] for d in docs if d["id"] not in gold]  # input order kept
    (dedup,) = [s for s in stats if s["name"] == "minhash_dedup"]
    assert dedup["dropped"] == {"near_duplicate": len(gold)}
    extra = dedup["extra"]
    assert extra["clusters"] == 12 and extra["largest_cluster"] == 5
    assert extra["documents_removed"] == len(gold) == 48
    assert extra["cluster_sizes"] == {"5-8": 12}
    assert (extra["bands"], extra["rows"], extra["band_sets"]) == (14, 8, 2)
    assert extra["candidate_pairs"] >= extra["verified_pairs"] >= extra["unique_pairs"] >= 48
    # the per-stage file and the union agree
    own = pq.read_table(run_dir / "dedup" / "minhash_dedup.parquet").to_pylist()
    assert {r["id"]: r["kept_id"] for r in own} == gold


def test_exact_dedup_normalises_text(tmp_path):
    docs, _ = corpus()
    spec = pipeline(tmp_path, docs, [{"exact_dedup": {}}])
    run_local(spec)
    # only the case/punctuation copies are exact duplicates of their original; the first of
    # the two in input order is kept
    order = [d["id"] for d in docs]
    expected = {}
    for c in range(12):
        a, b = sorted([f"c{c}-0", f"c{c}-upper"], key=order.index)
        expected[b] = a
    assert duplicates(tmp_path / "out") == expected


def test_exact_dedup_without_normalisation_and_by_url(tmp_path):
    docs = [
        {"id": "a", "text": "Same text.", "url": "https://x.org/1"},
        {"id": "b", "text": "same text", "url": "https://x.org/2"},
        {"id": "c", "text": "Same text.", "url": "https://x.org/1"},
        {"id": "d", "text": "Other text.", "url": "https://x.org/1"},
    ]
    run_local(pipeline(tmp_path, docs, [{"exact_dedup": {"normalize": False}}], out="raw"))
    assert duplicates(tmp_path / "raw") == {"c": "a"}
    run_local(pipeline(tmp_path, docs, [{"exact_dedup": {}}], out="norm"))
    assert duplicates(tmp_path / "norm") == {"b": "a", "c": "a"}
    run_local(pipeline(tmp_path, docs, [{"exact_dedup": {"by": "url"}}], out="url"))
    assert duplicates(tmp_path / "url") == {"c": "a", "d": "a"}
    run_local(pipeline(tmp_path, docs, [{"exact_dedup": {"by": "text_and_url"}}], out="both"))
    assert duplicates(tmp_path / "both") == {"c": "a"}


def test_keep_longest(tmp_path):
    rng = random.Random(3)
    base = make_doc(rng)
    docs = [
        {"id": "short", "text": " ".join(base)},
        {"id": "long", "text": " ".join(base) + " tail"},
        {"id": "other", "text": " ".join(make_doc(rng))},
    ]
    run_local(pipeline(tmp_path, docs, [{"exact_dedup": {}}], out="first"))
    assert duplicates(tmp_path / "first") == {}
    run_local(pipeline(tmp_path, docs, [{"minhash_dedup": {"keep": "longest"}}], out="longest"))
    assert duplicates(tmp_path / "longest") == {"short": "long"}
    assert [d["id"] for d in read_docs(tmp_path / "longest")] == ["long", "other"]


def test_dedup_then_per_row_stages_and_two_dedups(tmp_path):
    docs, gold = corpus()
    stages = [{"exact_dedup": {}}, {"minhash_dedup": {}}, {"gopher_repetition": {}}]
    stats = run_local(pipeline(tmp_path, docs, stages))
    assert [s["name"] for s in stats] == ["read", "exact_dedup", "minhash_dedup", "gopher_repetition"]
    union = pq.read_table(tmp_path / "out" / "dedup" / "duplicates.parquet").to_pylist()
    assert {r["stage"] for r in union} == {"exact_dedup", "minhash_dedup"}
    assert {r["id"] for r in union} == set(gold)
    assert len(union) == len(gold)  # each document removed once, by the first stage that found it


def test_empty_input(tmp_path):
    stats = run_local(pipeline(tmp_path, [], [{"minhash_dedup": {}}]))
    assert duplicates(tmp_path / "out") == {}
    assert read_docs(tmp_path / "out") == []
    assert [s["name"] for s in stats] == ["read", "minhash_dedup"]
    dedup = stats[1]
    assert (dedup["docs_in"], dedup["docs_out"], dedup["dropped"]) == (0, 0, {})
    assert (
        dedup["extra"]["documents"] == dedup["extra"]["documents_removed"] == dedup["extra"]["clusters"] == 0
    )
    assert pq.read_table(tmp_path / "out" / "dedup" / "duplicates.parquet").column_names == [
        "id",
        "kept_id",
        "stage",
    ]


def test_all_identical_and_empty_texts(tmp_path):
    docs = [{"id": f"d{i}", "text": "the same short page about rivers and stones " * 5} for i in range(40)]
    docs += [{"id": f"e{i}", "text": "   "} for i in range(3)]
    stats = run_local(pipeline(tmp_path, docs, [{"minhash_dedup": {}}], split_bytes=4096))
    assert duplicates(tmp_path / "out") == {f"d{i}": "d0" for i in range(1, 40)}
    kept = [d["id"] for d in read_docs(tmp_path / "out")]
    assert kept == ["d0", "e0", "e1", "e2"]  # texts without shingles are never duplicates
    (dedup,) = [s for s in stats if s["name"] == "minhash_dedup"]
    assert dedup["extra"]["documents_without_keys"] == 3
    assert dedup["extra"]["cluster_sizes"] == {"33-64": 1}


def test_one_huge_cluster_stays_linear(tmp_path):
    rng = random.Random(5)
    base = make_doc(rng, 200)
    docs = [{"id": f"h{i}", "text": " ".join(perturb(base, rng, 1))} for i in range(1500)]
    stats = run_local(pipeline(tmp_path, docs, [{"minhash_dedup": {}}], split_bytes=200_000))
    (dedup,) = [s for s in stats if s["name"] == "minhash_dedup"]
    assert dedup["extra"]["clusters"] == 1 and dedup["extra"]["largest_cluster"] == 1500
    # stars to 3 hubs per bucket: fewer than 3n pairs per band (2 sets of 14), never n^2
    assert dedup["extra"]["candidate_pairs"] <= 3 * 28 * 1500
    assert set(duplicates(tmp_path / "out").values()) == {"h0"}


def test_resume_after_a_failed_step_gives_the_same_result(tmp_path, monkeypatch):
    from stages import dedup

    docs, gold = corpus()
    clean = pipeline(tmp_path, docs, [{"minhash_dedup": {}}], out="clean")
    run_local(clean)
    crashed = pipeline(tmp_path, docs, [{"minhash_dedup": {}}], name="q", out="crashed")
    real = dedup.band_slice
    calls = {"n": 0}

    def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(dedup, "band_slice", flaky)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_local(crashed)
    steps = tmp_path / "crashed" / "_work" / "phase-1" / "steps"
    signed = sorted((steps / "sign").glob("*.json"))
    assert signed and len(list((steps / "band").glob("*.json"))) == 2
    mtimes = [p.stat().st_mtime_ns for p in signed]
    monkeypatch.setattr(dedup, "band_slice", real)
    # a damaged intermediate file is detected and its step item redone
    first_band = sorted(
        (tmp_path / "crashed" / "_work" / "stages" / "minhash_dedup" / "bands").glob("*/*.npy")
    )[0]
    first_band.write_bytes(first_band.read_bytes()[:-8])
    run_local(crashed)
    assert duplicates(tmp_path / "crashed") == duplicates(tmp_path / "clean") == gold
    assert read_docs(tmp_path / "crashed") == read_docs(tmp_path / "clean")
    redone = [p.stat().st_mtime_ns for p in signed]
    assert sum(a != b for a, b in zip(mtimes, redone)) == 1  # only the part whose file was cut


def test_checksums_are_checked_on_read(tmp_path):
    from stages.dedup import CorruptIntermediate, load_npy, save_npy

    ref = save_npy(tmp_path / "a.npy", np.arange(10, dtype=np.int64))
    assert load_npy(ref).tolist() == list(range(10))
    data = bytearray((tmp_path / "a.npy").read_bytes())
    data[-1] ^= 1  # same size, one bit flipped
    (tmp_path / "a.npy").write_bytes(bytes(data))
    with pytest.raises(CorruptIntermediate, match="damaged"):
        load_npy(ref)


def test_partitioned_banding_gives_the_same_result(tmp_path):
    docs, gold = corpus()
    run_local(pipeline(tmp_path, docs, [{"minhash_dedup": {"max_partition_mb": 16}}], out="one"))
    # force several hash ranges per band: tiny memory bound
    from stages import dedup

    old = dedup.BYTES_PER_SLICE_ROW
    dedup.BYTES_PER_SLICE_ROW = 2**20  # one row "costs" 1 MiB: 16 MiB slices hold 16 rows
    try:
        stats = run_local(pipeline(tmp_path, docs, [{"minhash_dedup": {"max_partition_mb": 16}}], out="many"))
    finally:
        dedup.BYTES_PER_SLICE_ROW = old
    (d,) = [s for s in stats if s["name"] == "minhash_dedup"]
    assert d["extra"]["partitions_per_band"] >= 8
    assert duplicates(tmp_path / "many") == duplicates(tmp_path / "one") == gold


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bands": 14}, "both bands and rows"),
        ({"bands": 20, "rows": 8}, "exceeds num_perm"),
        ({"bands": 14, "rows": 8, "threshold": 0.8}, "not both"),
        ({"threshold": 1.5}, "threshold"),
        ({"keep": "last"}, "keep"),
        ({"ngrams": 5}, "ngram"),
    ],
)
def test_bad_parameters(tmp_path, params, message):
    with pytest.raises(ConfigError, match=message):
        pipeline(tmp_path, [{"id": "a", "text": "x"}], [{"minhash_dedup": params}])


@pytest.mark.slow
def test_ray_one_and_two_workers_agree(tmp_path):
    docs, gold = corpus()
    data = write_jsonl(tmp_path / "d.jsonl", docs)
    runs = {}
    for cpus in ("1", "2"):
        out = tmp_path / f"out{cpus}"
        cfg = write_config(
            tmp_path / f"p{cpus}.yaml",
            {
                "p": {
                    "input": {"format": "jsonl", "paths": [str(data)], "split_bytes": 8192},
                    "stages": [{"exact_dedup": {}}, {"minhash_dedup": {}}],
                    "output": str(out),
                }
            },
        )
        r = winnow("run", "p", "-c", str(cfg), "--no-progress", "--num-cpus", cpus)
        assert r.returncode == 0, r.stderr
        runs[cpus] = out
    assert duplicates(runs["1"]) == duplicates(runs["2"])
    assert {**duplicates(runs["1"])}.keys() == gold.keys()
    assert read_docs(runs["1"]) == read_docs(runs["2"])
    assert stats_without_time(runs["1"]) == stats_without_time(runs["2"])


@pytest.mark.slow
def test_sigkill_during_the_barrier_then_resume(tmp_path):
    """The driver and its Ray are SIGKILLed while the dedup barrier's band step runs; the rerun
    skips what finished (phase 0 tasks, signed parts, finished band slices) and gives the
    uninterrupted run's output."""
    docs, gold = corpus()
    rng = random.Random(9)
    docs += [{"id": f"x{i}", "text": " ".join(make_doc(rng, 120))} for i in range(3000)]
    data = write_jsonl(tmp_path / "d.jsonl", docs)

    def config(out):
        return write_config(
            tmp_path / f"{out}.yaml",
            {
                "p": {
                    "input": {"format": "jsonl", "paths": [str(data)], "split_bytes": 65536},
                    "stages": [{"minhash_dedup": {"band_sets": 8}}, {"gopher_repetition": {}}],
                    "output": str(tmp_path / out),
                }
            },
        )

    clean = winnow("run", "p", "-c", str(config("clean")), "--no-progress")
    assert clean.returncode == 0, clean.stderr[-3000:]
    band = tmp_path / "killed" / "_work" / "phase-1" / "steps" / "band"
    kill_run_when(
        ["run", "p", "-c", str(config("killed")), "--no-progress"],
        lambda: band.exists() and len(list(band.glob("*.json"))) >= 3,
    )
    finished = len(list(band.glob("*.json")))
    assert 0 < finished < 8 * 14
    assert not (tmp_path / "killed" / "stats.json").exists()
    signed = {p.name: p.stat().st_mtime_ns for p in (band.parent / "sign").glob("*.json")}

    again = winnow("run", "p", "-c", str(config("killed")), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (band.parent / "sign").glob("*.json")} == signed
    assert duplicates(tmp_path / "killed") == duplicates(tmp_path / "clean")
    assert set(duplicates(tmp_path / "clean")) == set(gold)
    assert read_docs(tmp_path / "killed") == read_docs(tmp_path / "clean")
    assert stats_without_time(tmp_path / "killed") == stats_without_time(tmp_path / "clean")
    assert not list((tmp_path / "killed").rglob(".*.tmp"))
