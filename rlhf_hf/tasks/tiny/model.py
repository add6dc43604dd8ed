"""The embedded default model: a tiny Llama, a word-level tokenizer built in code, and a cached pretraining run.

Everything here is deterministic and offline, so tests, the demo and notebooks need no Hub access. The model id
`rlhf-hf/tiny` resolves to the pretrained base in a local cache directory, built on first use (~30 s on CPU).
Every builder takes the `Task` whose vocabulary the tokenizer covers and whose corpus the base is pretrained on
(default: the sort task), so another task gets its own tiny base with no change here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..base import Task
from ..tiny_sort import DEFAULT_TASK

logger = logging.getLogger(__name__)

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
# `pack_length: N` (off unless set) packs corpus lines into rows of N tokens, each line attending to itself only:
# ~1.9x the lines a second on CPU; `batch_size` then counts rows (~7 chat-corpus lines each at N = 128).
PRETRAIN_SETTINGS = dict(n_lines=20000, steps=400, batch_size=64, lr=3e-3, seed=0)
# Per task (by name): the base's size and pretraining, where they differ from the sorting base's. The chat task's
# conversations are longer (up to ~60 tokens with three turns): a longer context; its operations copy lists in
# order (reverse, remove repeats), which the sorting base's 4 heads and 400 steps do not learn (greedy on corpus
# lines: reverse 0.03, dedup 0.03); 8 heads and 700 steps do (0.52, 0.71; sort 0.54 -> 0.86), measured.
BASE_SETTINGS: dict[str, tuple[dict, dict]] = {
    "tiny-chat": (
        {**TINY_CONFIG, "max_position_embeddings": 256, "num_attention_heads": 8, "num_key_value_heads": 8},
        {**PRETRAIN_SETTINGS, "steps": 700},
    ),
}


def base_settings(task: Task) -> tuple[dict, dict]:
    """(model config, pretraining settings) of `task`'s tiny base."""
    return BASE_SETTINGS.get(task.name, (TINY_CONFIG, PRETRAIN_SETTINGS))


def build_tokenizer(task: Task = DEFAULT_TASK) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task's closed vocabulary, with a chat template; rebuilt identically."""
    vocab_list = SPECIAL_TOKENS + task.vocabulary() + EXTRA_WORDS
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
        model_max_length=base_settings(task)[0]["max_position_embeddings"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0, config: dict | None = None
) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama matching `tokenizer` (default `build_tokenizer()`), of size `config`
    (default `TINY_CONFIG`; a task's is `base_settings(task)[0]`)."""
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


def _fingerprint(task: Task) -> str:
    """Changes whenever anything that determines the pretrained weights changes, so stale caches are rebuilt."""
    config, pretrain = base_settings(task)
    spec = json.dumps(
        {
            "config": config,
            "pretrain": pretrain,
            "vocab": build_tokenizer(task).get_vocab(),
            "task": repr(task),
            "corpus": task.corpus(64, seed=pretrain["seed"]),  # the corpus generator's code, in effect
            "template": CHAT_TEMPLATE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def pretrain_tiny_base(output_dir: str | Path, task: Task = DEFAULT_TASK) -> Path:
    """Plain next-token training of the tiny Llama on the task corpus; saves model + tokenizer to `output_dir`.

    Uses `transformers.Trainer` so the run looks like any other HF pretraining job.
    """
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    config, settings = base_settings(task)  # part of the cache fingerprint: change them there, not per call
    tokenizer = build_tokenizer(task)
    model = build_tiny_model(tokenizer, seed=settings["seed"], config=config)
    lines = task.corpus(settings["n_lines"], seed=settings["seed"])
    data = Dataset.from_dict({"text": lines}).map(
        lambda b: tokenizer([tokenizer.bos_token + " " + t + " " + tokenizer.eos_token for t in b["text"]]),
        batched=True,
        remove_columns=["text"],
    )
    if settings.get("pack_length"):
        data = Dataset.from_list(pack_lines(data["input_ids"], settings["pack_length"]))
        collator = PackedLinesCollator(tokenizer.pad_token_id)
    else:
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
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
            use_cache=False,  # the default, and packing needs it: with a cache, attention crosses packed lines
            remove_unused_columns=False,  # a packed row's `seq_lengths`, which the collator turns into positions
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=collator,
        )
        trainer.train()
    tokenizer.padding_side = "left"
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def pack_lines(lines: list[list[int]], pack_length: int) -> list[dict]:
    """Token-id lines packed in order into rows of at most `pack_length` tokens, a line never split; each row keeps
    its lines' `seq_lengths` (TRL's packed format). Not `trl.pack_dataset`: its best-fit-decreasing rows hold lines
    of one length, and the chat base pretrained on them could not reverse a list (greedy on corpus lines: reverse
    0.05 vs 0.71-0.80 in order; `benchmarks/DIAGNOSIS.md`, section 7)."""
    rows: list[dict] = []
    for line in lines:
        if len(line) > pack_length:
            raise ValueError(f"a corpus line of {len(line)} tokens exceeds pack_length={pack_length}")
        if not rows or len(rows[-1]["input_ids"]) + len(line) > pack_length:
            rows.append({"input_ids": [], "seq_lengths": []})
        rows[-1]["input_ids"].extend(line)
        rows[-1]["seq_lengths"].append(len(line))
    return rows


class PackedLinesCollator:
    """TRL's language-modeling collator on packed rows (`pack_lines`), without the attention mask: then the
    position ids, which restart at every line, make transformers' attention block-diagonal
    (`masking_utils.find_packed_sequence_indices`), so a line never attends to the lines packed before it."""

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collate(rows)
        del batch["attention_mask"]  # with one, transformers would let a line attend across its row
        return batch


def tiny_base_dir(task: Task = DEFAULT_TASK) -> Path:
    """Where the tiny base with today's settings is (or will be) cached."""
    return cache_dir() / f"tiny-base-{_fingerprint(task)}"


def get_tiny_base(task: Task = DEFAULT_TASK, *, rebuild: bool = False) -> Path:
    """Path of the pretrained tiny base, trained once and cached (atomically: a crash leaves no half-written dir)."""
    target = tiny_base_dir(task)
    if (target / "config.json").exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Pretraining the tiny base model into %s (once; cached afterwards)", target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-base-", dir=target.parent))
    try:
        pretrain_tiny_base(staging, task)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
