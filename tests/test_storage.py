"""Remote inputs and run directories on object storage, against servers on 127.0.0.1 only.

An S3-compatible server (moto, a subprocess this module starts and ends by PID) and an HTTP
server with ``Range`` support and injected failures (``s3server.RangeServer``).  Every test runs
with an explicit endpoint, fake credentials and instance-metadata lookups off, so nothing can
reach a public name.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import warcgen
from helpers import REPO, kill_run_when, read_docs, write_config
from raycluster import TwoNodeCluster
from s3server import ACCESS_KEY, SECRET_KEY, RangeServer, S3Server

from pipeline import storage
from pipeline.config import load_pipelines
from pipeline.executor import RunFailed, run_pipeline
from pipeline.source import InputParams, select_files

STAGES = [{"url_filter": {"default_lists": False, "block_domains": ["site3.example.org"]}}, {"extract": {}}]
SPLIT = 8192  # bytes per task: several range-read tasks per file


@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    storage._FS.clear()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        storage._FS.clear()


def _warc(path: Path, first: int, n: int = 80) -> Path:
    """A multi-member WARC of ``n`` small pages (~500 bytes compressed each) and a warcinfo."""
    records = [warcgen.other(first, "warcinfo")]
    records += [warcgen.response(i, warcgen.page(i, words=120)) for i in range(first, first + n)]
    warcgen.write(path, records)
    return path


@pytest.fixture(scope="module")
def warcs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("warcs")
    return [_warc(d / f"crawl-{k}.warc.gz", 100 * k) for k in range(3)]


def _bucket(s3: S3Server, name: str, files: dict[str, bytes] | None = None) -> str:
    client = s3.client()
    client.create_bucket(Bucket=name)
    for key, data in (files or {}).items():
        client.put_object(Bucket=name, Key=key, Body=data)
    return f"s3://{name}"


def _spec(tmp: Path, inputs: dict, output: str | Path, stages: list | None = None, name: str = "p"):
    cfg = write_config(
        tmp / f"{name}.yaml",
        {
            name: {
                "input": {"format": "warc", "split_bytes": SPLIT, **inputs},
                "output": str(output),
                "stages": STAGES if stages is None else stages,
            }
        },
    )
    return load_pipelines(cfg, [name])[0]


def _stats(run: Path) -> list[dict]:
    stats = json.loads((run / "stats.json").read_text())
    for s in stats:
        s.pop("seconds")
        for key in ("remote_requests", "remote_bytes", "read_retries"):
            s["extra"].pop(key, None)
    return stats


def _download(s3: S3Server, url: str, dest: Path) -> Path:
    """Copy a run directory out of the bucket (to compare it with a local run)."""
    bucket, prefix = url[len("s3://") :].split("/", 1)
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
    return dest


@pytest.fixture(scope="module")
def local_run(warcs, tmp_path_factory) -> Path:
    """The reference: the same files read from local disk into a local run directory."""
    tmp = tmp_path_factory.mktemp("local")
    spec = _spec(tmp, {"paths": [str(w) for w in warcs]}, tmp / "run")
    run_pipeline(spec, in_process=True)
    return tmp / "run"


# --- inputs --------------------------------------------------------------------------------------


def test_s3_inputs_glob_and_range_reads(s3, warcs, local_run, tmp_path):
    url = _bucket(s3, "inputs", {f"cc/{w.name}": w.read_bytes() for w in warcs})
    spec = _spec(tmp_path, {"paths": [f"{url}/cc/*.warc.gz"]}, tmp_path / "run")
    assert spec.input_files == [f"{url}/cc/{w.name}" for w in warcs]
    run_pipeline(spec, in_process=True)
    assert read_docs(tmp_path / "run") == read_docs(local_run)  # ids are WARC-Record-IDs either way
    assert _stats(tmp_path / "run") == _stats(local_run)
    # a byte-range task fetched its range (and the rest of its last member), never the whole file
    size = warcs[0].stat().st_size
    markers = [json.loads(p.read_text()) for p in (tmp_path / "run/_work/phase-0/done").glob("*.json")]
    assert len(markers) >= 3 * (size // SPLIT)
    for m in markers:
        extra = m["stats"][0]["extra"]
        assert 0 < extra["remote_bytes"] < size, extra
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert [i["bytes"] for i in manifest["inputs"]] == [w.stat().st_size for w in warcs]


def test_remote_warc_gz_names_are_planned_without_probing_and_read_like_local(s3, tmp_path):
    """A remote ``*.warc.gz`` is split by name; a plain and a whole-file-gzip WARC so named still
    give exactly the local documents and drops (no record read twice)."""
    import gzip as gz

    from stages.warc import WarcSource

    records = [warcgen.response(i, warcgen.page(i, words=150), gzip=False) for i in range(30)]
    plain = b"".join(records)
    files = {"plain.warc.gz": plain, "whole.warc.gz": gz.compress(plain)}
    url = _bucket(s3, "named", files)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        local = warcgen.read(WarcSource, [tmp_path / name], split_bytes=4096)
        remote = warcgen.read(WarcSource, [f"{url}/{name}"], split_bytes=4096)
        assert len(local.shards) == 1 and len(remote.shards) == -(-len(data) // 4096) > 1
        assert remote.rows == local.rows and len(local.rows) == 30, name
        assert remote.stats.dropped == local.stats.dropped, name


def test_jsonl_and_parquet_inputs_from_s3_read_like_local(s3, tmp_path):
    """JSON Lines split in byte ranges, compressed JSON Lines and Parquet row groups, from a bucket."""
    import pyarrow as pa

    from stages.tabular import JsonlSource, ParquetSource

    docs = [
        {"id": f"d{i}", "text": " ".join(warcgen.WORDS[(i + k) % 39] for k in range(40))} for i in range(300)
    ]
    lines = "".join(json.dumps(d) + "\n" for d in docs).encode()
    table = pa.Table.from_pylist(docs)
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=25)
    files = {
        "d.jsonl": lines,
        "d.jsonl.gz": gzip.compress(lines),
        "d.parquet": (tmp_path / "d.parquet").read_bytes(),
    }
    url = _bucket(s3, "tabular", files)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        cls = ParquetSource if name.endswith(".parquet") else JsonlSource
        local = warcgen.read(cls, [tmp_path / name], split_bytes=8192)
        remote = warcgen.read(cls, [f"{url}/{name}"], split_bytes=8192)
        assert [r["id"] for r in remote.rows] == [d["id"] for d in docs], name
        assert remote.rows == local.rows and len(remote.shards) == len(local.shards), name
        assert remote.stats.extra["remote_bytes"] > 0


def test_paths_file_over_http_with_failures_is_retried_and_counted(warcs, local_run, tmp_path):
    site = tmp_path / "site"
    (site / "crawl").mkdir(parents=True)
    for w in warcs:
        shutil.copy(w, site / "crawl" / w.name)
    (site / "warc.paths.gz").write_bytes(gzip.compress("".join(f"crawl/{w.name}\n" for w in warcs).encode()))
    server = RangeServer(site, fail_every=4).start()
    try:
        spec = _spec(
            tmp_path, {"paths_file": f"{server.url}warc.paths.gz", "base_url": server.url}, tmp_path / "run"
        )
        assert spec.input_files == [f"{server.url}crawl/{w.name}" for w in warcs]
        run_pipeline(spec, in_process=True)
    finally:
        server.stop()
    assert server.failures >= 5  # 503s and connections dropped mid-body, both
    assert all(r is not None for path, r in server.gets if path.endswith(".warc.gz"))  # range reads only
    assert read_docs(tmp_path / "run") == read_docs(local_run)
    assert _stats(tmp_path / "run") == _stats(local_run)
    retries = json.loads((tmp_path / "run/stats.json").read_text())[0]["extra"]["read_retries"]
    assert 0 < retries <= server.failures


def test_unreadable_file_fails_its_task_with_the_url(warcs, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "BACKOFF_START_S", 0.01)
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(warcs[0], site / "a.warc.gz")
    (site / "paths.txt").write_text("a.warc.gz\n")
    server = RangeServer(site).start()
    server.broken.add("/a.warc.gz")  # planning reads its head; a task reading further gets 503s only
    try:
        spec = _spec(
            tmp_path, {"paths_file": str(site / "paths.txt"), "base_url": server.url}, tmp_path / "r"
        )
        with pytest.raises(RunFailed, match=r"a\.warc\.gz.*still failing after 6 attempts"):
            run_pipeline(spec, in_process=True)
        # the README's way out: skip_unreadable (not hashed), and the run resumes to the end
        skipping = _spec(
            tmp_path,
            {"paths_file": str(site / "paths.txt"), "base_url": server.url, "skip_unreadable": True},
            tmp_path / "r",
        )
        assert skipping.config_hash() == spec.config_hash()
        result = run_pipeline(skipping, in_process=True)
    finally:
        server.stop()
    read = result.stats[0]
    assert read["dropped"]["unreadable"] == result.tasks_run  # each shard reads past the file's head
    assert read["extra"]["unreadable_files"] == {f"{server.url}a.warc.gz": result.tasks_run}


def test_sample_files_is_deterministic_and_independent_of_listing_order():
    files = [f"s3://b/crawl/{i:03d}.warc.gz" for i in range(50)]
    params = InputParams(format="warc", paths=["x"], sample_files=7, sample_seed=3)
    chosen = select_files(files, params)
    assert len(chosen) == 7 and chosen == sorted(chosen)
    assert sorted(select_files(list(reversed(files)), params)) == chosen
    other_seed = select_files(files, params.model_copy(update={"sample_seed": 4}))
    assert other_seed != chosen
    assert select_files(files, params.model_copy(update={"max_files": 2})) == chosen[:2]
    assert select_files(files, InputParams(format="warc", paths=["x"], max_files=3)) == files[:3]


def test_credentials_in_the_config_are_refused(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="credentials in a URL are not accepted") as err:
        _spec(tmp_path, {"paths": ["https://user:hunter2@example.invalid/a.warc.gz"]}, tmp_path / "r")
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match=r"no filesystem for nosuchscheme://"):
        _spec(tmp_path, {"paths": ["nosuchscheme://bucket/*.warc.gz"]}, tmp_path / "r")


# --- run directory on object storage -------------------------------------------------------------


def _run_env(s3: S3Server, tmp: Path) -> dict:
    return {**os.environ, **s3.env, "RAY_AUTH_MODE": "disabled", "WINNOW_SCRATCH": str(tmp / "scratch")}


def test_run_dir_on_s3_equals_local_and_leaks_no_secret(s3, warcs, local_run, tmp_path):
    inputs = _bucket(s3, "in-run", {w.name: w.read_bytes() for w in warcs})
    out = _bucket(s3, "runs") + "/p1"
    cfg = write_config(
        tmp_path / "p.yaml",
        {
            "p": {
                "input": {"format": "warc", "split_bytes": SPLIT, "paths": [f"{inputs}/*.gz"]},
                "output": out,
                "stages": STAGES,
            }
        },
    )
    check = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", "p", "-c", str(cfg), "--check-access"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_run_env(s3, tmp_path),
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            "p",
            "-c",
            str(cfg),
            "--no-progress",
            "--num-cpus",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_run_env(s3, tmp_path),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"output: {out}" in res.stdout
    got = _download(s3, out, tmp_path / "got")
    assert read_docs(got) == read_docs(local_run)
    assert _stats(got) == _stats(local_run)
    assert not (got / "_work" / "lock.json").exists()
    manifest = json.loads((got / "manifest.json").read_text())
    assert manifest["counts"]["parts"] == len(list((got / "data").glob("*.parquet")))
    # neither key appears in any object of the run, the scratch mirror, or the output
    blobs = [p.read_bytes() for p in [*got.rglob("*"), *(tmp_path / "scratch").rglob("*")] if p.is_file()]
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret not in res.stdout + res.stderr + check.stdout + check.stderr
        assert not any(secret.encode() in b for b in blobs)

    # winnow stats and winnow report read the run where it is (a private local copy of what they show)
    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], capture_output=True, text=True,
                              cwd=tmp_path, env=_run_env(s3, tmp_path), timeout=120)  # fmt: skip

    stats = cli("stats", out, "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == json.loads((got / "stats.json").read_text())
    rep = cli("report", out)
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "report.html").read_text()
    assert 'data-complete="true"' in page and "data-sample-reason" in page
    assert SECRET_KEY not in page and ACCESS_KEY not in page


def test_check_access_names_missing_inputs_and_unwritable_outputs(s3, warcs, tmp_path):
    url = _bucket(s3, "access", {"a.warc.gz": warcs[0].read_bytes()})
    ok = storage.check_access("p", [f"{url}/a.warc.gz", str(warcs[0])], f"{url}/run")
    assert ok == [] and storage.list_files(f"{url}/run") == {}  # the probe object is removed
    problems = storage.check_access("p", [f"{url}/gone.warc.gz"], "s3://no-such-bucket-here/run")
    assert len(problems) == 2
    assert "input s3://access/gone.warc.gz" in problems[0] and "no-such-bucket-here" in problems[1]
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o500)
    if not os.access(readonly, os.W_OK):  # root may write anywhere
        assert "not writable" in storage.check_access("p", [], str(readonly / "run"))[0]
    assert not any(SECRET_KEY in p or ACCESS_KEY in p for p in problems)


def test_failures_name_the_url_and_never_the_credentials(s3, warcs, tmp_path):
    text = f"boom {SECRET_KEY} {ACCESS_KEY} https://u:pw@host/x?X-Amz-Signature=abc123&y=1"
    redacted = storage.redact(text)
    assert SECRET_KEY not in redacted and ACCESS_KEY not in redacted
    assert "pw@" not in redacted and "abc123" not in redacted and "https://u:***@host/x" in redacted
    url = _bucket(s3, "vanishing", {"a.warc.gz": warcs[0].read_bytes()})
    spec = _spec(tmp_path, {"paths": [f"{url}/*.warc.gz"]}, tmp_path / "run")
    s3.client().delete_object(Bucket="vanishing", Key="a.warc.gz")  # gone after validation
    storage._SIZES.clear()
    with pytest.raises(RunFailed, match=r"planning the input failed: .*s3://vanishing/a\.warc\.gz"):
        run_pipeline(spec, in_process=True)


def test_lock_on_s3_is_a_conditional_write(s3, warcs, tmp_path):
    out = _bucket(s3, "locked") + "/run"
    assert storage.put_if_absent(f"{out}/_work/lock.json", b'{"host": "elsewhere", "pid": 1}')
    assert not storage.put_if_absent(f"{out}/_work/lock.json", b"{}")
    spec = _spec(tmp_path, {"paths": [str(warcs[0])]}, out)
    with pytest.raises(RunFailed, match="force-unlock"):
        run_pipeline(spec, in_process=True)
    run_pipeline(spec, in_process=True, force_unlock=True)
    assert not storage.exists(f"{out}/_work/lock.json")


def test_barrier_stage_on_s3_equals_local(s3, tmp_path):
    """exact_dedup: its steps' files and the next phase's inputs live in the bucket."""
    warc = tmp_path / "dups.warc.gz"
    body = [warcgen.page(i % 7, words=80) for i in range(40)]  # 7 distinct pages, repeated
    warcgen.write(warc, [warcgen.response(i, b) for i, b in enumerate(body)])
    stages = [{"extract": {}}, {"exact_dedup": {}}]
    local = _spec(tmp_path, {"paths": [str(warc)]}, tmp_path / "local", stages, name="l")
    run_pipeline(local, in_process=True)
    out = _bucket(s3, "dedup") + "/run"
    remote = _spec(tmp_path, {"paths": [str(warc)]}, out, stages, name="l")
    run_pipeline(remote, in_process=True)
    got = _download(s3, out, tmp_path / "got")
    assert read_docs(got) == read_docs(tmp_path / "local") and len(read_docs(got)) == 7
    assert _stats(got) == _stats(tmp_path / "local")
    dups = pq.read_table(got / "dedup" / "exact_dedup.parquet")
    assert dups.num_rows > 0 and dups.equals(pq.read_table(tmp_path / "local/dedup/exact_dedup.parquet"))


def test_tokenizer_and_token_shards_on_s3_equal_local(s3, warcs, tmp_path):
    """tokenizer_train and tokenize: steps write a folder and shards; two pass-through phases copy
    their parts server-side; training then reads the tokens from the bucket."""
    stages = [
        {"extract": {}},
        {"tokenizer_train": {"vocab_size": 300, "seed": 3}},
        {"tokenize": {"shard_tokens": 2000, "val_fraction": 0.2, "seed": 7}},
    ]
    local = _spec(tmp_path, {"paths": [str(warcs[0])]}, tmp_path / "local", stages, name="t")
    run_pipeline(local, in_process=True)
    out = _bucket(s3, "tok") + "/run"
    run_pipeline(_spec(tmp_path, {"paths": [str(warcs[0])]}, out, stages, name="t"), in_process=True)
    got = _download(s3, out, tmp_path / "got")
    assert read_docs(got) == read_docs(tmp_path / "local")
    assert _stats(got) == _stats(tmp_path / "local")
    for rel in ["tokenizer/tokenizer.json", "tokens/manifest.json"] + [
        str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local/tokens").rglob("*.parquet")
    ]:
        assert (got / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel
    assert not list((got / "_work").rglob("*.arrow"))  # intermediates removed from the bucket too


def test_sigkill_then_resume_on_s3_equals_uninterrupted(s3, warcs, local_run, tmp_path):
    out = _bucket(s3, "killed") + "/run"
    cfg = write_config(
        tmp_path / "p.yaml",
        {
            "p": {
                "input": {"format": "warc", "split_bytes": SPLIT, "paths": [str(w) for w in warcs]},
                "output": out,
                "stages": STAGES,
            }
        },
    )
    client = s3.client()

    def some_done() -> bool:
        listed = client.list_objects_v2(Bucket="killed", Prefix="run/_work/phase-0/done/")
        return listed.get("KeyCount", 0) >= 2

    env = _run_env(s3, tmp_path)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        kill_run_when(["run", "p", "-c", str(cfg), "--no-progress", "--num-cpus", "1"], some_done)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # the resume runs in this process (same code, no Ray start-up), from an empty mirror
    result = run_pipeline(load_pipelines(cfg, ["p"])[0], in_process=True)
    assert result.tasks_skipped >= 2 and result.tasks_run >= 1
    got = _download(s3, out, tmp_path / "got")
    assert read_docs(got) == read_docs(local_run)
    assert _stats(got) == _stats(local_run)


class _SplitScratchCluster(TwoNodeCluster):
    """Two Ray nodes on loopback, each with its own scratch (``WINNOW_SCRATCH``) and temp dir:
    nodes that share no disk, as cloud VMs do.  ``_node_args`` is called just before each node's
    ``Popen(env=self.env)``, so setting ``env`` there gives each node its own."""

    def __init__(self, env: dict, root: Path) -> None:
        super().__init__()
        self.base_env = {**self.env, **env}
        self.root = root
        self.started = 0

    def _node_args(self, head: bool) -> list[str]:
        node = self.root / f"node{self.started}"
        (node / "tmp").mkdir(parents=True, exist_ok=True)
        self.env = {**self.base_env, "WINNOW_SCRATCH": str(node / "scratch"), "TMPDIR": str(node / "tmp")}
        self.started += 1
        return super()._node_args(head)


def test_two_node_cluster_without_shared_disk_equals_local(s3, warcs, tmp_path):
    stages = [*STAGES, {"exact_dedup": {}}]  # a barrier: the next phase reads parts other nodes wrote
    local = _spec(tmp_path, {"paths": [str(w) for w in warcs]}, tmp_path / "local", stages)
    run_pipeline(local, in_process=True)
    inputs = _bucket(s3, "cluster-in", {w.name: w.read_bytes() for w in warcs})
    out = _bucket(s3, "cluster-out") + "/run"
    cfg = write_config(
        tmp_path / "c.yaml",
        {"c": {"input": {"format": "warc", "split_bytes": SPLIT, "paths": [f"{inputs}/*.warc.gz"]},
               "output": out, "stages": stages}},
    )  # fmt: skip
    cluster = _SplitScratchCluster(s3.env, tmp_path / "nodes")
    cluster.start()
    try:
        env = {**cluster.base_env, "WINNOW_SCRATCH": str(tmp_path / "driver")}
        res = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "run", "c", "-c", str(cfg), "--no-progress",
             "--address", cluster.address],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        )  # fmt: skip
    finally:
        cluster.stop()
    assert res.returncode == 0, res.stderr[-3000:]
    got = _download(s3, out, tmp_path / "got")
    nodes = {json.loads(p.read_text())["node_id"] for p in (got / "_work/phase-0/done").glob("*.json")}
    assert len(nodes) == 2, f"tasks should have run on both nodes, ran on {nodes}"
    for node in ("node0", "node1"):  # each node worked in its own mirror
        parts = list((tmp_path / "nodes" / node / "scratch").rglob("part-*.parquet"))
        assert parts, f"{node} wrote no part in its own scratch"
    assert read_docs(got) == read_docs(tmp_path / "local")
    assert _stats(got) == _stats(tmp_path / "local")


def test_training_reads_token_shards_from_s3(s3, tmp_path):
    from train_fixtures import random_docs, write_token_run

    from train.data import PretrainLoader, open_source

    docs = random_docs(80, vocab_size=500, eot_id=499, seed=1)
    val = random_docs(10, vocab_size=500, eot_id=499, seed=2)
    run = write_token_run(tmp_path / "tokrun", docs, val, vocab_size=500, eot_id=499, docs_per_shard=20)
    files = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    url = _bucket(s3, "tokens", {f"runs/tokrun/{k}": v for k, v in files.items()}) + "/runs/tokrun"
    os.environ["WINNOW_SCRATCH"] = str(tmp_path / "scratch")
    try:
        remote = open_source(f"{url}", "train")
        remote_val = open_source(url, "val")
    finally:
        del os.environ["WINNOW_SCRATCH"]
    local = open_source(run, "train")
    assert remote.tokens == local.tokens and remote.name == "tokrun"
    assert remote_val.tokens == open_source(run, "val").tokens == sum(len(d) for d in val)
    assert remote.lineage()["path"] == url and remote.manifest_sha256 == local.manifest_sha256
    a = PretrainLoader([remote], block_size=16, micro_batch=4, shuffle_tokens=0)
    b = PretrainLoader([local], block_size=16, micro_batch=4, shuffle_tokens=0)
    for _ in range(30):
        assert all((x == y).all() for x, y in zip(a.next_batch(), b.next_batch()))
