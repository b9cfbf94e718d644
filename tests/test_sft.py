"""``winnow train sft``: row formats and their errors, rendering + truncation, packing exactness,
learning on a toy chat task, lineage, exact resume.  A tiny pretrained base (1 layer, width 64,
context 128) on a generated corpus; CPU, fp32, one thread."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from train_fixtures import WORDS, tokenized_run, without_timing

from pipeline.cli import main as winnow
from tokenizer import Tokenizer
from train.loop import UsageError
from train.losses import IGNORE, token_cross_entropy
from train.model import GPT, GPTConfig
from train.sft import (
    Examples,
    SFTBatches,
    _chat_ready,
    collate,
    pack,
    read_conversations,
    render_examples,
)

FLAGS = ["--micro-batch", 2, "--dtype", "fp32", "--no-progress", "--lr", 3e-3]


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reverse_rows(n: int, seed: int = 0) -> list[dict]:
    """A toy chat task: reverse a list of 2-6 words (prompt/response rows)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        rows.append({"prompt": "reverse: " + " ".join(words), "response": " ".join(reversed(words))})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(base checkpoint folder, the run it was pretrained on, a data file of 80 reverse rows)."""
    tmp = tmp_path_factory.mktemp("sft")
    run, _ = tokenized_run(tmp, n_train=200, n_val=20)
    out = tmp / "base"
    args = ["--depth", 1, "--n-embd", 64, "--block-size", 128, "--micro-batch", 4, "--dtype", "fp32"]
    argv = ["train", "pretrain", "--data", run, "--out", out, *args, "--max-steps", 30, "--eval-every", 0]
    assert winnow([str(a) for a in [*argv, "--no-progress"]]) == 0
    data = write_jsonl(tmp / "reverse.jsonl.gz", reverse_rows(80))
    return out / "checkpoints" / "step-00000030", run, data


def sft(*argv) -> int:
    return winnow(["train", "sft", *map(str, argv)])


def metrics(out: Path, timing: bool = False) -> list[dict]:
    """metrics.jsonl's rows, without the measured times and speeds unless ``timing``."""
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return lines if timing else without_timing(lines)


def tokenizer_of(ckpt: Path) -> Tokenizer:
    return Tokenizer.from_dir(ckpt / "tokenizer")


# --------------------------------------------------------------------------------------------------
# rows


def test_row_formats_are_detected_per_file(tmp_path):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    write_jsonl(tmp_path / "m.jsonl", [{"messages": [*msgs, {"role": "assistant", "content": "hello"}]}])
    write_jsonl(tmp_path / "p.jsonl.gz", [{"prompt": "hi", "response": "hello"}])
    write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"instruction": "Add.", "input": "1 2", "output": "3"},
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Say hi.", "output": "hi"},
        ],
    )
    convs, lineage = read_conversations(tmp_path / "m.jsonl")
    assert convs[0][-1] == {"role": "assistant", "content": "hello"} and lineage["format"] == "messages"
    convs, lineage = read_conversations(tmp_path / "p.jsonl.gz")
    assert convs == [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    assert lineage["sha256"] == hashlib.sha256((tmp_path / "p.jsonl.gz").read_bytes()).hexdigest()
    convs, lineage = read_conversations(tmp_path / "a.jsonl")
    assert [c[0]["content"] for c in convs] == ["Add.\n\n1 2", "Say hi.", "Say hi."]
    assert lineage == {**lineage, "rows": 3, "format": "alpaca"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "a", "response": "b"}, "{not json"], ":2: not JSON"),
        (
            [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": "b"}, {"instruction": "a"}],
            ":3: field `output` must be a string (missing)",
        ),
        (
            [{"messages": [{"role": "robot", "content": "x"}]}],
            ":1: field `messages`: message 0: unknown role",
        ),
        ([{"messages": [{"role": "user", "content": "x"}]}], ":1: field `messages`: no assistant message"),
        ([{"prompt": "a", "response": 3}], ":1: field `response` must be a string (int)"),
        ([{"text": "a"}], ":1: unknown row format"),
        ([], "no rows (an empty file)"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, rows, message):
    from train.data import DataError

    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as exc:
        read_conversations(path)
    assert message in str(exc.value) and str(path) in str(exc.value)


def test_tokenizer_without_chat_tokens_is_a_clear_error(monkeypatch, tmp_path):
    import importlib

    real = importlib.import_module

    def no_import_hf(name, *a):
        if name == "train.import_hf":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", no_import_hf)
    tok = SimpleNamespace(special_tokens={"<|endoftext|>": 0, "<|pad|>": 1}, path="tok")
    with pytest.raises(UsageError, match=r"lacks the chat special tokens .*no train\.import_hf"):
        _chat_ready(None, tok, tmp_path, print)


# --------------------------------------------------------------------------------------------------
# rendering, packing


def test_targets_supervise_assistant_tokens_and_end_only(base):
    ckpt, _, _ = base
    tok = tokenizer_of(ckpt)
    conv = [{"role": "user", "content": "reverse: a b"}, {"role": "assistant", "content": "b a"}]
    ex = render_examples(tok, [conv], block_size=64)
    x, y = ex.x[0], ex.y[0]
    assert len(x) == len(y)
    supervised = y[y != IGNORE].tolist()
    assert supervised == [*tok.encode_ordinary("b a"), tok.special_tokens["<|end|>"]]
    assert x[-1] != tok.special_tokens["<|end|>"] and y[-1] == tok.special_tokens["<|end|>"]


def test_truncation_keeps_the_start_and_drops_rows_without_targets(base):
    ckpt, _, _ = base
    tok = tokenizer_of(ckpt)
    long_reply = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "the river " * 20}]
    long_prompt = [{"role": "user", "content": "the river " * 20}, {"role": "assistant", "content": "a"}]
    ex = render_examples(tok, [long_reply, long_prompt], block_size=16)
    assert (ex.truncated, ex.dropped, len(ex.x)) == (2, 1, 1)
    # the targets <|user|> a <|end|> <|assistant|> are not supervised, the 12 reply tokens after are
    assert len(ex.x[0]) == 16 and (ex.y[0] != IGNORE).sum() == 16 - 4


