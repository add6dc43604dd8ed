"""Reward-model metrics: local ``evaluate`` modules (loadable offline) and `ranking_metrics` over ranked rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import evaluate
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..loss import ranked_loss
from ..model import score

__all__ = ["METRICS", "load_metric", "ranking_metrics"]

_HERE = Path(__file__).resolve().parent
METRICS = ("kendall_tau", "pairwise_accuracy")


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` on the bundled script directory, so no Hub access is needed."""
    if name not in METRICS:
        raise ValueError(f"unknown reward metric {name!r}; available: {list(METRICS)}")
    return evaluate.load(str(_HERE / name), **kwargs)


def ranking_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """Held-out quality of a reward model on ranked rows: pairwise accuracy, mean Kendall tau, loss, rewards.

    Every answer is scored once; pairwise accuracy and tau come from the shipped `evaluate` modules.
    """
    prompts = [row["prompt"] for row in rows for _ in row["responses"]]
    responses = [r for row in rows for r in row["responses"]]
    rewards = score(model, tokenizer, prompts, responses, batch_size)
    sizes = [len(row["responses"]) for row in rows]
    grouped, start = [], 0
    for k in sizes:
        grouped.append(rewards[start : start + k])
        start += k
    references = [list(row["ranks"]) for row in rows]
    accuracy = load_metric("pairwise_accuracy").compute(predictions=grouped, references=references)
    tau = load_metric("kendall_tau").compute(predictions=grouped, references=references)
    flat_ranks = torch.tensor([r for ranks in references for r in ranks])
    loss, _ = ranked_loss(torch.tensor(rewards), sizes, flat_ranks)
    values = torch.tensor(rewards)
    return {
        "pairwise_accuracy": accuracy["pairwise_accuracy"],
        "pairs": accuracy["pairs"],
        "kendall_tau": tau["kendall_tau"],
        "loss": loss.item(),
        "reward_mean": values.mean().item(),
        "reward_std": values.std(unbiased=False).item(),
    }
