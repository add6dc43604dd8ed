"""Evaluating policies honestly: every model at greedy (how it is served) and at the training temperature.

A judge is passed explicitly (a `Judge` callable, e.g. a task's `score`); with none, nothing "gold" is computed
and only what needs no judge is reported (RM score, KL to the reference, length, eos rate, win rate by the RM).
Win rates are per prompt against the baseline policy at the same decoding, ties counted half. Baselines on the
same reward model (best-of-n sampled from SFT, picked by the RM) are rows of the same table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .generation import Prompt, encode_prompts, generate, generate_answers
from .tasks.base import Judge, Task

# Held-out evaluation prompts: a seed no training split uses.
GOLD_EVAL_SEED = 12345
GREEDY = "greedy"
SAMPLED = "sampled"
# The columns of an evaluation row, in table order; one name per metric everywhere (report, demo, JSON).
METRICS = ("gold_score", "exact", "win_rate_gold", "rm_score", "win_rate_rm", "kl", "length", "eos_rate")


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


# ------------------------------------------------------------------------------------------ answers
@dataclass
class Samples:
    """Answers, kept as token ids so log-probs are taken on exactly the generated tokens."""

    prompts: list
    texts: list[str]
    answer_ids: list[list[int]]  # up to and including the first eos
    has_eos: list[bool]

    def select(self, indices: Sequence[int]) -> Samples:
        return Samples(
            [self.prompts[i] for i in indices],
            [self.texts[i] for i in indices],
            [self.answer_ids[i] for i in indices],
            [self.has_eos[i] for i in indices],
        )


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    batch_size: int = 128,
) -> Samples:
    """Answers as PPO samples them (temperature, top_k=0, top_p=1), seeded; `temperature=0` is greedy."""
    torch.manual_seed(seed)
    answers = generate_answers(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        batch_size=batch_size,
    )
    model.eval()
    return Samples(list(prompts), answers.texts, answers.ids, answers.has_eos)


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, samples: Samples, temperature: float = 1.0
) -> torch.Tensor:
    """Total log-probability of each answer under `model` at `temperature` (for KL between two policies)."""
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


def kl_to_reference(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: Samples,
    temperature: float,
) -> float:
    """KL(policy || reference) per answer, estimated on answers sampled from the policy at `temperature`
    (mean of log p - log p_ref, the k1 estimator PPO's penalty uses). One number per model: greedy answers are
    not samples, so no KL is computed on them."""
    diff = answer_logprobs(model, tokenizer, samples, temperature) - answer_logprobs(
        reference, tokenizer, samples, temperature
    )
    return diff.mean().item()


# ------------------------------------------------------------------------------------------ scoring
RewardModel = tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]


def rm_scores(reward: RewardModel, prompts: Sequence[Prompt], answers: Sequence[str]) -> list[float]:
    """Normalised reward-model scores (the scale PPO optimises)."""
    from .reward.model import normalize, score

    model, tokenizer, stats = reward
    return [normalize(r, stats) for r in score(model, tokenizer, prompts, answers)]


@dataclass
class Scored:
    """One model's answers at one decoding, scored per prompt (None where no RM / no judge was given)."""

    samples: Samples
    rm: list[float] | None = None
    gold: list[float] | None = None


def score_samples(samples: Samples, reward: RewardModel | None, judge: Judge | None) -> Scored:
    return Scored(
        samples,
        rm=rm_scores(reward, samples.prompts, samples.texts) if reward is not None else None,
        gold=[judge(p, a) for p, a in zip(samples.prompts, samples.texts, strict=True)] if judge else None,
    )


def win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    """Fraction of prompts where `a` beats `b`, ties counted half."""
    return statistics.fmean(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b, strict=True))


def summarize(scored: Scored, baseline: Scored) -> dict[str, float]:
    """One evaluation row (without `kl`, which is per model): only the metrics the given RM / judge allow."""
    s = scored.samples
    row: dict[str, float] = {}
    if scored.gold is not None:
        row["gold_score"] = statistics.fmean(scored.gold)
        row["exact"] = statistics.fmean(g == 1.0 for g in scored.gold)
        row["win_rate_gold"] = win_rate(scored.gold, baseline.gold)
    if scored.rm is not None:
        row["rm_score"] = statistics.fmean(scored.rm)
        row["win_rate_rm"] = win_rate(scored.rm, baseline.rm)
    row["length"] = statistics.fmean(len(a) for a in s.answer_ids)
    row["eos_rate"] = statistics.fmean(s.has_eos)
    return row


def by_category(
    scored: Scored, baseline: Scored, category: Callable[[Prompt], str]
) -> dict[str, dict[str, float]]:
    """`summarize` per prompt category (`task.category`), with the number of prompts `n`."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(scored.samples.prompts):
        groups.setdefault(category(prompt), []).append(i)

    def part(x: Scored, idx: list[int]) -> Scored:
        pick = lambda v: None if v is None else [v[i] for i in idx]  # noqa: E731
        return Scored(x.samples.select(idx), pick(x.rm), pick(x.gold))

    return {
        name: {"n": len(idx), **summarize(part(scored, idx), part(baseline, idx))}
        for name, idx in sorted(groups.items())
    }


# ------------------------------------------------------------------------------------------ best-of-n
def pick_best(scores: Sequence[Sequence[float]]) -> list[int]:
    """Per prompt, the index of the highest-scoring of its candidates (the first on ties)."""
    return [max(range(len(row)), key=row.__getitem__) for row in scores]


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1) / n (Stiennon et al. 2020; an upper bound when answers tie)."""
    return math.log(n) - (n - 1) / n