def test_best_fit_packing():
    lengths = [7, 5, 4, 3, 3, 2, 1, 9]
    bins = pack(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(8))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # 34 positions: the minimum for capacity 10
    with pytest.raises(ValueError):
        pack([11], 10)


def test_packed_loss_equals_sum_of_separate_losses(base):
    """Block-diagonal attention + restarting positions: a packed window computes each conversation
    exactly as alone (the functionary #265 pitfall), padding included."""
    ckpt, _, _ = base
    tok = tokenizer_of(ckpt)
    convs = [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        for r in reverse_rows(3, seed=5)
    ]
    ex = render_examples(tok, convs, block_size=192)
    assert sum(ex.lengths()) <= 192
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, tok.vocab_size, 192, n_embd=64)).eval()

    def loss(rows, packed):
        x, y, doc, _ = collate(ex, rows, tok.pad_id, packed)
        return token_cross_entropy(model(x, doc_ids=doc), y)

    with torch.no_grad():
        alone = [loss([[i]], False) for i in range(3)]
        packed_sum, packed_n = loss([[0, 1, 2]], True)
        padded_sum, padded_n = loss([[0], [1], [2]], False)
        naive_sum, _ = loss([[0, 1, 2]], False)  # concatenated without the mask: a different loss
    expected = sum(s for s, _ in alone)
    assert packed_n == padded_n == sum(n for _, n in alone)
    torch.testing.assert_close(packed_sum, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded_sum, expected, rtol=1e-5, atol=1e-5)
    assert abs(naive_sum - expected) > 1e-3


def test_batches_resume_mid_epoch_and_deal_rows_to_ranks():
    ex = Examples(
        x=[torch.arange(n).numpy() for n in (5, 3, 4, 2, 6, 1)],
        y=[torch.arange(n).numpy() for n in (5, 3, 4, 2, 6, 1)],
    )
    kw = dict(block_size=8, micro_batch=1, pad_id=0, packing=True, seed=3)
    a = SFTBatches(ex, **kw)
    seq = [a.next_batch()[0].tolist() for _ in range(7)]  # wraps into epoch 1
    b = SFTBatches(ex, **kw)
    for _ in range(4):
        b.next_batch()
    c = SFTBatches(ex, **kw)
    c.load_state_dict(b.state_dict())
    assert [c.next_batch()[0].tolist() for _ in range(3)] == seq[4:]
    ranks = [SFTBatches(ex, **{**kw, "micro_batch": 1}, rank=r, world_size=2) for r in (0, 1)]
    both = [rb.next_batch()[0].tolist() for rb in ranks]
    assert both == seq[:2]


# --------------------------------------------------------------------------------------------------
# the command


