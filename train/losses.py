"""Losses, in one place (the model returns logits; trainers pick a loss from here).

Every loss returns ``(loss_sum, n)``: the *sum* over the supervised items and their count, never a
mean.  The training loop divides by the number of supervised items of the whole accumulated
global batch, so that micro-batch 8 × accumulation 1 and 1 × 8 give the same gradient even when
examples have different numbers of supervised tokens (a mean per micro-batch would weight a token
of a short example more than one of a long example).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # target id of a position that is not supervised (prompt, padding)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over the positions whose target is not ``IGNORE``, in fp32;
    returns ``(sum, number of supervised positions)``."""
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, (targets != IGNORE).sum()


# --------------------------------------------------------------------------------------------------
# RL: KL estimators, GRPO's group advantages and loss aggregations (train/grpo.py, train/ppo.py)

GRPO_LOSS_TYPES = ("token", "sequence", "dr_grpo")


def kl_estimates(logp: torch.Tensor, ref_logp: torch.Tensor) -> dict[str, torch.Tensor]:
    """Schulman's per-token estimators of KL(π ‖ π_ref) for tokens sampled from π (same shape in,
    same shape out): ``k1 = logp - ref_logp`` (unbiased, can be negative, high variance),
    ``k2 = ½ (logp - ref_logp)²`` (biased, low variance; TRL logs it), ``k3 = exp(ref - logp) -
    (ref - logp) - 1`` (unbiased and >= 0; GRPO's KL term, in the loss).  Their means over samples
    of π converge to the exact KL (k2 to second order in the log-ratio): ``tests/test_rollout.py``."""
    log_ratio = logp.float() - ref_logp.float()
    return {
        "k1": log_ratio,
        "k2": 0.5 * log_ratio.square(),
        "k3": torch.expm1(-log_ratio) + log_ratio,  # exp(-x) - 1 + x, expm1 keeps small x exact
    }


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "group", eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, zero_std) of rewards laid out group by group ((n·G,) → G consecutive completions
    of one prompt).  ``scale="group"``: ``(r - mean_g) / (std_g + eps)`` (GRPO; std unbiased, as
    TRL); ``"none"``: ``r - mean_g`` (Dr. GRPO: dividing by the std up-weights prompts that are
    almost always solved or failed).  ``zero_std`` (n,) bool marks groups whose rewards are all
    equal: their advantages are exactly 0, so they contribute no gradient (``frac_reward_zero_std``)."""
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size} (need G >= 2)")
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none' (got {scale!r})")
    r = rewards.double().view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    zero_std = (r == r[:, :1]).all(dim=1)
    centred = torch.where(zero_std[:, None], torch.zeros_like(centred), centred)  # not ±1e-17 noise
    if scale == "group":
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    return centred.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32), zero_std


def grpo_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str,
    max_completion_length: int | None = None,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's policy loss of one micro-batch as ``(loss_sum, n)`` (the loop divides by the n of the
    whole step).  ``logp``, ``old_logp``, ``ref_logp``, ``mask``: (B, L) over completion positions;
    ``advantages`` (B,), one per sequence.

    Per token: ``-min(ρ A, clip(ρ, 1±ε) A) + β k3`` with ``ρ = exp(logp - old_logp)``; without
    ``old_logp`` (on-policy, one step per rollout) ρ is ``exp(logp - logp.detach())``: 1 in value,
    ∇logp in gradient, and the clip never binds.  Aggregation (``loss_type``):

    * ``token`` (DAPO; TRL's default ``dapo``): Σ over every completion token / tokens of the step
      → n = tokens.  Each token weighs the same, so a long completion's tokens are not diluted;
    * ``sequence`` (the original GRPO): Σ over sequences of each one's token *mean* / sequences →
      n = sequences.  A token of a 10-token answer weighs 100× one of a 1000-token answer (NeMo-RL
      PR #3656), which lets long wrong answers off lightly (TRL PR #3138's long-gibberish runs);
    * ``dr_grpo``: Σ over every token / (sequences × ``max_completion_length``) → n = sequences, each
      term divided by the constant L_max (Dr. GRPO): no length bias and a scale fixed per run.
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(GRPO_LOSS_TYPES)} (got {loss_type!r})")
    mask = mask.float()
    old = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old)
    adv = advantages.float()[:, None]
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    if beta:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        per_token = per_token + beta * kl_estimates(logp, ref_logp)["k3"]
    per_token = per_token * mask
    n_seq = torch.tensor(float(mask.shape[0]), device=mask.device)
    if loss_type == "token":
        return per_token.sum(), mask.sum()
    if loss_type == "sequence":
        return (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum(), n_seq
    if not max_completion_length:
        raise ValueError("loss_type dr_grpo needs max_completion_length")
    return per_token.sum() / max_completion_length, n_seq


# --------------------------------------------------------------------------------------------------
# PPO (train/ppo.py): advantages, whitening, the clipped policy and value losses.  Tensors are (B, T)
# over the token positions of a rollout; ``mask`` (float, 1 on the reply's tokens) keeps the prompt and
# the padding out of every sum and statistic.


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum()


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """``(x − mean) / sqrt(var + 1e-8)`` over the masked positions (mean added back when not
    ``shift_mean``), zero elsewhere.  The variance is Bessel-corrected (÷ (n − 1)), as TRL's and
    lm-human-preferences' ``whiten``, so whitened advantages match theirs on the same numbers."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = (((x - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) → ``(advantages, returns)``.

    ``rewards[t]`` is the reward of the action at position t (the token at t + 1), ``values[t]`` the
    value of the state it was taken in.  ``δ_t = r_t + γ·V_{t+1} − V_t``, ``A_t = δ_t + γλ·A_{t+1}``,
    run backwards; ``returns = A + V`` (the value target).  Positions outside ``mask`` count as
    reward 0 and value 0, so the state after a reply's last token is terminal (V = 0) and padding
    after it adds nothing; a reply may start anywhere in its row (prompts of different lengths,
    right padding).  A loop over T (≤ a few hundred reply tokens) of (B,) operations: ~1 ms for
    B = 64, T = 256 on this machine, negligible next to one forward."""
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        adv[:, t] = running
    adv = adv * mask
    return adv, (adv + values) * mask


def clipped_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, summed over the masked tokens: ``Σ max(−A·ρ, −A·clip(ρ, 1 ± ε))``
    with ``ρ = exp(logp − old_logp)``.  Returns ``(loss_sum, sums)`` where ``sums`` (detached, summed
    over the same tokens) holds ``clipfrac`` (tokens whose clipped term is the larger one: the
    gradient is cut there), ``ratio`` and ``approxkl`` (``½ (logp − old_logp)²``, TRL's)."""
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = (torch.maximum(unclipped, clipped) * mask).sum()
    with torch.no_grad():
        sums = {
            "clipfrac": ((clipped > unclipped).float() * mask).sum(),
            "ratio": (ratio * mask).sum(),
            "approxkl": (0.5 * log_ratio**2 * mask).sum(),
        }
    return loss, sums


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ ½ max((V − R)², (clip(V, V_old ± ε_v) − R)²)`` over the masked tokens (the value moves at
    most ε_v from its rollout-time estimate before the loss stops pulling it), and the number of
    tokens where the clipped term is the larger one (``val/clipfrac``)."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * (torch.maximum(unclipped, clipped) * mask).sum()
    return loss, ((clipped > unclipped).float() * mask).sum().detach()