def best_of_n(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    n: int,
    reward: RewardModel,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
) -> tuple[Samples, list[float]]:
    """n answers per prompt sampled from `model`, the RM's favourite kept: the picks and their RM scores."""
    repeated = [p for p in prompts for _ in range(n)]
    pool = sample(
        model, tokenizer, repeated, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )
    scores = rm_scores(reward, pool.prompts, pool.texts)
    grouped = [scores[i * n : (i + 1) * n] for i in range(len(prompts))]
    picks = [i * n + j for i, j in enumerate(pick_best(grouped))]
    return pool.select(picks), [scores[i] for i in picks]


# ------------------------------------------------------------------------------------------ the table
def evaluate_policies(
    policies: dict[str, PreTrainedModel],
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    reward: RewardModel | None = None,
    judge: Judge | None = None,
    category: Callable[[Prompt], str] | None = None,
    baseline: str = "sft",
    temperature: float = 1.0,
    best_of: Sequence[int] = (),
    max_new_tokens: int = 16,
    seed: int = 0,
) -> dict[str, dict]:
    """Every policy at greedy and at `temperature`, plus best-of-n baselines, on the same held-out prompts.

    Returns `{row name: row}`; a row holds `model`, `decoding` and the `METRICS` its inputs allow, plus
    `by_category` when `category` is given. Row names: `"<policy> greedy"`, `"<policy> sampled"`,
    `"best-of-<n>"`. Win rates compare with `baseline` at the same decoding; best-of-n (sampled from
    `baseline` at `temperature`, picked by the RM) compares with `baseline`'s greedy answer, the one it would
    replace. `kl` is per model, estimated on its sampled answers; best-of-n's is the analytic value.
    """
    if baseline not in policies:
        raise ValueError(f"baseline {baseline!r} is not one of the policies {sorted(policies)}")
    if best_of and reward is None:
        raise ValueError("best-of-n needs a reward model to pick with")
    common = {"max_new_tokens": max_new_tokens, "seed": seed}
    decodings = {GREEDY: 0.0, SAMPLED: temperature}
    scored = {
        (name, decoding): score_samples(
            sample(model, tokenizer, prompts, temperature=t, **common), reward, judge
        )
        for name, model in policies.items()
        for decoding, t in decodings.items()
    }
    kls = {
        name: kl_to_reference(model, reference, tokenizer, scored[(name, SAMPLED)].samples, temperature)
        for name, model in policies.items()
    }
    rows: dict[str, dict] = {}

    def add(row_name: str, model: str, decoding: str, this: Scored, base: Scored, kl: float) -> None:
        row = {"model": model, "decoding": decoding, **summarize(this, base), "kl": kl}
        if category is not None:
            row["by_category"] = by_category(this, base, category)
        rows[row_name] = row

    for (name, decoding), this in scored.items():
        add(f"{name} {decoding}", name, decoding, this, scored[(baseline, decoding)], kls[name])
    for n in best_of:
        picks, picked_rm = best_of_n(
            policies[baseline], tokenizer, prompts, n, reward, temperature=temperature, **common
        )
        this = Scored(picks, rm=picked_rm, gold=score_samples(picks, None, judge).gold)
        add(f"best-of-{n}", baseline, f"best-of-{n}", this, scored[(baseline, GREEDY)], best_of_n_kl(n))
    return rows


def checkpoint_curve(
    checkpoints: Iterable[tuple[int, Callable[[], PreTrainedModel]]],
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    reward: RewardModel | None = None,
    judge: Judge | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
) -> list[dict]:
    """The over-optimisation curve: per checkpoint (update number, loader), its KL to `reference` and its
    greedy and sampled rows (`summarize`, win rates vs `reference` at the same decoding). Gold may fall while
    the RM score still rises (Goodhart); plotted against KL it shows how far the policy could safely move."""
    common = {"max_new_tokens": max_new_tokens, "seed": seed}
    decodings = {GREEDY: 0.0, SAMPLED: temperature}
    base = {
        d: score_samples(sample(reference, tokenizer, prompts, temperature=t, **common), reward, judge)
        for d, t in decodings.items()
    }
    curve = []
    for update, load in checkpoints:  # a loader returning `reference` itself costs nothing more
        model = load()
        point: dict = {"update": update}
        scored = {
            d: base[d]
            if model is reference
            else score_samples(sample(model, tokenizer, prompts, temperature=t, **common), reward, judge)
            for d, t in decodings.items()
        }
        point |= {d: summarize(scored[d], base[d]) for d in decodings}
        point["kl"] = kl_to_reference(model, reference, tokenizer, scored[SAMPLED].samples, temperature)
        curve.append(point)
    return curve


def print_table(rows: dict[str, dict]) -> None:
    """The evaluation rows as a fixed-width table (columns a row lacks, e.g. gold without a judge, are left out)."""
    cols = [c for c in METRICS if any(c in row for row in rows.values())]
    print(f"\n{'model':<24}" + "".join(f"{c:>14}" for c in cols))
    for name, row in rows.items():
        cells = "".join(f"{row[c]:>14.3f}" if c in row else f"{'-':>14}" for c in cols)
        print(f"{name:<24}" + cells)
