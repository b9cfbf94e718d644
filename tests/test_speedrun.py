"""scripts/speedrun.py's resume machinery, bench/preference_eval.py's split and
bench/playground_speed.py's rate arithmetic (no model, no Ray: well under a second)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

# scripts/ and bench/ are not installed packages: import them from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.playground_speed import rates
from bench.preference_eval import split
from scripts.speedrun import books_config, run_step, train_cmd


def test_run_step_records_then_skips(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    cmd = [sys.executable, "-c", f"p=open({str(counter)!r}, 'a'); p.write('x')"]
    first = run_step(tmp_path, "demo", cmd)
    assert counter.read_text() == "x"
    assert first["wall_s"] >= 0 and first["cpu_s"] >= 0 and first["cmd"] == cmd
    marker = json.loads((tmp_path / "steps" / "demo.json").read_text())
    assert marker == first
    again = run_step(tmp_path, "demo", cmd)  # finished before: not run a second time
    assert counter.read_text() == "x" and again == first


def test_run_step_failure_leaves_no_marker(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="step bad failed"):
        run_step(tmp_path, "bad", [sys.executable, "-c", "raise SystemExit(3)"])
    assert not (tmp_path / "steps" / "bad.json").exists()


def test_train_cmd_resumes_from_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "base"
    fresh = train_cmd("pretrain", out, ["--depth", "4"])
    assert "--resume" not in fresh and fresh[-2:] == ["--depth", "4"]
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("step-00000050\n")
    resumed = train_cmd("pretrain", out, ["--depth", "4"])
    # flags that define the run come from the checkpoint on --resume
    assert (
        "--resume" in resumed and "--depth" not in resumed and resumed[resumed.index("--out") + 1] == str(out)
    )


def test_books_config_validates(tmp_path: Path) -> None:
    from tinygpt import byte_tokenizer_dir

    from pipeline.config import load_pipelines

    byte_tokenizer_dir(tmp_path / "web" / "tokenizer")  # the web run's, which the books are encoded with
    (spec,) = load_pipelines(books_config(tmp_path))
    assert spec.name == "speedrun_books"
    assert [s.name for s in spec.stages] == ["language", "minhash_dedup", "pii", "tokenize"]


def test_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl.gz"
    rows = [json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) for i in range(20)]
    with gzip.open(data, "wt") as f:
        f.write("\n".join(rows) + "\n")
    held, train = split(data, tmp_path, heldout=5, train_pairs=10, seed=1)
    h, t = held.read_text().splitlines(), train.read_text().splitlines()
    assert len(h) == 5 and len(t) == 10 and not set(h) & set(t) and set(h) | set(t) <= set(rows)
    held2, _ = split(data, tmp_path, heldout=5, train_pairs=10, seed=1)
    assert held2.read_text().splitlines() == h
    with pytest.raises(SystemExit, match="fewer than"):
        split(data, tmp_path, heldout=15, train_pairs=10, seed=1)


def test_rates() -> None:
    r = rates(10.0, [10.5, 11.0, 11.5, 12.5])
    assert r["ttft_s"] == pytest.approx(0.5) and r["tokens"] == 4
    assert r["tokens_per_s"] == pytest.approx(3 / 2.0) and r["total_s"] == pytest.approx(2.5)
    assert rates(0.0, [])["ttft_s"] is None and rates(0.0, [1.0])["tokens_per_s"] is None
