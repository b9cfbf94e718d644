"""The engine's contract: pass-through barriers hand parts on without copying, a finished run
removes its intermediates, the run lock, the typed task records, ``winnow stages`` and stages
registered by an installed package through the ``winnow.stages`` entry-point group."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
from helpers import REPO, read_docs, winnow, write_config

from pipeline import executor, registry
from pipeline.atomic import atomic_file, atomic_write_json, remove_stale_temps
from pipeline.config import load_pipelines
from pipeline.executor import RunFailed, run_pipeline
from pipeline.rundir import RunDir
from pipeline.stage import Stage, Task


class PassA(Stage):
    """A pass-through barrier (as tokenizer_train is): sees every part, keeps every row."""

    name = "test_pass_a"
    barrier = True
    passes_through = True

    def run_barrier(self, ctx) -> None:
        self.stats.count("parts_seen", len(ctx.parts))
        assert all(isinstance(t, Task) and t.part for t in ctx.tasks)

    def transform(self, batch):
        return batch, [None] * batch.num_rows


class PassB(PassA):
    name = "test_pass_b"


class CopyA(PassA):
    """The same stage, but the executor must run its (identity) transform and write new parts."""

    name = "test_copy_a"
    passes_through = False


class CopyB(CopyA):
    name = "test_copy_b"


@pytest.fixture
def barrier_stages(monkeypatch):
    for cls in (PassA, PassB, CopyA, CopyB):
        monkeypatch.setitem(registry.STAGES, cls.name, cls)


def spec_for(tmp_path, stages, out, rows=600):
    docs = tmp_path / "docs.jsonl"
    if not docs.exists():
        lines = [
            {"id": f"d{i}", "url": f"https://example.org/{i}", "text": f"document {i} " + "word " * (i % 17)}
            for i in range(rows)
        ]
        docs.write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = write_config(
        tmp_path / f"{out}.yaml",
        {
            "p": {
                "input": {"format": "jsonl", "paths": [str(docs)], "split_bytes": 8192},
                "stages": stages,
                "output": str(tmp_path / out),
            }
        },
    )
    (spec,) = load_pipelines(cfg)
    return spec


URL_FILTER = {"url_filter": {"default_lists": False, "block_url_substrings": ["/1"]}}


def _parts(run):
    return {p.name: p.read_bytes() for p in sorted((run / "data").glob("part-*.parquet"))}


def test_pass_through_barriers_link_parts_instead_of_copying(tmp_path, barrier_stages, monkeypatch):
    kept = []  # the run's intermediates, looked at before the clean-up removes them
    monkeypatch.setattr(executor, "_remove_intermediates", lambda run_dir: kept.append(run_dir))
    spec = spec_for(tmp_path, [URL_FILTER, {"test_pass_a": {}}, {"test_pass_b": {}}], "linked")
    result = run_pipeline(spec, in_process=True)
    run = RunDir(spec.output)
    parts = sorted(run.data.glob("part-*.parquet"))
    assert len(parts) > 1
    for part in parts:  # one file on disk, three names: phase 0's part, phase 1's and data/
        assert os.path.samefile(part, run.phase_dir(0) / "data" / part.name)
        assert os.path.samefile(part, run.phase_dir(1) / "data" / part.name)
        assert os.stat(part).st_nlink == 3
    markers = [json.loads(p.read_text()) for p in sorted((run.phase_dir(2) / "done").glob("*.json"))]
    assert markers and all(m["linked"] for m in markers)

    # The linked run equals the run where the executor copies every row through the identity
    # transform: same parts byte for byte, same stats (names aside), same manifest counts.
    copied_spec = spec_for(tmp_path, [URL_FILTER, {"test_copy_a": {}}, {"test_copy_b": {}}], "copied")
    copied = run_pipeline(copied_spec, in_process=True)
    assert _parts(tmp_path / "linked") == _parts(tmp_path / "copied")

    def comparable(stats):
        names = {"test_copy_a": "test_pass_a", "test_copy_b": "test_pass_b"}
        return [{**s, "name": names.get(s["name"], s["name"]), "seconds": 0} for s in stats]

    assert comparable(result.stats) == comparable(copied.stats)
    (url,) = [s for s in result.stats if s["name"] == "url_filter"]
    (a,) = [s for s in result.stats if s["name"] == "test_pass_a"]
    assert a["docs_in"] == a["docs_out"] == url["docs_out"] > 0
    assert a["bytes_in"] == a["bytes_out"] == url["bytes_out"] > 0
    assert a["extra"] == {"parts_seen": len(parts)}

    # the clean-up after a finished run: intermediates go, data and the bookkeeping stay
    monkeypatch.undo()
    executor._remove_intermediates(run)
    assert not list(run.work.glob("phase-*/data"))
    assert _parts(tmp_path / "linked") == _parts(tmp_path / "copied")
    assert all(os.stat(p).st_nlink == 1 for p in parts)
    assert len(list(run.work.glob("phase-*/done/*.json"))) == 3 * len(parts)


def test_a_linked_part_right_after_the_reader_counts_the_same_bytes(tmp_path, barrier_stages):
    """No per-row stage before the pass-through barrier: its bytes come from the part's text column
    (the reader's marker does not count them as StageRunner does); still equal to the copy path."""
    linked = run_pipeline(spec_for(tmp_path, [{"test_pass_a": {}}], "linked"), in_process=True)
    copied = run_pipeline(spec_for(tmp_path, [{"test_copy_a": {}}], "copied"), in_process=True)
    a, b = linked.stats[-1], copied.stats[-1]
    assert {**a, "name": "", "seconds": 0} == {**b, "name": "", "seconds": 0}
    assert a["bytes_in"] > 0


def test_a_finished_run_keeps_no_corpus_copy_and_reruns_instantly(tmp_path, barrier_stages):
    spec = spec_for(tmp_path, [URL_FILTER, {"test_copy_a": {}}, {"test_pass_b": {}}], "out")
    first = run_pipeline(spec, in_process=True)
    run = RunDir(spec.output)
    # nothing under _work but JSON bookkeeping: every Parquet file left is an output
    leftovers = [p for p in run.work.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert leftovers == []
    again = run_pipeline(spec, in_process=True)
    assert again.tasks_run == 0 and again.tasks_skipped == first.tasks_run
    assert again.stats == first.stats
    assert len(read_docs(tmp_path / "out")) == first.stats[-1]["docs_out"]


def test_phase_bookkeeping_never_compares_task_records(tmp_path, monkeypatch):
    """Finished/todo tasks are found by index (a set), not by list membership, which compared
    task records pairwise: quadratic, 3.9 s at 20 k tasks and ~100 s per phase at 100 k."""

    @dataclass(frozen=True, eq=False)
    class NoCompare(Task):
        def __eq__(self, other):
            raise AssertionError("task records compared")

        __hash__ = object.__hash__

    run = RunDir(tmp_path / "run")
    phase = executor.Phase(0, [])
    phase.tasks = [NoCompare(i, True, part=str(tmp_path / "x")) for i in range(20_000)]
    for i in range(0, 20_000, 2):  # half of them finished earlier
        run.marker(0, i).parent.mkdir(parents=True, exist_ok=True)
        run.marker(0, i).write_text('{"rows": 1}')
    (tmp_path / "x").write_bytes(b"1")
    dispatched = []

    def fake_dispatch(spec, run_dir, phase, todo, ensure_ray, in_process):
        dispatched.extend(t.index for t in todo)
        for t in todo:
            yield t, {"node_id": "", "rows": 2}

    monkeypatch.setattr(executor, "_dispatch", fake_dispatch)
    progress = []
    run_n, skipped, _ = executor._run_phase(None, run, phase, lambda *a: progress.append(a), lambda: None)
    assert (run_n, skipped) == (10_000, 10_000)
    assert sorted(dispatched) == list(range(1, 20_000, 2))
    assert progress[-1] == ("running", 20_000, 20_000, 10_000 * 1 + 10_000 * 2)


# --- the run lock -----------------------------------------------------------------------------------


@pytest.fixture
def small_spec(tmp_path):
    return spec_for(tmp_path, [URL_FILTER], "out", rows=50)


def _lock(spec, **held):
    path = RunDir(spec.output).work / "lock.json"
    atomic_write_json(path, held)
    return path


def test_lock_held_on_another_host_is_never_taken_silently(small_spec):
    _lock(small_spec, host="some-other-node", pid=os.getpid())
    with pytest.raises(RunFailed, match=r"host 'some-other-node'.*--force-unlock"):
        run_pipeline(small_spec, in_process=True)
    assert not (small_spec.output / "data").exists()
    result = run_pipeline(small_spec, in_process=True, force_unlock=True)
    assert result.tasks_run > 0
    assert not (small_spec.output / "_work" / "lock.json").exists()  # released at the end


def test_lock_of_a_live_process_on_this_host_refuses(small_spec):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = executor._pid_started(sleeper.pid)
        _lock(small_spec, host=socket.gethostname(), pid=sleeper.pid, pid_started=started)
        with pytest.raises(RunFailed, match=f"pid {sleeper.pid}"):
            run_pipeline(small_spec, in_process=True)
        # the same pid with another start time is another process (the holder died, pid reused)
        _lock(small_spec, host=socket.gethostname(), pid=sleeper.pid, pid_started=started - 1)
        assert run_pipeline(small_spec, in_process=True).tasks_run > 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(small_spec):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(small_spec, host=socket.gethostname(), pid=dead.pid, pid_started=1)
    assert run_pipeline(small_spec, in_process=True).tasks_run > 0


def test_force_unlock_in_the_cli(small_spec):
    _lock(small_spec, host="some-other-node", pid=1)
    cfg = small_spec.config_file
    refused = winnow("run", "p", "-c", str(cfg), "--num-cpus", "1", "--no-progress")
    assert refused.returncode == 1 and "--force-unlock" in refused.stderr
    forced = winnow("run", "p", "-c", str(cfg), "--num-cpus", "1", "--no-progress", "--force-unlock")
    assert forced.returncode == 0, forced.stderr
    assert (small_spec.output / "stats.json").exists()


# --- atomic writes ----------------------------------------------------------------------------------


def test_atomic_file_leaves_nothing_on_error_and_stale_temps_are_removed(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    (tmp_path / ".b.parquet.1234abcd.tmp").write_bytes(b"x")
    (tmp_path / ".step-00000001.tmp-x9").mkdir()
    (tmp_path / ".keep").write_bytes(b"not ours")
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "a.bin"]


def test_one_atomic_writer_module():
    """Files and folders readers must see whole are written by pipeline.atomic only: no other
    module renames temp files into place."""
    offenders = []
    for pkg in ("pipeline", "stages", "tokenizer", "train"):
        for path in (REPO / pkg).glob("*.py"):
            if path.name == "atomic.py":
                continue
            text = path.read_text()
            if "os.replace(" in text or ".rename(" in text or "os.fsync(" in text:
                offenders.append(path.name)
    # append-only logs (metrics.jsonl, the crawl journal and WARC files) fsync through
    # pipeline.atomic.fsync_open too
    assert offenders == []


# --- winnow stages ---------------------------------------------------------------------------------


def test_every_builtin_parameter_is_documented():
    from pipeline.catalog import catalog

    missing = [
        f"{e['name']}.{p['name']}"
        for e in catalog()
        if e["registered_by"].startswith("entry point builtin") or e["class"].startswith("stages.")
        for p in e["params"]
        if not p["description"]
    ]
    assert missing == []


def test_stages_cli_lists_every_stage_with_its_file_and_parameters():
    res = winnow("stages")
    assert res.returncode == 0, res.stderr
    registry.load_stages()
    for name, cls in registry.STAGES.items():
        if cls.__module__.startswith("stages."):
            path = cls.__module__.replace(".", "/") + ".py"
            assert f"{name}  [" in res.stdout and path in res.stdout
    for fmt in ("warc", "jsonl", "parquet"):
        assert f"{fmt}  [input format]" in res.stdout

    one = winnow("stages", "minhash_dedup")
    assert one.returncode == 0
    assert "stages/dedup.py" in one.stdout and "registered by entry point builtin = stages" in one.stdout
    assert "threshold: float | None = None (> 0, < 1)" in one.stdout
    assert "Jaccard from which pairs are duplicates" in one.stdout

    as_json = json.loads(winnow("stages", "extract", "--json").stdout)
    assert [e["name"] for e in as_json] == ["extract"]
    assert {p["name"] for p in as_json[0]["params"]} == set(registry.STAGES["extract"].Params.model_fields)

    bad = winnow("stages", "minhash_dedupe")
    assert bad.returncode == 2 and "did you mean 'minhash_dedup'" in bad.stderr


# --- stages from an installed package ----------------------------------------------------------------

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "winnow-plugin-demo"
        version = "0.1"

        [project.entry-points."winnow.stages"]
        demo = "winnow_plugin_demo"

        [tool.setuptools]
        packages = ["winnow_plugin_demo"]
    """,
    "winnow_plugin_demo/__init__.py": '''
        """A user's own stage, outside winnow's source tree."""
        from pydantic import Field

        from pipeline.registry import register_stage
        from pipeline.stage import FilterStage, Params


        class DropShortParams(Params):
            min_chars: int = Field(10, ge=0, description="drop texts with fewer characters")


        @register_stage
        class DropShort(FilterStage):
            """Drops short documents (a user plugin)."""

            name = "demo_drop_short"
            Params = DropShortParams

            def drop_reason(self, row):
                return "too_short" if len(row["text"]) < self.params.min_chars else None
    ''',
}


def test_a_stage_from_an_installed_package(tmp_path):
    src = tmp_path / "plugin"
    for rel, text in PLUGIN.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(textwrap.dedent(text).lstrip())
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert list(site.glob("winnow_plugin_demo-0.1.dist-info/entry_points.txt"))
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    listed = winnow("stages", "demo_drop_short", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "winnow_plugin_demo/__init__.py" in listed.stdout
    assert "registered by entry point demo = winnow_plugin_demo of winnow-plugin-demo" in listed.stdout
    assert "min_chars: int = 10 (>= 0)" in listed.stdout

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": "x" * i}) + "\n" for i in range(20)))
    cfg = write_config(
        tmp_path / "p.yaml",
        {
            "p": {
                "input": {"format": "jsonl", "paths": [str(docs)]},
                "stages": [{"demo_drop_short": {"min_chars": 5}}],
                "output": str(tmp_path / "out"),
            }
        },
    )
    typo = write_config(
        tmp_path / "typo.yaml",
        {
            "p": {
                "input": {"format": "jsonl", "paths": [str(docs)]},
                "stages": [{"demo_drop_short": {"min": 5}}],
            }
        },
    )
    bad = winnow("validate", "-c", str(typo), env=env)
    assert bad.returncode == 2 and "unknown parameter 'min'" in bad.stderr
    # without the package on the path the stage does not exist, and validation says so
    assert "unknown stage" in winnow("validate", "-c", str(cfg)).stderr

    ran = winnow("run", "p", "-c", str(cfg), "--num-cpus", "1", "--no-progress", env=env)
    assert ran.returncode == 0, ran.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats[-1]["name"] == "demo_drop_short"
    assert stats[-1]["dropped"] == {"too_short": 5} and stats[-1]["docs_out"] == 15
    assert sorted(int(r["id"]) for r in pq.read_table(tmp_path / "out" / "data").to_pylist()) == list(
        range(5, 20)
    )


def test_stages_and_the_engine_do_not_import_upward():
    """pipeline/ (the engine) imports none of stages/, tokenizer/, train/; stages/ and tokenizer/
    never import train/; stages use the stage contract, not the executor."""
    import ast

    def imports(pkg):
        found = set()
        for path in (REPO / pkg).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {(path.name, a.name) for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    found |= {(path.name, node.module)}
        return found

    def offending(pkg, banned):
        return sorted(f"{f}: {m}" for f, m in imports(pkg) if m.split(".")[0] in banned or m in banned)

    assert offending("pipeline", {"stages", "tokenizer", "train"}) == []
    assert offending("tokenizer", {"stages", "train"}) == []
    assert offending("stages", {"train", "pipeline.executor"}) == []
