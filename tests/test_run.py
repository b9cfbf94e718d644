"""End-to-end runs on a local Ray: output, stats contract, resume, --fresh, failures."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_docs, sample_pipeline, stats_without_time, winnow, write_config

from pipeline.rundir import ROW_GROUP_ROWS


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The default pipeline (url_filter + extract) on the in-repo sample, run once for this module."""
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "run"
    cfg = write_config(tmp / "pipelines.yaml", {"demo": sample_pipeline(out)})
    res = winnow("run", "demo", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    return cfg, out, res


def test_output_columns_ids_and_texts(demo_run):
    _, out, res = demo_run
    docs = read_docs(out)
    assert len(docs) > 150
    assert set(docs[0]) == {"id", "url", "warc_date", "charset", "text"}
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("<urn:uuid:") for i in ids)
    assert all(d["text"] and d["text"].strip() for d in docs)
    assert all("<html" not in d["text"].lower()[:200] for d in docs)
    for part in (out / "data").glob("part-*.parquet"):
        meta = pq.ParquetFile(part).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert all(meta.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(meta.num_row_groups))
    assert "url_filter" in res.stdout and "extract" in res.stdout  # the stats table is printed


def test_stats_chain_and_reasons_are_consistent(demo_run):
    _, out, _ = demo_run
    stats = json.loads((out / "stats.json").read_text())
    assert [s["name"] for s in stats] == ["read", "url_filter", "extract"]
    for s in stats:
        assert set(s) >= {
            "name",
            "docs_in",
            "docs_out",
            "dropped",
            "bytes_in",
            "bytes_out",
            "seconds",
            "extra",
        }
        assert s["docs_in"] - s["docs_out"] == sum(s["dropped"].values()), s["name"]
    for prev, cur in itertools.pairwise(stats):
        assert cur["docs_in"] == prev["docs_out"]
        assert cur["bytes_in"] == prev["bytes_out"]
    assert stats[-1]["docs_out"] == len(read_docs(out))
    # the sample holds 4 non-HTML assets and one warcinfo record
    assert stats[0]["dropped"]["not_html"] == 4
    assert stats[0]["dropped"]["record_type:warcinfo"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["docs_out"] == stats[-1]["docs_out"]
    assert sum(p["rows"] for p in manifest["outputs"]["data"]) == stats[-1]["docs_out"]


def test_dropped_samples_name_their_reason(demo_run):
    _, out, _ = demo_run
    stats = {s["name"]: s for s in json.loads((out / "stats.json").read_text())}
    for stage in ("url_filter", "extract"):
        files = list((out / "removed" / stage).glob("part-*.parquet"))
        if not stats[stage]["dropped"]:
            assert not files
            continue
        rows = pa.concat_tables(pq.read_table(f) for f in files).to_pylist()
        reasons = Counter(r["reason"] for r in rows)
        # every reason is sampled, never more often than it happened
        assert set(reasons) == set(stats[stage]["dropped"])
        assert all(reasons[r] <= n for r, n in stats[stage]["dropped"].items())


def test_stats_cli_table_and_json(demo_run):
    _, out, _ = demo_run
    res = winnow("stats", str(out))
    assert res.returncode == 0
    assert "docs/s" in res.stdout and "url_filter" in res.stdout
    res = winnow("stats", str(out), "--json")
    assert json.loads(res.stdout) == json.loads((out / "stats.json").read_text())
    assert winnow("stats", str(out / "nope")).returncode == 2


def test_report_of_a_real_run_shows_every_stage_count_reason_and_sampled_drop(demo_run):
    """The report of a real run (tests/test_report.py opens reports in Chromium): each stage's
    integer counts and drop reasons as stats.json has them, a sample for every reason with rows in
    removed/ (from any part file, not only the first), escaped, no script."""
    import html
    import re

    _, out, _ = demo_run
    res = winnow("report", str(out), "-o", str(out / "r.html"))
    assert res.returncode == 0
    page = (out / "r.html").read_text()
    stats = json.loads((out / "stats.json").read_text())
    assert stats and any(s["dropped"] for s in stats)
    for s in stats:
        name = html.escape(s["name"])
        for key in ("docs_in", "docs_out"):
            assert f'data-key="{key}" data-stage="{name}" data-value="{s[key]}">{s[key]:,}<' in page
        for reason, n in s["dropped"].items():
            assert f"data-stage='{name}' data-reason='{html.escape(reason)}' data-value='{n}'" in page
        reasons = set()
        for part in sorted((out / "removed" / s["name"]).glob("part-*.parquet")):
            reasons.update(pq.read_table(part, columns=["reason"]).column(0).to_pylist())
        for reason in reasons:
            assert f"data-stage='{name}' data-sample-reason='{html.escape(reason)}'" in page
        if reasons:
            ids = set()
            for part in (out / "removed" / s["name"]).glob("part-*.parquet"):
                ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
            shown = set(re.findall(r"id: ([^ <]+)", page))
            assert shown & {html.escape(i) for i in ids}
    assert "<script" not in page.lower()


def test_unfinished_run_stats_come_from_the_task_markers(demo_run, tmp_path):
    """Without stats.json (a run killed before its end) `winnow stats` and the report sum the task
    markers and barrier summaries: on a whole run that gives exactly stats.json, in its order."""
    import shutil

    from pipeline.report_data import load_run

    _, out, _ = demo_run
    copy = tmp_path / "unfinished"
    shutil.copytree(out, copy)
    (copy / "stats.json").unlink()
    (copy / "manifest.json").unlink()
    run = load_run(copy)
    assert not run.complete
    assert run.stats == json.loads((out / "stats.json").read_text())
    res = winnow("stats", str(copy), "--json")
    assert res.returncode == 0 and "incomplete" in res.stderr
    assert json.loads(res.stdout) == run.stats
    res = winnow("report", str(copy), "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0
    assert 'data-complete="false"' in (tmp_path / "r.html").read_text()


def test_rerun_resumes_without_work_and_fresh_reruns(demo_run):
    cfg, out, _ = demo_run
    before = read_docs(out)
    stats_before = stats_without_time(out)
    res = winnow("run", "demo", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0
    assert "0 run" in res.stderr  # every task skipped
    assert read_docs(out) == before and stats_without_time(out) == stats_before
    # a changed config is refused instead of mixing two runs in one directory
    changed = json.loads(json.dumps(sample_pipeline(out, stages=[{"url_filter": {}}])))
    write_config(cfg.parent / "changed.yaml", {"demo": changed})
    res = winnow("run", "demo", "-c", str(cfg.parent / "changed.yaml"), "--no-progress")
    assert res.returncode == 1 and "--fresh" in res.stderr
    res = winnow("run", "demo", "-c", str(cfg), "--no-progress", "--fresh")
    assert res.returncode == 0 and "resumed" not in res.stderr
    assert read_docs(out) == before and stats_without_time(out) == stats_before


def test_failing_task_fails_the_run_naming_its_input(tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a"], "body": ["no text column here"]}), bad)
    cfg = write_config(
        tmp_path / "p.yaml",
        {
            "p": {
                "input": {"format": "parquet", "paths": [str(bad)]},
                "stages": [],
                "max_retries": 1,
                "output": str(tmp_path / "out"),
            }
        },
    )
    res = winnow("run", "p", "-c", str(cfg), "--no-progress")
    assert res.returncode == 1
    assert "bad.parquet" in res.stderr and "no column 'text'" in res.stderr
    assert "2 attempt(s)" in res.stderr
    assert not (tmp_path / "out" / "stats.json").exists()


def test_bad_inputs_are_counted_and_nothing_else_is_lost(tmp_path, big_page):
    """Through the whole pipeline on Ray: garbage, a legacy charset, an empty page, a 50 MiB page
    and a truncated gzip member each end up as a counted drop, and every good page comes out."""
    import warcgen

    prose = " ".join(
        "Le café crème de la brasserie est servi chaque matin aux habitués du quartier." for _ in range(8)
    )
    legacy = (
        f'<html><head><meta charset="windows-1252"><title>Café</title></head>'
        f"<body><article><h1>Crème brûlée</h1><p>{prose}</p></article></body></html>"
    ).encode("cp1252")
    garbage = b"\x00\xffNOT A WARC RECORD\r\n" * 50
    truncated = warcgen.response(7)
    path, _ = warcgen.write(
        tmp_path / "bad.warc.gz",
        [
            warcgen.other(0, "warcinfo"),
            warcgen.response(1),
            garbage,
            warcgen.response(2, legacy, content_type="text/html"),
            warcgen.response(3, b""),
            warcgen.response(4, big_page),
            warcgen.response(5),
            truncated[: len(truncated) // 2],
        ],
    )
    cfg = write_config(
        tmp_path / "p.yaml",
        {
            "p": {
                "input": {"format": "warc", "paths": [str(path)]},
                "output": str(tmp_path / "out"),
                "stages": [{"url_filter": {}}, {"extract": {}}],
            }
        },
    )
    res = winnow("run", "p", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    stats = {s["name"]: s for s in json.loads((tmp_path / "out" / "stats.json").read_text())}
    assert stats["read"]["dropped"] == {"empty_payload": 1, "gzip_truncated": 1, "record_type:warcinfo": 1}
    assert stats["read"]["extra"]["garbage_bytes"] == len(garbage)
    assert stats["extract"]["dropped"] == {"too_large": 1}
    docs = {d["id"]: d for d in read_docs(tmp_path / "out")}
    assert sorted(docs) == [warcgen.rid(n) for n in (1, 2, 5)]
    assert "Le café crème de la brasserie" in docs[warcgen.rid(2)]["text"]
    assert docs[warcgen.rid(2)]["charset"] == "cp1252"
