"""How a reward model reads text, and how later stages load and query a trained one.

One (prompt, response) is the chat-templated conversation prompt + assistant response; the reward is the
scalar head's output at the last non-pad token. Sequences are right-padded so that position ids (and hence
rewards) do not depend on how much padding a batch needs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.utils import pad

from ..generation import as_messages
from ..modeling import (
    adapter_base,
    is_adapter_dir,
    load_classifier,
    load_tokenizer,
    merge_adapter_into,
    resolve_dtype,
)
from .data import Text

logger = logging.getLogger(__name__)

STATS_FILE = "reward_stats.json"
# Reward normalisation when a model ships no statistics: the identity (PPO subtracts 0, divides by 1).
IDENTITY_STATS = {"mean": 0.0, "std": 1.0, "n": 0, "reference": f"none: no {STATS_FILE} found"}


def conversation(prompt: Text, response: Text) -> list[dict]:
    """Prompt messages (a string is one user turn) followed by the answer (a string is one assistant turn)."""
    answer = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    return as_messages(prompt) + answer


def encode(tokenizer: PreTrainedTokenizerBase, prompt: Text, response: Text) -> list[int]:
    """Token ids of one (prompt, response), exactly as the reward model sees it in training and scoring."""
    return list(
        tokenizer.apply_chat_template(conversation(prompt, response), tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def pad_right(
    sequences: Sequence[Sequence[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """`input_ids` / `attention_mask`, right-padded: the classifier pools the last non-pad token."""
    ids = [torch.tensor(s, dtype=torch.long) for s in sequences]
    masks = [torch.ones_like(t) for t in ids]
    return {
        "input_ids": pad(
            ids, padding_value=pad_token_id, padding_side="right", pad_to_multiple_of=pad_to_multiple_of
        ),
        "attention_mask": pad(
            masks, padding_value=0, padding_side="right", pad_to_multiple_of=pad_to_multiple_of
        ),
    }


def pooled_index(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Per row, the position a reward is read at: the rightmost token that is not pad.

    This is the rule of transformers' sequence classifiers (`GenericForSequenceClassification`), which the RM
    stage trains and scores with; PPO reads its reward head at the same position of the same tokens. With
    pad == eos a final eos counts as padding, so the reward sits on the token before it.
    """
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


def conversation_batch(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Text], responses: Sequence[Text]
) -> dict[str, torch.Tensor]:
    """Right-padded reward-model input for (prompt, response) pairs: the tokens the RM stage trains and scores."""
    return pad_right(
        [encode(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)], tokenizer.pad_token_id
    )


@torch.no_grad()
def score_ids(
    model: PreTrainedModel, sequences: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 64
) -> list[float]:
    """Rewards of already-tokenised sequences, batched by length (less padding) and returned in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    rewards = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_right([sequences[i] for i in chunk], pad_token_id)
        logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits
        for i, value in zip(chunk, logits[:, 0].float().tolist(), strict=True):
            rewards[i] = value
    model.train(was_training)
    return rewards


def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Text],
    responses: Sequence[Text],
    batch_size: int = 64,
) -> list[float]:
    """Raw (unnormalised) reward of each `responses[i]` to `prompts[i]`."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    sequences = [encode(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    return score_ids(model, sequences, _pad_id(model, tokenizer), batch_size)


def reward_stats(rewards: Sequence[float], reference: str) -> dict[str, Any]:
    """Mean and (population) std of rewards on a reference set; PPO normalises with `(r - mean) / std`."""
    n = len(rewards)
    if n == 0:
        raise ValueError("reward statistics need at least one reward")
    mean = math.fsum(rewards) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / n)
    return {"mean": mean, "std": std, "n": n, "reference": reference}


def write_stats(directory: str | Path, stats: dict[str, Any]) -> Path:
    path = Path(directory) / STATS_FILE
    path.write_text(json.dumps(stats, indent=2))
    return path


def read_stats(directory: str | Path, missing: dict | None = IDENTITY_STATS) -> dict[str, Any] | None:
    """The RM's stored reward mean/std; `missing` (identity stats by default, with a warning) without them."""
    path = Path(directory) / STATS_FILE
    if not path.exists():
        if missing is not None:
            logger.warning("%s has no %s: rewards will not be normalised", directory, STATS_FILE)
        return dict(missing) if missing is not None else None
    return json.loads(path.read_text())


def normalize(raw, stats: dict[str, float]):
    """Raw reward(s) (float or tensor) on the scale where the RM's reference answers have mean 0 and std 1."""
    return (raw - stats["mean"]) / max(stats["std"], 1e-8)


def load_reward_model(
    path: str | Path, *, dtype: str | torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """A reward model (eval mode), its tokenizer and its `reward_stats.json`, from an adapter or a full dir.

    An adapter dir (`adapter_config.json`) is loaded onto its recorded base (the SFT model) and merged, so the
    caller always gets a plain `AutoModelForSequenceClassification`.
    """
    path = Path(path)
    dtype = resolve_dtype(dtype or "float32")
    if is_adapter_dir(path):
        model = merge_adapter_into(load_classifier(adapter_base(path), dtype=dtype), path)
    else:
        model = load_classifier(str(path), dtype=dtype)
    tokenizer = load_tokenizer(str(path))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer, read_stats(path)


def _pad_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
    if pad_id is None:
        raise ValueError("reward scoring needs a pad token: set tokenizer.pad_token")
    model.config.pad_token_id = pad_id
    return pad_id
