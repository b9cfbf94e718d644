"""The phase machinery for barrier stages, through the real driver with every task in this process."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
from helpers import write_config

from pipeline import registry
from pipeline.config import load_pipelines
from pipeline.executor import run_pipeline, split_phases
from pipeline.rundir import RunDir
from pipeline.stage import FilterStage


class KeepShortest(FilterStage):
    """A toy barrier: sees every part, then keeps only the documents of the shortest length."""

    name = "test_keep_shortest"
    barrier = True

    def run_barrier(self, ctx) -> None:
        lengths = [pc.min(pc.utf8_length(pq.read_table(p).column("text"))).as_py() for p in ctx.parts]
        (ctx.work / "min.json").write_text(json.dumps(min(lengths)))
        self.stats.count("parts_seen", len(ctx.parts))

    def setup(self) -> None:
        # the barrier's result is read in every task of the next phase
        self.min_len = json.loads((self.work / "min.json").read_text())

    def drop_reason(self, row) -> str | None:
        return None if len(row["text"]) == self.min_len else "longer"


def test_barrier_splits_phases_and_merges_stats(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.STAGES, KeepShortest.name, KeepShortest)
    docs = tmp_path / "docs.jsonl"
    rows = [{"id": str(i), "url": f"https://example.org/{i}", "text": "x" * (1 + i % 3)} for i in range(300)]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(
        tmp_path / "p.yaml",
        {
            "p": {
                "input": {"format": "jsonl", "paths": [str(docs)], "split_bytes": 4096},
                "stages": [{"url_filter": {"default_lists": False}}, {KeepShortest.name: {}}],
                "output": str(tmp_path / "out"),
            }
        },
    )
    (spec,) = load_pipelines(cfg)
    phases = split_phases(spec.stages)
    assert [[s.name for s in p.stages] for p in phases] == [["url_filter"], [KeepShortest.name]]
    assert phases[1].barrier is not None

    run_dir = RunDir(spec.output)
    source = registry.SOURCES["jsonl"](spec.input)
    shards = source.plan(spec.input_files)
    assert len(shards) > 1
    result = run_pipeline(spec, in_process=True)
    assert result.tasks_run == 2 * len(shards) and result.tasks_skipped == 0
    # phase 0 wrote its parts under _work (the barrier read them there); a finished run removes them
    assert len(list((run_dir.work / "phase-0" / "done").glob("*.json"))) == len(shards)
    assert not (run_dir.work / "phase-0" / "data").exists()
    assert len(list(run_dir.data.glob("part-*.parquet"))) == len(shards)

    out = pq.read_table(run_dir.data).to_pylist()
    assert sorted(int(r["id"]) for r in out) == [i for i in range(300) if i % 3 == 0]
    stats = result.stats
    assert stats == json.loads(run_dir.stats_file.read_text())
    assert [s["name"] for s in stats] == ["read", "url_filter", KeepShortest.name]
    last = stats[-1]
    assert last["docs_in"] == 300 and last["docs_out"] == 100 and last["dropped"] == {"longer": 200}
    assert last["extra"] == {"parts_seen": len(shards)}
