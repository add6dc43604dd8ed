"""Collecting comparisons: sample K answers per prompt from a policy, then have them ranked.

`sample_answers` -> `rank_with(labeller, rows)` gives training rows directly (simulated labeller), or
`sample_answers` -> `collect.export_for_ranking` -> humans -> `collect.import_ranked` gives them from people.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..generation import Prompt, generate

# A labeller maps (prompt, K responses) to K ranks (1 = best, ties share a rank), like `SimulatedLabeller`.
Labeller = Callable[[Prompt, Sequence[str]], list[int]]


def samples_per_prompt(k: int, include_greedy: bool = False, draws: int | None = None) -> int:
    """How many answers `sample_answers` samples per prompt; raises for a K or `draws` it cannot serve (configs call
    it too, so a bad value fails before any model loads)."""
    if k < 2:
        raise ValueError(f"sample_k must be >= 2 to have something to compare, got {k}")
    needed = k - 1 if include_greedy else k
    if draws is not None and draws < needed:
        raise ValueError(f"sample_draws ({draws}) must be at least the {needed} sampled answers of the K")
    return needed if draws is None else draws


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    k: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    include_greedy: bool = False,
    draws: int | None = None,
) -> list[dict]:
    """`[{"prompt", "responses": [K answers]}]`, one row per prompt, in prompt order.

    Each prompt is repeated in the generation batch so its sampled answers are independent samples.
    `include_greedy`: the first of the K is the policy's greedy answer, the answer it is served with, so the
    labeller ranks it against alternatives and the reward model learns where that answer is wrong (sampled
    answers alone rarely contain it against a better one where it matters; benchmarks/DIAGNOSIS.md).
    `draws`: sample this many answers per prompt and keep the first K *different* ones (the greedy answer first),
    so labellers rank K answers that differ where the policy has them: a confident policy's K samples are often
    one answer repeated, which gives no comparison (on the demo's SFT model 39 % of prompts). A prompt with a
    single distinct answer keeps K copies of it (all tied: the reward stage drops and counts it).
    """
    n_sampled = samples_per_prompt(k, include_greedy, draws)
    repeated = [p for p in prompts for _ in range(n_sampled)]
    torch.manual_seed(seed)
    common = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    answers = generate(
        model, tokenizer, repeated, do_sample=True, temperature=temperature, top_p=top_p, **common
    )
    greedy = generate(model, tokenizer, list(prompts), **common) if include_greedy else []
    rows = []
    for i, prompt in enumerate(prompts):
        sampled = answers[i * n_sampled : (i + 1) * n_sampled]
        responses = [greedy[i], *sampled] if include_greedy else sampled
        if draws is not None:
            distinct = list(dict.fromkeys(responses))
            responses = distinct[:k] if len(distinct) >= 2 else responses[:k]
        rows.append({"prompt": prompt, "responses": responses})
    return rows


def conversation_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    scripts: Sequence[Sequence[str]],
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
    seed: int = 0,
    batch_size: int = 256,
) -> list[list[dict]]:
    """Prompts for comparisons as ChatGPT collected them: per script (the user turns of a conversation) pick an
    assistant turn at random, let the policy write every assistant turn before it (sampled), and return the
    conversation up to the user turn that the picked assistant turn answers.

    The policy's own earlier answers are part of the prompt, so the reward model learns to judge a turn in the
    conversations the policy actually has. Sample K alternatives for each with `sample_answers`.
    """
    rng = random.Random(seed)
    picked = [rng.randrange(len(turns)) for turns in scripts]
    conversations: list[list[dict]] = [[] for _ in scripts]
    torch.manual_seed(seed)
    for turn in range(max(picked, default=0)):
        needed = [i for i, pick in enumerate(picked) if turn < pick]  # one batch per turn across scripts
        for i in needed:
            conversations[i].append({"role": "user", "content": scripts[i][turn]})
        answers = generate(
            model,
            tokenizer,
            [conversations[i] for i in needed],
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
        )
        for i, answer in zip(needed, answers, strict=True):
            conversations[i].append({"role": "assistant", "content": answer})
    return [
        [*conversation, {"role": "user", "content": scripts[i][picked[i]]}]
        for i, conversation in enumerate(conversations)
    ]


def drop_empty_answers(rows: Sequence[dict]) -> tuple[list[dict], int]:
    """Remove blank answers (the policy stopped at once), which no labeller can rank; rows left with < 2 go.

    Returns the kept rows and the number of answers removed (the recipe reports it).
    """
    kept, removed = [], 0
    for row in rows:
        responses = [r for r in row["responses"] if r.strip()]
        removed += len(row["responses"]) - len(responses)
        if len(responses) >= 2:
            kept.append({**row, "responses": responses})
        else:
            removed += len(responses)
    return kept, removed


def rank_with(labeller: Labeller, rows: Sequence[dict]) -> list[dict]:
    """Rows with the labeller's `ranks` added (1 = best); prompts and responses unchanged."""
    return [{**row, "ranks": labeller(row["prompt"], row["responses"])} for row in rows]
