"""A two-node cluster run and a run killed midway both reproduce the uninterrupted local run."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pyarrow.parquet as pq
import pytest
from helpers import (
    REPO,
    WINNOW,
    cpu_hogs,
    kill_run_when,
    kill_tree,
    markers,
    read_docs,
    sample_pipeline,
    stats_without_time,
    winnow,
    write_config,
)
from raycluster import TwoNodeCluster

SPLIT = 262144  # ~14 tasks on the 3.4 MB sample


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted local run: what every other way of running must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp / "p.yaml", {"p": sample_pipeline(tmp / "run", split_bytes=SPLIT)})
    res = winnow("run", "p", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    return cfg, tmp / "run"


def _same_run(a, b) -> None:
    assert read_docs(a) == read_docs(b)
    assert stats_without_time(a) == stats_without_time(b)
    for stage in ("url_filter", "extract"):
        assert sorted(p.name for p in (a / "removed" / stage).glob("*")) == sorted(
            p.name for p in (b / "removed" / stage).glob("*")
        )


def test_two_node_cluster_matches_local_run(reference, tmp_path):
    cfg, ref = reference
    cluster = TwoNodeCluster().start()
    try:
        out = tmp_path / "cluster"
        res = winnow(
            "run",
            "p",
            "-c",
            str(cfg),
            "--output",
            str(out),
            "--address",
            cluster.address,
            "--no-progress",
            env=cluster.env,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        # the dedup barriers fan their own steps out over the cluster: same result as locally
        dedup_cfg = _dedup_config(tmp_path)
        on_cluster = winnow(
            "run", "d", "-c", str(dedup_cfg), "--output", str(tmp_path / "d-cluster"), "--address",
            cluster.address, "--no-progress", env=cluster.env,
        )  # fmt: skip
        assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    finally:
        cluster.stop()
    nodes = {m["node_id"] for m in markers(out)}
    assert len(nodes) == 2, "tasks should have run on both nodes"
    _same_run(out, ref)
    local = winnow("run", "d", "-c", str(dedup_cfg), "--output", str(tmp_path / "d-local"), "--no-progress")
    assert local.returncode == 0, local.stderr[-3000:]
    a, b = tmp_path / "d-cluster", tmp_path / "d-local"
    assert read_docs(a) == read_docs(b)
    assert stats_without_time(a) == stats_without_time(b)
    dups = [pq.read_table(r / "dedup" / "duplicates.parquet").to_pylist() for r in (a, b)]
    assert dups[0] == dups[1] and len(dups[0]) == 48  # 12 exact (case/punctuation) + 36 near


def _dedup_config(tmp_path):
    from test_dedup import corpus

    docs, _ = corpus()
    data = tmp_path / "dedup.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    stages = [{"exact_dedup": {}}, {"minhash_dedup": {}}]
    spec = {"input": {"format": "jsonl", "paths": [str(data)], "split_bytes": 8192}, "stages": stages}
    return write_config(tmp_path / "d.yaml", {"d": {**spec, "output": str(tmp_path / "d")}})


@pytest.mark.parametrize("hogs", [0, 4], ids=["idle", "loaded"])
def test_sigkill_midway_then_rerun_gives_the_uninterrupted_output(reference, tmp_path, hogs):
    """Killed and resumed, also next to busy processes (``hogs``): the output must not depend on
    how busy the machine was (``extract``'s budget is CPU time) nor on where the kill landed."""
    cfg, ref = reference
    out = tmp_path / "killed"
    total = len(markers(ref))
    done_dir = out / "_work" / "phase-0" / "done"
    with cpu_hogs(hogs):
        kill_run_when(
            ["run", "p", "-c", str(cfg), "--output", str(out), "--no-progress"],
            lambda: done_dir.exists() and len(list(done_dir.glob("*.json"))) >= 2,
            poll=0.05,
        )
        finished = len(list(done_dir.glob("*.json")))
        assert 0 < finished < total
        assert not (out / "stats.json").exists()

        res = winnow("run", "p", "-c", str(cfg), "--output", str(out), "--no-progress")
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"resumed: {finished} finished task(s) skipped, {total - finished} run" in res.stderr
    _same_run(out, ref)
    ids = [d["id"] for d in read_docs(out)]
    assert len(ids) == len(set(ids))
    assert not list(out.rglob(".*.tmp")), "temporary files of killed tasks are cleaned up"


def _running_task(p: psutil.Process) -> bool:
    try:
        return "ray::run_task" in " ".join(p.cmdline())
    except psutil.Error:  # gone or a zombie meanwhile
        return False


def test_a_worker_killed_mid_task_is_retried_and_the_run_completes(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "worker-killed"
    proc = subprocess.Popen(
        [*WINNOW, "run", "p", "-c", str(cfg), "--output", str(out), "--no-progress"],
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.time() + 300
    try:
        while killed is None and time.time() < deadline and proc.poll() is None:
            # Ray titles a worker process "ray::run_task" while it executes one of our tasks
            busy = [p for p in psutil.Process(proc.pid).children(recursive=True) if _running_task(p)]
            if busy:
                killed = busy[0].pid
                busy[0].kill()
            time.sleep(0.05)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    assert killed is not None, "no busy worker was seen"
    assert proc.returncode == 0, err[-3000:]
    _same_run(out, ref)