def test_sft_learns_and_records_lineage(base, tmp_path):
    ckpt, run, data = base
    out = tmp_path / "sft"
    assert (
        sft(
            "--base",
            ckpt,
            "--data",
            data,
            "--val-fraction",
            0.2,
            "--out",
            out,
            *FLAGS,
            "--max-steps",
            40,
            "--eval-every",
            20,
        )
        == 0
    )
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(41))
    assert set(rows[20]) >= {"step", "tokens", "supervised_tokens", "train_loss", "val_loss", "lr"}
    assert rows[0]["val_loss"] > rows[40]["val_loss"] + 0.5
    assert sum(r["train_loss"] for r in rows[-5:]) < sum(r["train_loss"] for r in rows[1:6]) - 2.5
    assert rows[40]["supervised_tokens"] < rows[40]["tokens"]
    meta = json.loads((out / "checkpoints/step-00000040/config.json").read_text())
    assert meta["kind"] == "sft"
    parent = meta["parent"]
    assert parent["path"] == str(ckpt) and parent["step"] == 30 and parent["kind"] == "pretrain"
    assert parent["config_sha256"] == hashlib.sha256((ckpt / "config.json").read_bytes()).hexdigest()
    manifest_sha = hashlib.sha256((run / "tokens" / "manifest.json").read_bytes()).hexdigest()
    assert parent["data"]["manifests"][0]["sha256"] == manifest_sha  # the pipeline run, through the parent
    assert meta["data"]["files"][0]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert meta["data"]["val"] == {"fraction": 0.2, "rows": 16, "seed": 0}
    assert meta["data"]["examples"] == 64 and meta["data"]["truncated"] == 0
    # the checkpoint is a model generate/export/sft accept: tokenizer included
    assert (out / "checkpoints/step-00000040/tokenizer/tokenizer.json").is_file()
    # samples.jsonl: the final model's greedy replies to held-back prompts, as `generate --chat` gives
    from train.checkpoint import load_model
    from train.generate import GenerationConfig, chat_prompt_ids, generate

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {r["step"] for r in samples} == {40}
    model, tok = load_model(out)
    prompts = [r["prompt"] for r in samples]
    cfg = GenerationConfig(max_new_tokens=64)
    expected = generate(model, tok, prompts, cfg, prompt_ids=chat_prompt_ids(tok, prompts))
    assert [r["completion"] for r in samples] == [c.text for c in expected]
    assert all(r["reference"] for r in samples)


def test_resume_reproduces_the_uninterrupted_sft_run(base, tmp_path):
    ckpt, _, data = base
    common = [
        "--base",
        ckpt,
        "--data",
        data,
        "--val-fraction",
        0.1,
        *FLAGS,
        "--batch-rows",
        4,
        "--max-steps",
        8,
        "--save-every",
        4,
        "--eval-every",
        4,
        "--keep-checkpoints",
        0,
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    assert sft(*common, "--out", a) == 0
    assert sft(*common, "--out", b, "--stop-after", 4) == 0
    assert sft("--out", b, "--resume", "--dtype", "fp32", "--no-progress") == 0
    wa = torch.load(a / "checkpoints/step-00000008/model.pt", weights_only=True)
    wb = torch.load(b / "checkpoints/step-00000008/model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics(a) == metrics(b)
    assert (a / "samples.jsonl").read_text() == (b / "samples.jsonl").read_text()


def test_no_packing_pads_one_conversation_per_row(base, tmp_path, capsys):
    ckpt, _, data = base
    out = tmp_path / "pad"
    assert sft("--base", ckpt, "--data", data, "--out", out, *FLAGS, "--no-packing", "--max-steps", 2) == 0
    assert "80 rows per epoch" in capsys.readouterr().err
    meta = json.loads((out / "checkpoints/step-00000002/config.json").read_text())
    assert meta["train"]["packing"] is False and meta["data"]["rows_per_epoch"] == 80


def test_cli_errors(base, tmp_path, capsys):
    ckpt, _, data = base

    def error(*argv) -> str:
        assert sft(*argv) == 2
        return capsys.readouterr().err

    assert "--base CKPT is required" in error("--data", data, "--out", tmp_path / "x")
    assert "--data FILE.jsonl is required" in error("--base", ckpt, "--out", tmp_path / "x")
    assert "--val-fraction must be in (0, 1)" in error(
        "--base", ckpt, "--data", data, "--val-fraction", 1.5, "--out", tmp_path / "x"
    )
    assert "--base: " in error("--base", tmp_path / "nope", "--data", data, "--out", tmp_path / "x")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "a"}])
    assert f"{bad}:2: field `response` must be a string (missing)" in error(
        "--base", ckpt, "--data", bad, "--out", tmp_path / "x"
    )
    assert "no checkpoint" in error("--out", tmp_path / "x", "--resume")


