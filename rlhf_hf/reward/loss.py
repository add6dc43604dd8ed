"""InstructGPT's ranked reward-model loss over all C(K, 2) pairs of each prompt.

All K answers of a prompt are scored in one forward pass and every non-tied pair is built from those
K rewards, instead of K*(K-1)/2 separate forwards: InstructGPT found that treating each pair as an
independent example overfits, and it forwards K answers instead of K(K-1), (K-1) times cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ranked_loss"]


def _pair_indices(group: Tensor, sizes: Tensor, ranks: Tensor) -> tuple[Tensor, Tensor]:
    """(winner, loser) flat indices of every pair in the same prompt with a strictly better rank.

    Each answer is compared with the K_max slots of its own prompt (an N x K_max mask, not N x N: whole
    evaluation sets go through here too). Pairs come out ordered by winner then loser, the same order as
    ``data.pairs_from_ranks``.
    """
    starts = torch.cumsum(sizes, 0) - sizes
    slot = torch.arange(int(sizes.max()), device=ranks.device)
    other = starts[group][:, None] + slot[None, :]  # [N, K_max] flat index of each same-prompt slot
    valid = slot[None, :] < sizes[group][:, None]
    other = torch.where(valid, other, 0)
    better = valid & (ranks[:, None] < ranks[other])
    winner, position = better.nonzero(as_tuple=True)
    return winner, other[winner, position]


def ranked_loss(
    rewards: Tensor,
    group_sizes: Sequence[int] | Tensor,
    ranks: Tensor,
    margins_scores: Tensor | None = None,
    margin_scale: float = 0.0,
    center_coef: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Mean over prompts of the mean over their non-tied pairs of ``-log sigmoid(r_w - r_l - m_wl)``.

    ``rewards`` ([N] or [N, 1]) holds the scalar reward of every answer, prompt after prompt; prompt
    i owns ``group_sizes[i]`` consecutive entries, so prompts may have different K. ``ranks`` [N] is
    1 = best with ties allowed (tied pairs are excluded). Averaging per prompt first gives every
    prompt the same weight whatever its K, as in InstructGPT (1 / C(K, 2) per prompt); prompts
    without any pair are left out of the batch mean.

    With ``margins_scores`` [N] (higher = better) the margin is ``margin_scale * (s_w - s_l)``; a NaN
    score (unknown) gives a zero margin, so rows with and without scores can share a batch.
    ``center_coef`` adds ``center_coef * mean(rewards**2)`` (TRL's ``center_rewards_coefficient``)
    to keep rewards near zero, since the pairwise loss only sees differences.

    Stats (floats, detached): ``pairs``, ``accuracy`` (fraction of pairs with r_w > r_l) and
    ``margin_mean`` (mean r_w - r_l); the last two are NaN when the batch has no pair.
    """
    if rewards.dim() == 2 and rewards.shape[1] == 1:
        rewards = rewards.squeeze(-1)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape [N] or [N, 1], got {tuple(rewards.shape)}")
    device, n = rewards.device, rewards.shape[0]
    sizes = torch.as_tensor(group_sizes, dtype=torch.long, device=device)
    if int(sizes.sum()) != n or ranks.numel() != n:
        raise ValueError(f"group_sizes sum to {int(sizes.sum())} and ranks has {ranks.numel()}; need {n}")

    scores = rewards.float()
    group = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)
    winner, loser = _pair_indices(group, sizes, ranks.to(device).reshape(-1))
    diff = scores[winner] - scores[loser]
    margin = torch.zeros_like(diff)
    if margins_scores is not None and margin_scale:
        s = margins_scores.to(device=device, dtype=torch.float32).reshape(-1)
        margin = torch.nan_to_num(margin_scale * (s[winner] - s[loser]), nan=0.0)
    pair_loss = -F.logsigmoid(diff - margin)

    pair_group = group[winner]
    counts = torch.bincount(pair_group, minlength=len(sizes))
    sums = torch.zeros(len(sizes), device=device).index_add(0, pair_group, pair_loss)
    has_pairs = counts > 0
    # no host sync: empty prompts contribute 0 and are excluded from the denominator
    loss = (sums / counts.clamp(min=1)).sum() / has_pairs.sum().clamp(min=1)
    if center_coef:
        loss = loss + center_coef * scores.pow(2).mean()

    with torch.no_grad():
        n_pairs = int(winner.numel())
        nan = float("nan")
        stats = {
            "pairs": n_pairs,
            "accuracy": (diff > 0).float().mean().item() if n_pairs else nan,
            "margin_mean": diff.mean().item() if n_pairs else nan,
        }
    return loss, stats
