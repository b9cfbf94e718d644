"""``winnow train ppo``: GAE, whitening and the clipped policy and value losses against hand-computed
numbers; the KL controller; and the trainer on a tiny policy and reward model (CPU, fp32, one
thread): ratio exactly 1 and clip fraction 0 on the first minibatch, every trainable parameter moving
in one step, exact resume mid-rollout, lineage and kind, the refusals, and ``winnow generate`` on the
result."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import clipped_policy_loss, clipped_value_loss, gae, masked_whiten


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
