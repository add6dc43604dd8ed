"""Sampling answers from a chat model: used for evaluation, for collecting answers to rank, and by PPO."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Prompt = str | list[dict]


def as_messages(prompt: Prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Chat-templated, left-padded prompt batch (left padding keeps every answer starting at the same column).

    `pad_to`: a fixed width (prompts must fit), so that every batch has the same shape: a compiled decoding step
    (static KV cache) is then compiled once instead of once per prompt width.
    """
    texts = [
        tokenizer.apply_chat_template(as_messages(p), tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    padding = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": True}
    return tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding_side="left", **padding)


def answer_lengths(
    answer_ids: torch.Tensor, eos_token_id: int | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: number of real answer tokens (up to and including the first eos) and whether an eos was produced.

    Everything after the first eos is padding/garbage, whatever its id (pad may equal eos).
    """
    eos_ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    is_eos = torch.isin(answer_ids, eos_ids.to(answer_ids.device))
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), answer_ids.shape[1] - 1)
    return first_eos + 1, has_eos


@dataclass
class Answers:
    """Generated answers, also as token ids (up to and including the first eos) so log-probs can be taken on
    exactly the generated tokens."""

    texts: list[str]
    ids: list[list[int]]
    has_eos: list[bool]


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    progress: bool = False,
) -> Answers:
    """Answers for chat `prompts`: greedy, or sampled with `temperature` / `top_p` and no top-k (as PPO samples)."""
    was_training = model.training
    model.eval()
    answers = Answers([], [], [])
    device = next(model.parameters()).device
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress):
        batch = encode_prompts(tokenizer, prompts[start : start + batch_size]).to(device)
        sample_kwargs = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sample_kwargs,
        )
        answer_ids = out[:, batch["input_ids"].shape[1] :]
        lengths, has_eos = answer_lengths(answer_ids, tokenizer.eos_token_id)
        for ids, n, eos in zip(answer_ids.tolist(), lengths.tolist(), has_eos.tolist(), strict=True):
            answers.texts.append(tokenizer.decode(ids[:n], skip_special_tokens=True).strip())
            answers.ids.append(ids[:n])
            answers.has_eos.append(eos)
    model.train(was_training)
    return answers


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], **kwargs
) -> list[str]:
    """Answers (decoded, special tokens and everything after eos removed) for chat `prompts`; `kwargs` as
    `generate_answers`."""
    return generate_answers(model, tokenizer, prompts, **kwargs).texts
