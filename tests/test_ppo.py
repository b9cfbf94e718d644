"""``winnow train ppo``: GAE, whitening and the clipped policy and value losses against hand-computed
numbers; the KL controller; and the trainer on a tiny policy and reward model (CPU, fp32, one
thread): ratio exactly 1 and clip fraction 0 on the first minibatch, every trainable parameter moving
in one step, exact resume mid-rollout, lineage and kind, the refusals, and ``winnow generate`` on the
result."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_reward import bright_pairs, reward
from test_sft import base, metrics, write_jsonl  # noqa: F401 (base is a fixture)

from pipeline.cli import main as winnow
from train.losses import clipped_policy_loss, clipped_value_loss, gae, masked_whiten
from train.ppo import KLController

FLAGS = [
    "--micro-batch",
    2,
    "--dtype",
    "fp32",
    "--no-progress",
    "--rollout-prompts",
    4,
    "--max-new-tokens",
    8,
]


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# the losses, by hand


def test_gae_matches_a_hand_computation():
    # row 0: a prompt position, then 3 reply tokens; row 1: 2 reply tokens, then padding (whose
    # reward 9 and value 7 must be ignored).  γ = 0.9, λ = 0.5, so γλ = 0.45.
    rewards = torch.tensor([[0.0, -0.1, 0.2, 1.0], [0.0, 0.0, 2.0, 9.0]])
    values = torch.tensor([[5.0, 0.5, 0.4, 0.3], [0.0, 1.0, -1.0, 7.0]])
    mask = torch.tensor([[0.0, 1, 1, 1], [0, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: δ3 = 1 − 0.3 = 0.7; δ2 = 0.2 + 0.9·0.3 − 0.4 = 0.07, A2 = 0.07 + 0.45·0.7 = 0.385;
    #        δ1 = −0.1 + 0.9·0.4 − 0.5 = −0.24, A1 = −0.24 + 0.45·0.385 = −0.06675
    # row 1: δ2 = 2 + 0 − (−1) = 3 (the padding's value is not a next state); δ1 = 0.9·(−1) − 1 = −1.9,
    #        A1 = −1.9 + 0.45·3 = −0.55
    torch.testing.assert_close(adv, torch.tensor([[0.0, -0.06675, 0.385, 0.7], [0, -0.55, 3.0, 0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.43325, 0.785, 1.0], [0, 0.45, 2.0, 0]]))


def test_gae_limits_are_monte_carlo_returns_and_td_errors():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    mask = torch.ones(3, 6)
    mask[1, 4:] = 0
    gamma = 0.8
    adv1, _ = gae(r, v, mask, gamma=gamma, lam=1.0)
    adv0, _ = gae(r, v, mask, gamma=gamma, lam=0.0)
    rm, vm = r * mask, v * mask
    for b in range(3):
        for t in range(6):
            mc = sum(gamma**k * rm[b, t + k] for k in range(6 - t)) - vm[b, t]
            nxt = vm[b, t + 1] if t < 5 else 0.0
            assert adv1[b, t].item() == pytest.approx(mc.item() * mask[b, t].item(), abs=1e-5)
            td = (rm[b, t] + gamma * nxt - vm[b, t]) * mask[b, t]
            assert adv0[b, t].item() == pytest.approx(td.item(), abs=1e-6)


def test_whitening_uses_the_masked_positions_only():
    x = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # mean 2, Bessel variance (1 + 0 + 1) / 2 = 1
    torch.testing.assert_close(masked_whiten(x, mask), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False), torch.tensor([[1.0, 2.0], [3.0, 0]]))


def test_clipped_policy_loss_matches_a_hand_computation():
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.1, 3.0]])
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    loss, sums = clipped_policy_loss(ratio.log(), old, adv, mask, 0.2)
    # max(−Aρ, −A·clip(ρ, 0.8, 1.2)) per token: −1.2 (clipped), −0.5, 1.6 (clipped), 1.1; masked: none
    assert loss.item() == pytest.approx(-1.2 - 0.5 + 1.6 + 1.1, abs=1e-6)
    assert sums["clipfrac"].item() == 2
    assert sums["ratio"].item() == pytest.approx(1.5 + 0.5 + 0.5 + 1.1, abs=1e-6)
    kl = 0.5 * (math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2 + math.log(1.1) ** 2)
    assert sums["approxkl"].item() == pytest.approx(kl, abs=1e-6)
    # the gradient flows through the unclipped tokens only: d/dlogp of −A·ρ is −A·ρ
    logp = ratio.log().requires_grad_(True)
    clipped_policy_loss(logp, old, adv, mask, 0.2)[0].backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, 0.0, 1.1, 0.0]]))


def test_clipped_value_loss_matches_a_hand_computation():
    values = torch.tensor([[1.0, 1.0, 0.1, 50.0]])
    old = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0]])
    loss, clipped = clipped_value_loss(values, old, returns, mask, 0.2)
    # V clipped to 0.7: max((1−2)², (0.7−2)²) = 1.69 (clipped); max(1, 0.49) = 1; 0.81 both ways
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0 + 0.81), abs=1e-6)
    assert clipped.item() == 1


def test_kl_controller_fixed_or_adaptive_within_20_percent_per_horizon():
    fixed = KLController(0.1)
    fixed.update(50.0, 64)
    assert fixed.value == 0.1
    kl = KLController(0.1, target=6.0, horizon=100)
    kl.update(6.6, 10)  # 10 % over the target: β × (1 + 0.1 · 10/100)
    assert kl.value == pytest.approx(0.1 * 1.01)
    kl.update(600.0, 10)  # far over: the error is clipped to +0.2
    assert kl.value == pytest.approx(0.1 * 1.01 * 1.02)
    kl.update(0.0, 50)  # far under: −0.2
    assert kl.value == pytest.approx(0.1 * 1.01 * 1.02 * 0.9)


# --------------------------------------------------------------------------------------------------
# the trainer


def ppo(*argv) -> int:
    return winnow(["train", "ppo", *map(str, argv)])


@pytest.fixture(scope="module")
def models(base, tmp_path_factory):  # noqa: F811
    """(policy checkpoint, reward model output folder, prompts file): test_sft's tiny pretrained base
    as the policy and a 2-step reward model on the "bright" pairs from it (same tokenizer)."""
    tmp = tmp_path_factory.mktemp("ppo")
    pairs = write_jsonl(tmp / "pairs.jsonl", bright_pairs(16))
    rm = tmp / "rm"
    flags = ["--micro-batch", 2, "--dtype", "fp32", "--no-progress", "--max-steps", 2, "--eval-every", 0]
    assert reward("--base", base[0], "--data", pairs, "--out", rm, *flags) == 0
    prompts = write_jsonl(tmp / "prompts.jsonl", [{"prompt": r["prompt"]} for r in bright_pairs(24, seed=3)])
    return base[0], rm, prompts


def test_first_minibatch_has_ratio_1_and_no_clipping_and_records_kind_and_lineage(models, tmp_path):
    policy, rm, prompts = models
    out = tmp_path / "ppo"
    argv = ["--policy", policy, "--reward", rm, "--prompts", prompts, "--out", out, *FLAGS]
    # 2 micro-batches of 2 rows per step, 2 epochs: rollout 1 is steps 1-2, rollout 2 steps 3-4
    assert ppo(*argv, "--batch-rows", 4, "--ppo-epochs", 2, "--max-steps", 4, "--lr", 1e-2,
               "--val-fraction", 0.25, "--eval-every", 2) == 0  # fmt: skip
    rows = metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    first = rows[1]
    # the old log-probs were computed on these very micro-batches: bit-identical, not just close
    assert first["val/ratio"] == 1.0 and first["policy/clipfrac_avg"] == 0.0
    assert first["policy/approxkl_avg"] == 0.0 and first["val/clipfrac_avg"] == 0.0
    assert first["loss/value_avg"] > 0 and first["objective/kl"] == 0.0  # the policy is the reference
    assert rows[2]["val/ratio"] != 1.0  # the second epoch sees the updated policy
    r3 = rows[3]
    assert r3["objective/kl"] != 0.0  # the second rollout comes from the updated policy
    assert r3["objective/kl"] == r3["objective/kl_k1"] and r3["objective/kl_k3"] > 0  # k1 by default
    assert r3["objective/non_score_reward"] == pytest.approx(-0.05 * r3["objective/kl"])
    assert r3["rlhf_reward"] == pytest.approx(r3["objective/scores"] + r3["objective/non_score_reward"])
    names = {"rlhf_reward", "objective/rlhf_reward", "objective/scores", "objective/non_score_reward",
             "objective/kl", "objective/kl_k1", "objective/kl_k2", "objective/kl_k3", "objective/entropy",
             "objective/kl_coef", "completions/mean_length", "completions/eot_fraction", "loss/policy_avg",
             "loss/value_avg", "policy/clipfrac_avg", "val/ratio", "policy/approxkl_avg", "val/clipfrac_avg",
             "train_loss", "supervised_tokens"}  # fmt: skip
    assert names <= set(first)
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[1])
    assert {"timing/generation_s", "timing/scoring_s", "timing/training_s"} <= set(line)
    assert line["timing/generation_s"] > 0
    assert {"val_reward", "val_kl", "val_completion_length"} <= set(rows[0]) and rows[0]["val_kl"] == 0.0
    assert "val_reward" in rows[2] and "val_reward" not in rows[1]
    meta = json.loads((out / "checkpoints/step-00000004/config.json").read_text())
    assert meta["kind"] == "ppo" and meta["parent"]["path"] == str(policy)
    assert meta["reward"]["kind"] == "reward" and meta["reward"]["path"].startswith(str(rm))
    assert meta["data"]["prompts"] == meta["data"]["examples"] == 18 and meta["data"]["val"]["rows"] == 6


def test_one_step_at_a_large_lr_moves_every_trainable_parameter(models, tmp_path):
    policy, rm, prompts = models
    out = tmp_path / "ppo"
    argv = ["--policy", policy, "--reward", rm, "--prompts", prompts, "--out", out, *FLAGS]
    assert ppo(*argv, "--max-steps", 1, "--lr", 0.05, "--eval-every", 0) == 0
    before = torch.load(policy / "model.pt", weights_only=True)
    after = torch.load(out / "checkpoints/step-00000001/model.pt", weights_only=True)
    assert set(after) == set(before)  # a plain GPT: the value head is not in model.pt
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    head = torch.load(out / "checkpoints/step-00000001/trainer.pt", weights_only=True)["data"]["value_head"]
    assert head["weight"].abs().sum() > 0 and head["bias"].abs().sum() > 0  # from zero


def test_resume_mid_rollout_reproduces_the_uninterrupted_run(models, tmp_path):
    policy, rm, prompts = models
    # 3 steps per rollout (3 epochs of one 4-row minibatch): step 2 is mid-rollout, step 4 in the next
    common = ["--policy", policy, "--reward", rm, "--prompts", prompts, *FLAGS, "--batch-rows", 4,
              "--ppo-epochs", 3, "--max-steps", 4, "--save-every", 2, "--keep-checkpoints", 0, "--lr", 1e-2,
              "--target-kl", 0.5, "--kl-horizon", 10, "--missing-eot-penalty", 1.0,
              "--kl-estimator", "k3"]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert ppo(*common, "--out", a) == 0
    assert ppo(*common, "--out", b, "--stop-after", 2) == 0
    assert ppo("--out", b, "--resume", "--dtype", "fp32", "--no-progress") == 0
    # the buffer's position counts micro-batches: --micro-batch defines the run
    assert ppo("--out", b, "--resume", "--micro-batch", 4, "--no-progress") == 2
    ra, rb = metrics(a), metrics(b)
    assert ra == rb and len(ra) == 4
    assert ra[3]["objective/kl_coef"] != ra[0]["objective/kl_coef"]  # the adaptive β moved, and resumed
    assert ra[3]["objective/kl"] == ra[3]["objective/kl_k3"]
    for name in ("model.pt", "trainer.pt"):
        wa = torch.load(a / "checkpoints/step-00000004" / name, weights_only=True)
        wb = torch.load(b / "checkpoints/step-00000004" / name, weights_only=True)
        if name == "trainer.pt":
            wa, wb = wa["data"]["value_head"], wb["data"]["value_head"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the final policy's greedy replies for winnow report, the same after a resume
    samples = (a / "samples.jsonl").read_text()
    assert samples == (b / "samples.jsonl").read_text()
    assert [json.loads(line)["step"] for line in samples.splitlines()] == [4] * 4


def test_refusals_exit_2_with_the_reason(models, tmp_path, capsys):
    policy, rm, prompts = models
    out = tmp_path / "x"
    assert ppo("--policy", rm, "--reward", rm, "--prompts", prompts, "--out", out, *FLAGS) == 2
    assert "is a reward model (kind: reward)" in capsys.readouterr().err
    assert ppo("--policy", policy, "--reward", policy, "--prompts", prompts, "--out", out, *FLAGS) == 2
    assert "is a pretrain checkpoint, not a reward model" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "hi"}, {"question": "hi"}])
    assert ppo("--policy", policy, "--reward", rm, "--prompts", bad, "--out", out, *FLAGS) == 2
    assert "bad.jsonl:2: no `prompt`" in capsys.readouterr().err
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    assert ppo("--policy", policy, "--reward", rm, "--prompts", empty, "--out", out, *FLAGS) == 2
    assert "no rows (an empty file)" in capsys.readouterr().err
    assert ppo("--policy", policy, "--reward", rm, "--prompts", prompts, "--out", out, *FLAGS,
               "--batch-rows", 3) == 2  # fmt: skip
    assert "--rollout-prompts 4 must be a multiple of --batch-rows 3" in capsys.readouterr().err


def test_generate_accepts_the_ppo_checkpoint_and_refuses_the_reward_model(models, tmp_path):
    from helpers import winnow as winnow_cli

    policy, rm, prompts = models
    out = tmp_path / "ppo"
    assert ppo("--policy", policy, "--reward", rm, "--prompts", prompts, "--out", out, *FLAGS,
               "--max-steps", 1) == 0  # fmt: skip
    res = winnow_cli(
        "generate", "--checkpoint", str(out), "--chat", "--prompt", "hi", "--max-new-tokens", "4"
    )
    assert res.returncode == 0, res.stderr
    res = winnow_cli("generate", "--checkpoint", str(rm), "--prompt", "hi")
    assert res.returncode == 2 and "is a reward model" in res.stderr
