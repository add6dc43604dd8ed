"""PPO's math for RLHF (InstructGPT, Ouyang et al. 2022), as pure torch functions.

Shapes: ``B`` answers of ``T`` tokens. ``mask`` is [B, T], 1 on real answer tokens; answers are
right-padded, so each row is a run of ones followed by zeros. One PPO step reads top to bottom:

    logprobs -> compute_rewards (score - beta*KL) -> gae -> masked_whiten(advantages)
             -> policy_loss + vf_coef * value_loss, with beta from a KL controller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor


# ---------------------------------------------------------------- log-probs from logits
def logprobs_from_logits(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(label) per token, [B, T, V] -> [B, T], in fp32.

    Logits are divided by the sampling temperature so the ratio pi/pi_old is taken under the same
    distribution the tokens were drawn from. Rows are processed one at a time, so a bf16 batch never
    gets a full [B, T, V] fp32 copy (only [T, V]).
    """
    rows = []
    for row, lab in zip(logits, labels, strict=True):
        row = row.float() / temperature
        rows.append(row.gather(-1, lab.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of the next-token distribution, [B, T, V] -> [B, T] fp32 (a collapse monitor).

    Uses entr(p) = -p log p, which is 0 at p = 0, so -inf logits (filtered vocabulary) give no NaN.
    ``temperature`` scales row by row, like ``logprobs_from_logits``, so no [B, T, V] fp32 copy is made.
    """
    return torch.stack(
        [torch.special.entr(torch.softmax(row.float() / temperature, dim=-1)).sum(-1) for row in logits]
    )


# ---------------------------------------------------------------- masked statistics
def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over positions where mask is 1 (padding must not dilute the average)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over masked positions; ``unbiased`` applies Bessel's n/(n-1) correction (as TRL)."""
    n = mask.to(x.dtype).sum()
    if n == 0 or (unbiased and n == 1):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} unmasked value(s), got {int(n)}")
    var = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return var * n / (n - 1) if unbiased else var


# Sums a tensor over all processes (e.g. `accelerator.reduce(t, "sum")`): statistics taken with it are those of
# the global batch, so N processes with B/N rows each compute what one process with B rows does.
Reduce = Callable[[Tensor], Tensor]


def masked_mean_var(x: Tensor, mask: Tensor, reduce: Reduce | None = None) -> tuple[Tensor, Tensor]:
    """Masked mean and unbiased variance, over this process's rows or, with `reduce`, over all processes'."""
    if reduce is None:
        return masked_mean(x, mask), masked_var(x, mask)
    mask = mask.to(x.dtype)
    total, n = reduce(torch.stack([(x * mask).sum(), mask.sum()]))
    mean = total / n
    squares = reduce(((x - mean) ** 2 * mask).sum())
    return mean, squares / (n - 1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, reduce: Reduce | None = None) -> Tensor:
    """Normalise to masked mean 0 / var 1, so the advantage scale does not depend on the reward scale.

    ``shift_mean=False`` keeps the original mean (TRL does this for rewards, not advantages).
    """
    mean, var = masked_mean_var(x, mask, reduce)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


# ---------------------------------------------------------------- KL penalty and rewards
def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: Literal["k1", "k3"] = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled tokens (Schulman, "Approximating KL").

    k1 = log p - log p_ref: unbiased, but single tokens can be negative.
    k3 = (r - 1) - log r with r = p_ref / p: unbiased and always >= 0, lower variance.
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        log_r = ref_logprobs - logprobs
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1' or 'k3'")


@torch.no_grad()
def compute_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    kl_kind: Literal["k1", "k3"] = "k1",
) -> tuple[Tensor, Tensor]:
    """Per-token rewards: -kl_coef * KL on every answer token, plus the reward-model score on the last.

    The score judges the whole answer, so it arrives when the episode ends (the last real token);
    the KL penalty keeps the policy near the SFT model on every token. Rewards are environment
    signals, hence no gradient. Returns (rewards, kl), both [B, T] and zero where mask is 0.
    """
    mask = mask.bool()
    kl = kl_estimate(logprobs, ref_logprobs, kl_kind) * mask
    rewards = -kl_coef * kl
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1)  # last index where mask == 1
    if (last < 0).any():
        raise ValueError(f"rows {torch.nonzero(last < 0).flatten().tolist()} have no answer tokens")
    rewards[torch.arange(len(last), device=mask.device), last] += scores.to(rewards.dtype)
    return rewards, kl


# ---------------------------------------------------------------- advantages
@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016) over the answer tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}. The episode ends
    at the last real token, so V and A after it are 0: masking both makes a padded row identical to
    the same row without its padding. Returns (advantages, returns = advantages + values); these are
    regression targets, hence no gradient.
    """
    mask = mask.to(values.dtype)
    next_value = next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        advantages[:, t] = next_adv
    return advantages, advantages + values


# ---------------------------------------------------------------- losses
def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate: mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    The max (a pessimistic bound) removes the incentive to push the ratio past 1 +/- eps in the
    direction the advantage favours. Stats are detached 0-d tensors (call .item() when logging).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss 0.5 * mean(max((v - R)^2, (clip(v, old +/- eps) - R)^2)), as in TRL/OpenAI.

    Clipping keeps the value head from moving far from the values the advantages were built on.
    """
    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped_loss > unclipped_loss).float(), mask)}
    return loss, stats


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor, reduce: Reduce | None = None) -> Tensor:
    """1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    return (
        1.0 - masked_mean_var(returns - values, mask, reduce)[1] / masked_mean_var(returns, mask, reduce)[1]
    )


# ---------------------------------------------------------------- the score an answer gets
def shape_scores(
    raw: Tensor,
    has_eos: Tensor,
    *,
    stats: dict[str, float] | None = None,
    clip: float | None = None,
    missing_eos_penalty: float | None = None,
) -> Tensor:
    """The RM's raw scores as PPO's episode rewards: normalised with the RM's stored statistics (reference
    answers at mean 0, std 1, so one KL coefficient fits every RM), clipped, and lowered for answers that never
    ended (a truncated answer would otherwise be scored as if it had)."""
    scores = raw
    if stats is not None:
        scores = (scores - stats["mean"]) / max(stats["std"], 1e-8)
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~has_eos).float()
    return scores


# ---------------------------------------------------------------- KL coefficient (beta) controllers
class KLController:
    """Holds beta, the KL penalty coefficient; state_dict() lets a resumed run keep the same beta."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Called once per PPO batch with the measured mean KL per answer; fixed beta ignores it."""

    def state_dict(self) -> dict[str, float]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, float]) -> None:
        vars(self).update(state)


class FixedKLController(KLController):
    """Constant beta (InstructGPT used a fixed 0.02)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef


class AdaptiveKLController(KLController):
    """Steers beta so the KL tracks ``target`` (Ziegler et al. 2019, "Fine-Tuning LMs from Human
    Preferences"): beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
