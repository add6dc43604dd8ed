"""Sampling answers from a chat model: used for evaluation, for collecting answers to rank, and by PPO."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

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


def sampling_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int | None = None,
    cache_implementation: str | None = None,
) -> GenerationConfig:
    """The one `GenerationConfig` every stage samples with: temperature and top_p as given, top_k off, nothing else.

    Everything not named here is neutral once `generate_ids` has set the model's own defaults aside (see there);
    PPO's log-probs (`ppo.core.logprobs_from_logits`) model exactly this distribution with top_p = 1, top_k = 0.
    """
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens or None,
        do_sample=do_sample,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        cache_implementation=cache_implementation,
        **sampling,
    )


# generation_config.json fields that say nothing about the sampling distribution.
_NOT_SAMPLING = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "max_length",
    "max_new_tokens",
    "use_cache",
    "cache_implementation",
    "cache_config",
    "transformers_version",
    "_from_model_config",
    "output_attentions",  # what generate returns, not what it samples
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
}
# (id of a model's own config, fields set aside) -> that config, while it lives: warn once per model, and an id
# reused by a later config (after this one was freed) is not mistaken for it.
_warned: weakref.WeakValueDictionary[tuple, GenerationConfig] = weakref.WeakValueDictionary()


def _innermost(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model under a PEFT wrapper (PEFT's `generate` reads the generation config from it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def own_sampling_defaults(model: PreTrainedModel, config: GenerationConfig) -> Iterator[None]:
    """Inside, the model's own `generation_config.json` defaults are set aside (only its token ids are kept).

    transformers fills every field a passed `GenerationConfig` leaves unset from the model's defaults, so an
    instruct model's `repetition_penalty`, `no_repeat_ngram_size`, `min_p`, `bad_words_ids`, ... would change the
    distribution answers are drawn from behind PPO's back. The overridden fields are named in a warning, once.
    """
    inner = _innermost(model)
    shipped = inner.generation_config
    ours = config.to_dict()
    overridden = {
        k: v
        for k, v in shipped.to_diff_dict().items()
        if k not in _NOT_SAMPLING and v is not None and ours.get(k) != v
    }
    key = (id(shipped), tuple(sorted(overridden)))
    if overridden and _warned.get(key) is not shipped:
        _warned[key] = shipped
        logger.warning(
            "Sampling ignores the model's own generation_config defaults %s: answers are drawn with "
            "temperature=%s, top_p=%s, top_k=%s and no other logits processing.",
            overridden,
            config.temperature,
            config.top_p,
            config.top_k,
        )
    tokens = {k: getattr(shipped, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    inner.generation_config = GenerationConfig(**tokens)
    try:
        yield
    finally:
        inner.generation_config = shipped


@torch.no_grad()
def generate_ids(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    **kwargs: Any,
) -> Any:
    """`model.generate` with `config` and nothing else (the one sampler: evaluation, ranking data, chat, PPO).

    `kwargs` go to `generate` as they are (a streamer, `output_scores`, ...).
    """
    with own_sampling_defaults(model, config):
        return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **kwargs
        )


def decode_answers(
    tokenizer: PreTrainedTokenizerBase, answer_ids: torch.Tensor
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Answer texts (special tokens and everything after the first eos removed, stripped), lengths and has_eos.

    These texts are what ranking data, evaluation and the reward model read: PPO scores the same text.
    """
    lengths, has_eos = answer_lengths(answer_ids, tokenizer.eos_token_id)
    texts = [
        tokenizer.decode(ids[:n], skip_special_tokens=True).strip()
        for ids, n in zip(answer_ids.tolist(), lengths.tolist(), strict=True)
    ]
    return texts, lengths, has_eos


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
    config = sampling_config(
        tokenizer, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p
    )
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress):
        batch = encode_prompts(tokenizer, prompts[start : start + batch_size]).to(device)
        out = generate_ids(model, batch["input_ids"], batch["attention_mask"], config)
        answer_ids = out[:, batch["input_ids"].shape[1] :]
        texts, lengths, has_eos = decode_answers(tokenizer, answer_ids)
        answers.texts += texts
        answers.ids += [row[:n] for row, n in zip(answer_ids.tolist(), lengths.tolist(), strict=True)]
        answers.has_eos += has_eos.tolist()
    model.train(was_training)
    return answers


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], **kwargs
) -> list[str]:
    """Answers (decoded, special tokens and everything after eos removed) for chat `prompts`; `kwargs` as
    `generate_answers`."""
    return generate_answers(model, tokenizer, prompts, **kwargs).texts
