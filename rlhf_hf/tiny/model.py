"""The embedded default models: a tiny Llama, a word-level tokenizer built in code from a task's vocabulary, and a
cached pretraining run on the task's corpus.

Everything here is deterministic and offline, so tests, the demo and notebooks need no Hub access. The model ids
in `TINY_BASES` (`rlhf-hf/tiny` for the sorting task, `rlhf-hf/tiny-chat` for the chat task) resolve to the
pretrained base in a local cache directory, built on first use (~30 s / ~? s on CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .task import CORPUS_WORDS, DEFAULT_TASK, DIGITS, INSTRUCTIONS

if TYPE_CHECKING:
    from ..tasks.base import Task

logger = logging.getLogger(__name__)

TINY_MODEL_ID = "rlhf-hf/tiny"
TINY_CHAT_MODEL_ID = "rlhf-hf/tiny-chat"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Extra plain words so the tokenizer can encode short free text (system prompts, notebooks) without <unk> spam.
EXTRA_WORDS = [
    "please",
    "the",
    "these",
    "a",
    "you",
    "are",
    "helpful",
    "assistant",
    "answer",
    "with",
    "only",
    ",",
]

# Chat template with `{% generation %}` markers so TRL can compute an assistant-only loss mask. Every turn ends
# with <|end|>, which is also the eos token: generation stops at the end of the assistant's turn.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|assistant|> ' }}{%- generation %}{{- message['content'] + ' <|end|>' }}{%- endgeneration %}{{- ' ' }}"
    "{%- else %}"
    "{{- '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)

# ~1.9 M parameters: big enough to learn the task on CPU in seconds, small enough to train in tests.
TINY_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=128,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
PRETRAIN_SETTINGS = dict(n_lines=20000, steps=400, batch_size=64, lr=3e-3, seed=0)
# The chat task: longer, multi-turn sequences and more to learn; sized so pretraining stays ~1 min on 2 cores.
CHAT_CONFIG = {**TINY_CONFIG, "max_position_embeddings": 256}
CHAT_PRETRAIN_SETTINGS = dict(n_lines=20000, steps=400, batch_size=64, lr=3e-3, seed=0)


@dataclass(frozen=True)
class TinyBase:
    """What determines an embedded base: the task whose vocabulary and corpus it is built on, its size, and how
    long it is pretrained."""

    task_name: str | None  # None: the digit-sorting default (rlhf_hf.tiny.task)
    config: dict
    pretrain: dict

    def task(self) -> Task | None:
        from ..tasks import get_task

        return get_task(self.task_name)


TINY_BASES = {
    TINY_MODEL_ID: TinyBase(None, TINY_CONFIG, PRETRAIN_SETTINGS),
    TINY_CHAT_MODEL_ID: TinyBase("tiny-chat", CHAT_CONFIG, CHAT_PRETRAIN_SETTINGS),
}


def task_words(task: Task | None = None) -> list[str]:
    return list(task.vocabulary()) if task is not None else DIGITS + INSTRUCTIONS + CORPUS_WORDS


def build_tokenizer(task: Task | None = None, max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a task's closed vocabulary (default: the sorting task's), with a chat
    template; rebuilt identically."""
    vocab_list = SPECIAL_TOKENS + task_words(task) + EXTRA_WORDS
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        padding_side="left",
        model_max_length=max_length or TINY_CONFIG["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0, config: dict | None = None
) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama matching `tokenizer` (default `build_tokenizer()`), of size `config`
    (default `TINY_CONFIG`)."""
    tokenizer = tokenizer or build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(config or TINY_CONFIG),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def cache_dir() -> Path:
    """Where the pretrained tiny base lives: $RLHF_HF_CACHE, else ~/.cache/rlhf_hf."""
    return Path(os.environ.get("RLHF_HF_CACHE", Path.home() / ".cache" / "rlhf_hf"))


def base_tokenizer(base: TinyBase) -> PreTrainedTokenizerFast:
    return build_tokenizer(base.task(), max_length=base.config["max_position_embeddings"])


def _fingerprint(model_id: str = TINY_MODEL_ID) -> str:
    """Changes whenever anything that determines the pretrained weights changes, so stale caches are rebuilt."""
    base = TINY_BASES[model_id]
    spec = {
        "config": base.config,
        "pretrain": base.pretrain,
        "vocab": base_tokenizer(base).get_vocab(),
        "task": repr(base.task() or DEFAULT_TASK),
        "template": CHAT_TEMPLATE,
    }
    if base.task_name is not None:  # the sorting base keeps the fingerprint (and cache) it always had
        spec["model_max_length"] = base.config["max_position_embeddings"]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def pretrain_tiny_base(output_dir: str | Path, model_id: str = TINY_MODEL_ID) -> Path:
    """Plain next-token training of the tiny Llama on its task's corpus; saves model + tokenizer to `output_dir`.

    Uses `transformers.Trainer` so the run looks like any other HF pretraining job.
    """
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    base = TINY_BASES[model_id]
    settings = base.pretrain  # part of the cache fingerprint: change them there, not per call
    tokenizer = base_tokenizer(base)
    model = build_tiny_model(tokenizer, seed=settings["seed"], config=base.config)
    lines = (base.task() or DEFAULT_TASK).corpus(settings["n_lines"], seed=settings["seed"])
    data = Dataset.from_dict({"text": lines}).map(
        lambda b: tokenizer([tokenizer.bos_token + " " + t + " " + tokenizer.eos_token for t in b["text"]]),
        batched=True,
        remove_columns=["text"],
    )
    tokenizer.padding_side = "right"  # collator pads; labels mask the padding
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=settings["steps"],
            per_device_train_batch_size=settings["batch_size"],
            learning_rate=settings["lr"],
            lr_scheduler_type="cosine",
            warmup_steps=30,
            weight_decay=0.0,
            logging_steps=100,
            save_strategy="no",
            report_to=[],
            seed=settings["seed"],
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        )
        trainer.train()
    tokenizer.padding_side = "left"
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def tiny_base_dir(model_id: str = TINY_MODEL_ID) -> Path:
    """Where the tiny base `model_id` with today's settings is (or will be) cached."""
    prefix = "tiny-base" if model_id == TINY_MODEL_ID else model_id.split("/")[-1] + "-base"
    return cache_dir() / f"{prefix}-{_fingerprint(model_id)}"


def get_tiny_base(model_id: str = TINY_MODEL_ID, *, rebuild: bool = False) -> Path:
    """Path of the pretrained tiny base `model_id` (a key of `TINY_BASES`), trained once and cached (atomically:
    a crash leaves no half-written dir)."""
    if model_id not in TINY_BASES:
        raise ValueError(f"unknown embedded base {model_id!r}; known: {', '.join(TINY_BASES)}")
    target = tiny_base_dir(model_id)
    if (target / "config.json").exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Pretraining the tiny base model into %s (once; cached afterwards)", target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-base-", dir=target.parent))
    try:
        pretrain_tiny_base(staging, model_id)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
