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
