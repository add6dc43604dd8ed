"""Tiny random-weight models of real architectures, a locally trained byte-level BPE tokenizer and three chat
template styles, for the architecture matrix (tests/test_architectures.py).

Everything is built in-process from transformers' config classes and the `tokenizers` library: nothing is
downloaded. The configs keep each architecture's distinctive parts switched on and made large enough to matter
(Granite's `logits_scaling`, Cohere's `logit_scale`, Gemma-2's final-logit softcapping), so a pass that skips
one of them shows up as a numeric difference, not as a rounding error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from rlhf_hf.modeling import prepare_tokenizer

SIZE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
# (config class, its own kwargs on top of SIZE / the GPT-style names); each architecture's special features on.
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {"num_key_value_heads": 2}),
    "mistral": ("MistralConfig", {"num_key_value_heads": 2, "sliding_window": 16}),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 2}),
    "qwen3": ("Qwen3Config", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma": ("GemmaConfig", {"num_key_value_heads": 1, "head_dim": 8}),
    "gemma2": (
        "Gemma2Config",
        {"num_key_value_heads": 2, "head_dim": 8, "final_logit_softcapping": 2.0, "sliding_window": 16},
    ),
    "phi3": ("Phi3Config", {"num_key_value_heads": 2}),
    "gpt2": ("GPT2Config", {}),
    "gpt_neox": ("GPTNeoXConfig", {"rotary_pct": 0.5}),
    "granite": (
        "GraniteConfig",
        {
            "logits_scaling": 8.0,
            "embedding_multiplier": 4.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.25,
        },
    ),
    "cohere": ("CohereConfig", {"logit_scale": 0.0625, "num_key_value_heads": 2}),
    "olmo2": ("Olmo2Config", {"num_key_value_heads": 2}),
    "stablelm": ("StableLmConfig", {"num_key_value_heads": 2}),
    "smollm3": ("SmolLM3Config", {"num_key_value_heads": 2}),
}


@dataclass(frozen=True)
class TemplateStyle:
    """A chat-template family: its special tokens, which of them ends a turn (eos), and a pad token."""

    name: str
    template: str
    eos: str
    bos: str | None
    pad: str  # present in the vocabulary only for pad != eos
    specials: tuple[str, ...]


# Each assistant turn is wrapped in `{% generation %}` so TRL's assistant-only loss works, and each ends with
# the eos the style uses; ChatML and Gemma then emit "\n" after it, as the real templates do.
CHATML = TemplateStyle(
    name="chatml",
    template=(
        "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' }}"
        "{%- if m['role'] == 'assistant' %}{%- generation %}{{- m['content'] + '<|im_end|>' }}{%- endgeneration %}"
        "{%- else %}{{- m['content'] + '<|im_end|>' }}{%- endif %}{{- '\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    ),
    eos="<|im_end|>",
    bos=None,
    pad="<|endoftext|>",
    specials=("<|im_start|>", "<|im_end|>"),
)
LLAMA3 = TemplateStyle(
    name="llama3",
    template=(
        "{{- bos_token }}{%- for m in messages %}"
        "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}"
        "{%- if m['role'] == 'assistant' %}{%- generation %}{{- m['content'] + '<|eot_id|>' }}{%- endgeneration %}"
        "{%- else %}{{- m['content'] + '<|eot_id|>' }}{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    eos="<|eot_id|>",
    bos="<|begin_of_text|>",
    pad="<|finetune_right_pad_id|>",
    specials=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)
GEMMA = TemplateStyle(
    name="gemma",
    template=(
        "{{- bos_token }}{%- for m in messages %}"
        "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{{- '<start_of_turn>' + role + '\\n' }}"
        "{%- if m['role'] == 'assistant' %}{%- generation %}{{- m['content'] + '<end_of_turn>' }}{%- endgeneration %}"
        "{%- else %}{{- m['content'] + '<end_of_turn>' }}{%- endif %}{{- '\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
    ),
    eos="<end_of_turn>",
    bos="<bos>",
    pad="<pad>",
    specials=("<bos>", "<start_of_turn>", "<end_of_turn>"),
)
TEMPLATES = {t.name: t for t in (CHATML, LLAMA3, GEMMA)}

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "the",
    "dog",
    "ran",
    "to",
    "the",
    "park",
    "while",
    "birds",
    "sang",
    "songs",
    "in",
    "tall",
    "green",
    "trees",
    "near",
    "old",
    "houses",
    "please",
    "answer",
    "with",
    "only",
    "one",
    "short",
    "sentence",
    "about",
    "numbers",
    "colours",
    "animals",
    "weather",
    "food",
    "and",
    "music",
    "today",
]


def corpus(n: int = 300) -> list[str]:
    """A few hundred deterministic lines of plain words, digits and punctuation for the BPE trainer."""
    gen = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(n):
        idx = torch.randint(len(WORDS), (int(torch.randint(4, 12, (1,), generator=gen)),), generator=gen)
        digits = " ".join(str(int(d)) for d in torch.randint(10, (3,), generator=gen))
        lines.append(" ".join(WORDS[i] for i in idx.tolist()) + f", {digits}.\n")
    return lines


@cache
def tokenizer(style: str, pad_is_eos: bool) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `corpus()`, with the style's special tokens, prepared as the stages prepare it.

    For `pad_is_eos` the vocabulary has no pad candidate, so `prepare_tokenizer` falls back to padding with eos.
    """
    t = TEMPLATES[style]
    specials = list(t.specials) + ([] if pad_is_eos else [t.pad])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=t.eos,
        bos_token=t.bos,
        pad_token=None if pad_is_eos else t.pad,
        chat_template=t.template,
    )
    return prepare_tokenizer(tok)


def model_config(arch: str, tok: PreTrainedTokenizerFast):
    name, extra = ARCHITECTURES[arch]
    size = dict(SIZE)
    if arch == "gpt2":
        size = dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128)
    cls = getattr(transformers, name)
    return cls(
        vocab_size=len(tok),
        max_position_embeddings=128,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=arch in ("gemma", "gemma2", "cohere"),
        **size,
        **extra,
    )


# Sampling defaults a real instruct model ships in generation_config.json; rollouts must not use them.
SHIPPED_SAMPLING_DEFAULTS = dict(
    do_sample=True,
    temperature=0.7,
    top_p=0.8,
    top_k=5,
    min_p=0.05,
    repetition_penalty=1.1,
    no_repeat_ngram_size=3,
)


def save_model(arch: str, style: str, pad_is_eos: bool, directory: Path, seed: int = 0) -> Path:
    """A random-weight causal LM of `arch` + the tokenizer in `directory` (safetensors), as an SFT stage writes it,
    with a generation_config.json carrying non-neutral sampling defaults."""
    tok = tokenizer(style, pad_is_eos)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, tok), dtype=torch.float32)
    with torch.no_grad():  # larger-than-init weights: distinct, peaked distributions, so differences show
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SHIPPED_SAMPLING_DEFAULTS
    )
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory
