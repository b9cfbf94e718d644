"""``winnow train pretrain``: learning, exact resume (also after SIGKILL), SIGTERM, DDP, errors.

Tiny models (1-2 layers, width 64-128, context 32) on a generated corpus, CPU, fp32, one thread per
process: the machine's two cores are shared, and oversubscribed OpenMP threads make small matmuls
~100x slower.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import tokenized_run, write_text_run

from pipeline.cli import main as winnow
from train.pretrain import TIMING_KEYS, lr_at, param_groups

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = [
    "--depth",
    "1",
    "--n-embd",
    "64",
    "--block-size",
    "32",
    "--micro-batch",
    "4",
    "--dtype",
    "fp32",
    "--no-progress",
    "--eval-tokens",
    "512",
]


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    run, texts = tokenized_run(tmp_path_factory.mktemp("corpus"), n_train=200, n_val=20)
    return run, texts


def pretrain(*argv) -> int:
    return winnow(["train", "pretrain", *map(str, argv)])


def metrics(out: Path, *, timing: bool = False) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return lines if timing else [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in lines]


def weights(out: Path, step: int) -> dict:
    return torch.load(out / "checkpoints" / f"step-{step:08d}" / "model.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


def test_loss_falls_and_outputs_are_complete(corpus, tmp_path, capsys):
    run, _ = corpus
    out = tmp_path / "out"
    assert pretrain("--data", run, "--out", out, *TINY, "--max-steps", 60, "--eval-every", 20) == 0
    err = capsys.readouterr().err
    assert "parameters:" in err and "FLOPs per token" in err
    lines = metrics(out, timing=True)
    assert [r["step"] for r in lines] == list(range(61))
    assert set(lines[20]) >= {
        "step",
        "tokens",
        "train_loss",
        "val_loss",
        "val_bpb",
        "lr",
        "tokens_per_s",
        "grad_norm",
    }
    assert lines[60]["tokens"] == 60 * 4 * 32
    assert lines[0]["val_loss"] > 5.0  # ~ln(300) at init
    assert lines[60]["val_loss"] < lines[0]["val_loss"] - 2.0
    assert sum(r["train_loss"] for r in lines[-5:]) / 5 < lines[1]["train_loss"] - 2.0
    assert 0 < lines[60]["val_bpb"] < lines[20]["val_bpb"]
    # checkpoint: lineage and a loadable model + tokenizer
    ckpt = out / "checkpoints" / "step-00000060"
    meta = json.loads((ckpt / "config.json").read_text())
    manifest_sha = hashlib.sha256((run / "tokens" / "manifest.json").read_bytes()).hexdigest()
    assert meta["data"]["manifests"][0]["sha256"] == manifest_sha
    assert meta["step"] == 60 and meta["tokens"] == 60 * 128 and meta["model"]["n_embd"] == 64
    assert (ckpt / "tokenizer" / "tokenizer.json").read_bytes() == (
        run / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    from train.checkpoint import load_model

    model, tok = load_model(out)
    x = torch.tensor([tok.encode("the river runs")])
    assert model(x).shape == (1, x.shape[1], tok.vocab_size)


def test_resume_reproduces_the_uninterrupted_run(corpus, tmp_path):
    run, _ = corpus
    common = [
        "--data",
        run,
        *TINY,
        "--max-steps",
        16,
        "--save-every",
        8,
        "--eval-every",
        4,
        "--batch-tokens",
        256,
        "--micro-batch",
        2,
        "--schedule",
        "wsd",
        "--keep-checkpoints",
        0,
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert pretrain(*common, "--out", a) == 0
    assert pretrain(*common, "--out", b, "--stop-after", 8) == 0
    assert [p.name for p in (b / "checkpoints").glob("step-*")] == ["step-00000008"]
    assert (
        pretrain("--out", b, "--resume", "--no-progress", "--dtype", "fp32") == 0
    )  # flags from the checkpoint
    assert_same_weights(weights(a, 16), weights(b, 16))
    assert metrics(a) == metrics(b)
    ta = torch.load(a / "checkpoints/step-00000016/trainer.pt", weights_only=True)
    tb = torch.load(b / "checkpoints/step-00000016/trainer.pt", weights_only=True)
    assert ta["data"] == tb["data"]
    assert torch.equal(ta["rng"]["torch"], tb["rng"]["torch"])
    # a finished run resumed again has nothing to do; a longer --max-steps extends it
    assert pretrain("--out", b, "--resume", "--no-progress") == 0
    assert len(metrics(b)) == len(metrics(a))
    assert pretrain("--out", b, "--resume", "--no-progress", "--max-steps", 18) == 0
    assert [r["step"] for r in metrics(b)][-3:] == [16, 17, 18]


def _popen(run: Path, out: Path, *extra) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "train",
        "pretrain",
        "--data",
        str(run),
        "--out",
        str(out),
        *TINY,
        *map(str, extra),
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, min_step: int, timeout: float = 60) -> None:
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest.is_file() and int(latest.read_text().strip().split("-")[1]) >= min_step:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before step {min_step}: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no checkpoint in time")


def test_killed_run_resumes_from_last_checkpoint(corpus, tmp_path):
    run, _ = corpus
    args = ["--max-steps", 300, "--save-every", 10, "--eval-every", 50, "--keep-checkpoints", 2]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    proc = _popen(run, out, *args)
    _wait_for_checkpoint(proc, out, 20)
    proc.send_signal(signal.SIGKILL)  # no handler runs: whatever was on disk is what resume gets
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert 1 <= len(saved) <= 2 and saved[-1] != "step-00000300"
    assert pretrain("--data", run, "--out", out, *TINY, *args, "--resume") == 0
    assert pretrain("--data", run, "--out", ref, *TINY, *args) == 0
    assert_same_weights(weights(ref, 300), weights(out, 300))
    steps = [r["step"] for r in metrics(out)]
    assert steps == sorted(set(steps))  # no duplicated lines from the steps run twice
    assert metrics(ref) == metrics(out)


def test_sigterm_saves_a_checkpoint_and_exits(corpus, tmp_path):
    run, _ = corpus
    out = tmp_path / "out"
    proc = _popen(run, out, "--max-steps", 100_000, "--save-every", 5, "--eval-every", 0)
    _wait_for_checkpoint(proc, out, 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in err and "Traceback" not in err
    last = metrics(out)[-1]["step"]
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{last:08d}"


def test_ddp_two_processes_equal_one_process(corpus, tmp_path):
    """2 gloo ranks × 1 micro-batch of 2 = 1 process × 2 accumulated micro-batches of 2."""
    run, _ = corpus
    common = [
        "--data",
        run,
        *TINY,
        "--micro-batch",
        2,
        "--batch-tokens",
        128,
        "--max-steps",
        6,
        "--eval-every",
        3,
        "--save-every",
        6,
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert pretrain(*common, "--out", one) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*torchrun, "-m", "pipeline.cli", "train", "pretrain", *map(str, common), "--out", str(two)]
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 rank(s) × 1 accumulation" in res.stderr
    # Same windows, same math; only the order of the gradient sums differs (DDP averages across
    # ranks, one process accumulates): fp32 rounding of ~1e-7 per step, amplified by AdamW's
    # normalisation over 6 steps, measured up to 1.8e-5 across seeds.
    assert_same_weights(weights(one, 6), weights(two, 6), atol=5e-5)
    for r1, r2 in zip(metrics(one), metrics(two), strict=True):
        assert r1.keys() == r2.keys()
        for k in r1:
            assert r1[k] == pytest.approx(r2[k], rel=1e-4, abs=1e-6), k


def test_text_parquet_mixture_and_val_per_source(corpus, tmp_path):
    run, texts = corpus
    text_run = write_text_run(tmp_path / "text", texts[:100])
    out = tmp_path / "out"
    args = [
        "--data",
        f"{run}:3",
        "--data",
        f"{text_run}:1",
        "--tokenizer",
        run / "tokenizer",
        "--val",
        run,
        "--val",
        text_run,
        "--out",
        out,
        *TINY,
        "--max-steps",
        4,
        "--eval-every",
        4,
    ]
    assert pretrain(*args) == 0
    last = metrics(out)[-1]
    assert {"val_loss/run", "val_loss/text", "val_bpb/run", "val_bpb/text"} <= set(last)
    meta = json.loads((out / "checkpoints/step-00000004/config.json").read_text())
    assert [m["kind"] for m in meta["data"]["manifests"]] == ["tokens", "text"]
    assert [m["weight"] for m in meta["data"]["manifests"]] == [3.0, 1.0]


def test_cli_errors(corpus, tmp_path, capsys):
    run, texts = corpus

    def error(*argv) -> str:
        assert pretrain(*argv) == 2
        return capsys.readouterr().err

    assert "--data RUN_DIR is required" in error("--out", tmp_path / "x")
    assert "does not exist" in error("--data", tmp_path / "nope", "--out", tmp_path / "x")
    text_run = write_text_run(tmp_path / "text", texts[:10])
    assert "--tokenizer" in error("--data", text_run, "--out", tmp_path / "x")
    assert "not a multiple" in error("--data", run, "--out", tmp_path / "x", *TINY, "--batch-tokens", 100)
    assert "no checkpoint" in error("--data", run, "--out", tmp_path / "x", "--resume")
    out = tmp_path / "done"
    assert pretrain("--data", run, "--out", out, *TINY, "--max-steps", 2, "--eval-every", 0) == 0
    assert "pass --resume" in error("--data", run, "--out", out, *TINY, "--max-steps", 2)
    msg = error("--data", run, "--out", out, "--resume", "--block-size", 64, "--seed", 3)
    assert "--block-size 64 (checkpoint: 32)" in msg and "--seed 3 (checkpoint: 0)" in msg
    assert "invalid GPTConfig" in error("--data", run, "--out", tmp_path / "y", *TINY, "--n-head", 3)
    with pytest.raises(SystemExit):
        pretrain("--data", run, "--out", out, "--max-steps", 3, "--tokens", 100)  # mutually exclusive


def test_lr_schedules():
    kw = dict(peak=1.0, max_steps=100, warmup=10, min_ratio=0.1, cooldown=0.2)
    cos = [lr_at(s, schedule="cosine", **kw) for s in range(100)]
    assert cos[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert cos[10] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(cos[10:]))
    wsd = [lr_at(s, schedule="wsd", **kw) for s in range(100)]
    assert wsd[10:80] == [1.0] * 70 and wsd[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(wsd[79:]))


def test_weight_decay_groups():
    from train.model import GPT, GPTConfig

    for tied in (True, False):
        model = GPT(GPTConfig.from_depth(1, 50, 16, n_embd=64, tie_embeddings=tied))
        decay, no_decay = param_groups(model, 0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        ids = lambda ps: {id(p) for p in ps}  # noqa: E731
        assert id(model.embed_tokens.weight) in ids(no_decay["params"])
        assert (id(model.lm_head.weight) in ids(decay["params"])) is not tied
        norms = [m.weight for m in model.modules() if isinstance(m, torch.nn.RMSNorm)]
        assert ids(norms) <= ids(no_decay["params"])
        assert id(model.layers[0].mlp.up_proj.weight) in ids(decay["params"])
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
