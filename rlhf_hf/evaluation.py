"""Evaluation of a policy: on a task's held-out prompts with its gold judge, and policies compared side by side."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .generation import encode_prompts, generate, generate_answers
from .tasks import Task

# Held-out evaluation prompts: a seed no training split uses.
GOLD_EVAL_SEED = 12345


def gold_prompts(n: int, task: Task) -> list:
    return task.prompts(n, seed=GOLD_EVAL_SEED)


def gold_eval(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n_prompts: int = 200,
    *,
    task: Task,
    max_new_tokens: int = 16,
) -> dict[str, float]:
    """Greedy answers to held-out prompts, scored by the gold judge: mean score and exact-answer rate."""
    prompts = gold_prompts(n_prompts, task)
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    scores = [task.score(p, a) for p, a in zip(prompts, answers, strict=True)]
    return {"score": statistics.fmean(scores), "exact": sum(s == 1.0 for s in scores) / len(scores)}


# ------------------------------------------------------------------------------------------ policy comparison
@dataclass
class Samples:
    """Sampled answers, kept as token ids so log-probs are taken on exactly the generated tokens."""

    prompts: list
    texts: list[str]
    answer_ids: list[list[int]]  # up to and including the first eos
    has_eos: list[bool]


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    batch_size: int = 128,
) -> Samples:
    """Answers sampled as PPO samples them (temperature, top_k=0), seeded for comparable evaluations."""
    torch.manual_seed(seed)
    answers = generate_answers(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        batch_size=batch_size,
    )
    model.eval()
    return Samples(list(prompts), answers.texts, answers.ids, answers.has_eos)


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Samples, temperature: float = 1.0
) -> torch.Tensor:
    """Total log-probability of each sampled answer under `model` (for KL between two policies)."""
    from .ppo.core import logprobs_from_logits

    model.eval()
    device = next(model.parameters()).device
    totals = []
    for prompt, answer in zip(samples.prompts, samples.answer_ids, strict=True):
        prompt_ids = encode_prompts(tokenizer, [prompt])["input_ids"][0].tolist()
        ids = torch.tensor([prompt_ids + answer], device=device)
        logits = model(ids).logits[:, len(prompt_ids) - 1 : -1]
        totals.append(logprobs_from_logits(logits, ids[:, len(prompt_ids) :], temperature).sum())
    return torch.stack(totals).cpu()


def win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    """Fraction of prompts where `a` beats `b` (ties count half)."""
    return statistics.fmean(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b, strict=True))


def compare_policies(
    policies: dict[str, PreTrainedModel],
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reward: tuple[PreTrainedModel, PreTrainedTokenizerBase, dict] | None,
    prompts: Sequence,
    *,
    baseline: str = "sft",
    task: Task | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per policy, on the same held-out prompts: RM score, gold score, win rates vs `baseline` (by the RM and
    by the gold judge), KL to `reference` (mean over answers of log p - log p_ref), answer length, eos rate."""
    from .reward.model import normalize
    from .reward.model import score as rm_score

    samples = {
        name: sample(m, tokenizer, prompts, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        for name, m in policies.items()
    }
    ref_lp = {name: answer_logprobs(reference, tokenizer, s, temperature) for name, s in samples.items()}
    results: dict[str, dict[str, float]] = {}
    rm, gold = {}, {}
    for name, s in samples.items():
        row: dict[str, float] = {
            "kl": (answer_logprobs(policies[name], tokenizer, s, temperature) - ref_lp[name]).mean().item(),
            "length": statistics.fmean(len(a) for a in s.answer_ids),
            "eos_rate": statistics.fmean(s.has_eos),
        }
        if reward is not None:
            model, rm_tok, stats = reward
            raw = rm_score(model, rm_tok, s.prompts, s.texts)
            rm[name] = [normalize(r, stats) for r in raw]
            row["rm_score"] = statistics.fmean(rm[name])
        if task is not None:
            gold[name] = [task.score(p, a) for p, a in zip(s.prompts, s.texts, strict=True)]
            row["gold_score"] = statistics.fmean(gold[name])
            row["gold_exact"] = statistics.fmean(g == 1.0 for g in gold[name])
        results[name] = row
    for name, row in results.items():
        if rm:
            row["win_rate_rm"] = win_rate(rm[name], rm[baseline])
        if gold:
            row["win_rate_gold"] = win_rate(gold[name], gold[baseline])
    return results
