"""Evaluation of a policy on the embedded task with the programmatic gold judge."""

from __future__ import annotations

import statistics

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .generation import generate
from .tiny.task import DEFAULT_TASK, SortTask

# Held-out evaluation prompts: a seed no training split uses.
GOLD_EVAL_SEED = 12345


def gold_prompts(n: int, task: SortTask = DEFAULT_TASK) -> list[str]:
    return task.prompts(n, seed=GOLD_EVAL_SEED)


def gold_eval(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n_prompts: int = 200,
    *,
    task: SortTask = DEFAULT_TASK,
    max_new_tokens: int = 16,
) -> dict[str, float]:
    """Greedy answers to held-out prompts, scored by the gold judge: mean score and exact-answer rate."""
    prompts = gold_prompts(n_prompts, task)
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    scores = [task.score(p, a) for p, a in zip(prompts, answers, strict=True)]
    return {"score": statistics.fmean(scores), "exact": sum(s == 1.0 for s in scores) / len(scores)}
