"""The whole path through the public CLI, on the in-repo sample WARC: a pipeline that ends in
``tokenizer_train`` + ``tokenize`` on Ray, then ``winnow train pretrain`` on its run directory,
``winnow generate`` and ``winnow export hf --verify`` on the checkpoint.  Each piece has its own
tests; this one guards the hand-offs between them (run-directory layout, manifest, tokenizer
copy in the checkpoint, lineage hashes)."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import sample_pipeline, winnow, write_config

from tokenizer import Tokenizer

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two cores shared with Ray and the rest of the suite


def test_pipeline_tokens_then_pretrain_generate_export(tmp_path):
    run = tmp_path / "run"
    stages = [
        {"url_filter": {}},
        {"extract": {"engine": "resiliparse"}},
        {"pii": {}},
        {"tokenizer_train": {"vocab_size": 512}},
        {"tokenize": {"val_fraction": 0.2}},
    ]
    cfg = write_config(tmp_path / "p.yaml", {"p": sample_pipeline(run, stages=stages)})
    res = winnow("run", "p", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    manifest_bytes = (run / "tokens" / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    assert manifest["vocab_size"] == 512 and manifest["splits"]["val"]["tokens"] > 64

    out = tmp_path / "gpt"
    args = ["--data", str(run), "--out", str(out), "--depth", "1", "--block-size", "32"]
    args += ["--micro-batch", "4", "--max-steps", "4", "--eval-every", "2", "--eval-tokens", "256"]
    res = winnow("train", "pretrain", *args, "--no-progress", env=ONE_THREAD)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["val_loss"] > 0 for r in rows if r["step"] in (0, 2, 4))
    step = (out / "checkpoints" / "latest").read_text().strip()
    config = json.loads((out / "checkpoints" / step / "config.json").read_text())
    # lineage: the checkpoint names the exact shards manifest and tokenizer it was trained on
    (source,) = config["data"]["manifests"]
    assert source["sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    tok = Tokenizer.from_dir(out / "checkpoints" / step / "tokenizer")
    assert tok.sha256 == manifest["tokenizer"]["tokenizer_json_sha256"] == Tokenizer.from_dir(run).sha256

    res = winnow(
        "generate", "--checkpoint", str(out), "--prompt", "The", "--strategy", "greedy",
        "--max-new-tokens", "6", "--json", env=ONE_THREAD,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (line,) = res.stdout.strip().splitlines()
    result = json.loads(line)
    assert result["prompt"] == "The" and 0 < len(result["token_ids"]) <= 6
    assert result["text"] == tok.decode([i for i in result["token_ids"] if i not in (tok.eot_id,)])

    res = winnow("export", "hf", "--checkpoint", str(out), "--out", str(tmp_path / "hf"), "--verify")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "max |logits" in res.stdout + res.stderr
