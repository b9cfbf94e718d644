"""``winnow train dpo``: ln 2 and zero rewards at step 0, cached == live reference log-probs,
the gradient by hand, reply-only log-probs under padding, micro-batch × accumulation invariance,
learning (margins and accuracies rise), every parameter moving, exact resume, and the refusal of a
reward checkpoint.  Tiny pretrained base (test_sft's fixture); CPU, fp32, one thread."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_reward import bright_pairs, pairs_file, reward  # noqa: F401 (pairs_file is a fixture)
from test_sft import base, metrics, write_jsonl  # noqa: F401 (base is a fixture)

from pipeline.cli import main as winnow
from tokenizer import Tokenizer
from train.checkpoint import load_checkpoint
from train.dpo import Reference, dpo_loss, reference_logps, sequence_logps
from train.model import GPT
from train.preference import PairBatches, collate_pairs, read_pairs, render_pairs

FLAGS = ["--micro-batch", 2, "--dtype", "fp32", "--no-progress"]


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dpo(*argv) -> int:
    return winnow(["train", "dpo", *map(str, argv)])


def policy_and_pairs(ckpt: Path, data: Path):
    c = load_checkpoint(ckpt)
    model = GPT(c["config"])
    model.load_state_dict(c["state_dict"])
    tok = Tokenizer.from_dir(ckpt / "tokenizer")
    return model.eval(), tok, render_pairs(tok, read_pairs(data)[0], c["config"].block_size + 1)


@pytest.mark.parametrize("live", [True, False])
def test_step_0_loss_is_ln2_and_every_reward_is_0(base, pairs_file, tmp_path, live):  # noqa: F811
    out = tmp_path / "dpo"
    argv = ["--base", base[0], "--data", pairs_file, "--val-fraction", 0.25, "--out", out, *FLAGS]
    assert dpo(*argv, "--max-steps", 2, "--eval-every", 1, "--beta", 0.5, *(["--live-reference"] * live)) == 0
    rows = metrics(out)
    v0, s1 = rows[0], rows[1]
    # validation batches are the cache's own batches: exact in both modes
    assert v0["step"] == 0 and v0["val_loss"] == pytest.approx(math.log(2), abs=1e-12)
    assert v0["val_kl"] == 0.0 and s1["logps/chosen"] < 0
    for k in ("chosen", "rejected", "margins", "accuracies"):
        assert v0[f"val_rewards/{k}"] == 0.0
        # step 1's forward sees the policy before its first update.  Live: the reference runs the
        # same batch, bit-identical.  Cached: the pair was scored in another batch (other partner,
        # other padded width), which moves fp32 logits in the last bits (~1e-7 of a log-prob)
        if live:
            assert s1[f"rewards/{k}"] == 0.0
        elif k != "accuracies":  # a strict comparison of two ~1e-7 numbers: not asserted
            assert abs(s1[f"rewards/{k}"]) < 1e-6
    assert s1["train_loss"] == pytest.approx(math.log(2), abs=1e-7)
    assert (out / "reference_logps.pt").is_file() != live


def test_cached_reference_logps_equal_live_ones_in_any_batch(base, pairs_file):  # noqa: F811
    model, tok, ex = policy_and_pairs(base[0], pairs_file)
    cpu, off = torch.device("cpu"), torch.autocast("cpu", enabled=False)
    table = reference_logps(model, ex, micro_batch=7, pad_id=tok.pad_id, device=cpu, autocast=off)
    cached, live = Reference(table=table), Reference(model=model)
    batches = PairBatches(ex, micro_batch=3, pad_id=tok.pad_id, seed=1)
    for _ in range(10):  # other partners, other padding than the cache's batches
        b = batches.next_batch()
        for a, c in zip(cached(b, cpu), live(b, cpu), strict=True):
            torch.testing.assert_close(a, c, rtol=0, atol=2e-5)


def test_reply_logps_ignore_padding_and_the_prompt(base, pairs_file):  # noqa: F811
    model, tok, ex = policy_and_pairs(base[0], pairs_file)
    cpu = torch.device("cpu")
    alone = collate_pairs(ex, [0], tok.pad_id)
    with_long_partner = collate_pairs(
        ex, [0, max(range(len(ex)), key=lambda i: len(ex.ids[0][i]))], tok.pad_id
    )
    a, n_a = sequence_logps(model, alone, cpu)
    b, n_b = sequence_logps(model, with_long_partner, cpu)
    torch.testing.assert_close(a[[0, 1]], b[[0, 2]], rtol=0, atol=2e-5)
    assert n_a.tolist() == [int(ex.mask[0][0].sum()), int(ex.mask[1][0].sum())]  # reply + <|end|> only
    assert n_a.tolist() == n_b[[0, 2]].tolist()


def test_gradient_matches_the_hand_formula():
    beta = 0.3
    pc = torch.tensor([-4.0, -7.5], requires_grad=True)
    pr = torch.tensor([-5.0, -6.0], requires_grad=True)
    rc, rr = torch.tensor([-4.5, -7.0]), torch.tensor([-4.8, -6.5])
    losses, reward_c, reward_r = dpo_loss(pc, pr, rc, rr, beta)
    losses.sum().backward()
    z = beta * ((pc.detach() - rc) - (pr.detach() - rr))
    torch.testing.assert_close(pc.grad, -beta * torch.sigmoid(-z))  # d/dπ_c −log σ(z) = −β σ(−z)
    torch.testing.assert_close(pr.grad, beta * torch.sigmoid(-z))
    torch.testing.assert_close(losses, -torch.log(torch.sigmoid(z)))
    torch.testing.assert_close(reward_c - reward_r, z.detach())


def test_micro_batch_times_accumulation_is_invariant(base, pairs_file, tmp_path):  # noqa: F811
    common = ["--base", base[0], "--data", pairs_file, "--dtype", "fp32", "--no-progress",
              "--max-steps", 2, "--batch-pairs", 4, "--eval-every", 0, "--lr", 1e-2]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert dpo(*common, "--micro-batch", 4, "--out", a) == 0
    assert dpo(*common, "--micro-batch", 1, "--out", b) == 0
    wa = torch.load(a / "checkpoints/step-00000002/model.pt", weights_only=True)
    wb = torch.load(b / "checkpoints/step-00000002/model.pt", weights_only=True)
    la, lb = metrics(a), metrics(b)
    # the gradient (its norm, logged before clipping) and the loss agree to float rounding; the
    # weights too, up to Adam's first steps amplifying rounding where a gradient entry is ~0
    for key in ("train_loss", "grad_norm"):
        assert [r[key] for r in la] == pytest.approx([r[key] for r in lb], rel=1e-5)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-4)


def test_dpo_learns_and_records_lineage(base, pairs_file, tmp_path):  # noqa: F811
    out = tmp_path / "dpo"
    argv = ["--base", base[0], "--data", pairs_file, "--val-fraction", 0.25, "--out", out, *FLAGS]
    assert dpo(*argv, "--max-steps", 30, "--eval-every", 15, "--lr", 3e-3, "--beta", 0.5) == 0
    rows = metrics(out)
    assert rows[30]["val_rewards/margins"] > 0.5 and rows[30]["val_rewards/accuracies"] >= 0.9
    assert rows[30]["val_kl"] > 0 and rows[30]["val_loss"] < math.log(2) - 0.1
    assert sum(r["rewards/margins"] for r in rows[-5:]) > sum(r["rewards/margins"] for r in rows[1:6])
    meta = json.loads((out / "checkpoints/step-00000030/config.json").read_text())
    assert meta["kind"] == "dpo" and meta["parent"]["path"] == str(base[0])
    assert meta["train"]["beta"] == 0.5 and meta["data"]["pairs"] == 45
    # the final model's replies to held-back prompts, next to the chosen reply, for winnow report
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(r["step"] == 30 and r["reference"] for r in samples)


def test_one_large_step_moves_every_parameter_and_sft_term_adds_loss(base, pairs_file, tmp_path):  # noqa: F811
    out = tmp_path / "dpo"
    argv = [
        "--base",
        base[0],
        "--data",
        pairs_file,
        "--out",
        out,
        *FLAGS,
        "--max-steps",
        1,
        "--eval-every",
        0,
    ]
    assert dpo(*argv, "--lr", 0.1, "--sft-weight", 1.0, "--warmup", 0) == 0
    before = load_checkpoint(base[0])["state_dict"]
    after = torch.load(out / "checkpoints/step-00000001/model.pt", weights_only=True)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert metrics(out)[0]["train_loss"] > math.log(2) + 1  # ln 2 + the chosen replies' token NLL


def test_resume_reproduces_the_uninterrupted_dpo_run(base, pairs_file, tmp_path):  # noqa: F811
    common = ["--base", base[0], "--data", pairs_file, "--val-fraction", 0.2, *FLAGS, "--max-steps", 6,
              "--save-every", 3, "--eval-every", 3, "--keep-checkpoints", 0, "--lr", 3e-3]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert dpo(*common, "--out", a) == 0
    assert dpo(*common, "--out", b, "--stop-after", 3) == 0
    assert dpo("--out", b, "--resume", "--dtype", "fp32", "--no-progress") == 0
    wa = torch.load(a / "checkpoints/step-00000006/model.pt", weights_only=True)
    wb = torch.load(b / "checkpoints/step-00000006/model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics(a) == metrics(b)


def test_a_reward_checkpoint_is_refused_as_the_policy(base, pairs_file, tmp_path, capsys):  # noqa: F811
    rm = tmp_path / "rm"
    assert reward("--base", base[0], "--data", pairs_file, "--out", rm, *FLAGS, "--max-steps", 1) == 0
    capsys.readouterr()
    assert dpo("--base", rm, "--data", pairs_file, "--out", tmp_path / "d", *FLAGS, "--max-steps", 1) == 2
    assert "is a reward model; DPO needs a policy" in capsys.readouterr().err


def test_hh_transcript_rows_train(base, tmp_path):  # noqa: F811
    rows = [
        {"chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['chosen']}",
         "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['rejected']}"}
        for r in bright_pairs(8)
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "hh.jsonl", rows)
    assert dpo("--base", base[0], "--data", data, "--out", tmp_path / "d", *FLAGS, "--max-steps", 1) == 0