def test_ddp_two_processes_equal_one_process(base, tmp_path):
    """2 gloo ranks × micro-batch 2 == 1 process × 2 accumulated micro-batches of 2: the rows of a
    step are the same and the gradient is divided by the global supervised-token count."""
    import os
    import subprocess
    import sys

    ckpt, _, data = base
    common = [
        "--base",
        ckpt,
        "--data",
        data,
        "--val-fraction",
        0.1,
        *FLAGS,
        "--batch-rows",
        4,
        "--max-steps",
        4,
        "--eval-every",
        2,
        "--save-every",
        4,
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert sft(*common, "--out", one) == 0
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*torchrun, "-m", "pipeline.cli", "train", "sft", *map(str, common), "--out", str(two)]
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 rank(s) × 1 accumulation" in res.stderr
    wa = torch.load(one / "checkpoints/step-00000004/model.pt", weights_only=True)
    wb = torch.load(two / "checkpoints/step-00000004/model.pt", weights_only=True)
    for k in wa:  # fp32 sums in a different order (see tests/test_pretrain.py's DDP test)
        torch.testing.assert_close(wa[k], wb[k], atol=5e-5, rtol=0, msg=k)
    for r1, r2 in zip(metrics(one), metrics(two), strict=True):
        assert r1.keys() == r2.keys()
        for k in r1:
            assert r1[k] == pytest.approx(r2[k], rel=1e-4, abs=1e-6), k


def test_imported_base_without_chat_tokens_gets_them(base, tmp_path, capsys):
    """An HF import (GPT-2-style tokenizer: no chat tokens) is fine-tuned after
    ``train.import_hf.add_chat_tokens`` grows its embedding; the run keeps its own tokenizer."""
    pytest.importorskip("transformers")
    from test_import_hf import build_hf_folder

    from train.import_hf import import_hf

    _, _, data = base
    folder, _, _ = build_hf_folder(tmp_path, "gpt2-tied")
    imported = import_hf(folder, tmp_path / "imported")
    out = tmp_path / "sft"
    assert sft("--base", imported, "--data", data, "--out", out, *FLAGS, "--max-steps", 2) == 0
    assert "added <|system|>, <|user|>, <|assistant|>, <|end|>" in capsys.readouterr().err
    ckpt = out / "checkpoints/step-00000002"
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["parent"]["kind"] == "imported"
    tok = tokenizer_of(ckpt)  # the new ids have embedding rows (this import had 37 spare rows)
    assert "<|end|>" in tok.special_tokens and max(tok.special_tokens.values()) < meta["model"]["vocab_size"]
    assert sft("--out", out, "--resume", "--max-steps", 3, "--dtype", "fp32", "--no-progress") == 0


def test_sft_teaches_the_model_to_end_its_turn(base, tmp_path):
    """The EOS-never-trained pitfall (trl #1623): after SFT, greedy replies to new prompts end with
    ``<|end|>`` before the limit; the base model's never do."""
    from tokenizer.chat import render_for_completion
    from train.checkpoint import load_model
    from train.generate import GenerationConfig, generate_ids

    ckpt, _, data = base
    out = tmp_path / "sft"
    assert (
        sft("--base", ckpt, "--data", data, "--out", out, *FLAGS, "--max-steps", 150, "--eval-every", 0) == 0
    )

    def stopped(path) -> int:
        model, tok = load_model(path)
        rows = reverse_rows(8, seed=9)  # prompts not in the training rows (another seed)
        prompts = [render_for_completion(tok, [{"role": "user", "content": r["prompt"]}]) for r in rows]
        with torch.no_grad():
            replies = generate_ids(
                model,
                prompts,
                GenerationConfig(max_new_tokens=32),
                eos_id=tok.special_tokens["<|end|>"],
                pad_id=tok.pad_id,
            )
        return sum(len(r) < 32 for r in replies)

    assert stopped(ckpt) == 0
    assert stopped(out) >= 6


def test_val_file_and_init_from_alias(base, tmp_path):
    ckpt, _, data = base
    val = write_jsonl(
        tmp_path / "val.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "reverse the words"},
                    {"role": "user", "content": r["prompt"]},
                    {"role": "assistant", "content": r["response"]},
                ]
            }
            for r in reverse_rows(6, seed=4)
        ],
    )
    out = tmp_path / "sft"
    assert (
        sft(
            "--init-from",
            ckpt,
            "--data",
            data,
            "--val",
            val,
            "--out",
            out,
            *FLAGS,
            "--max-steps",
            2,
            "--eval-every",
            2,
        )
        == 0
    )
    rows = metrics(out)
    assert "val_loss" in rows[0] and "val_loss" in rows[2]
    meta = json.loads((out / "checkpoints/step-00000002/config.json").read_text())
    assert meta["data"]["val"]["sha256"] == hashlib.sha256(val.read_bytes()).hexdigest()
    assert meta["data"]["val"]["format"] == "messages" and meta["data"]["examples"] == 80
