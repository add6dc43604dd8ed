"""Shared pieces of the PPO speed and memory benchmarks: random-weight Llama artifacts, prompts, GPU memory.

The artifacts follow the stage contracts PPO loads (see `rlhf_hf/ppo/roles.py`, `tests/ppo_fixtures.py`):
`<root>/<size>-<dtype>/sft` is the "merged SFT model" (a random-weight LlamaForCausalLM + tokenizer) and
`<root>/<size>-<dtype>/reward` the reward model (a PEFT SEQ_CLS LoRA adapter, all-linear, with `score` in
`modules_to_save`, + tokenizer + reward_stats.json). Model dimensions are those of the TRL 1.12 anchor
(`shared/anchors/trl112_ppo.py`), plus 13b (Llama-2-13B's shape) for the memory table.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)
from trl import ModelConfig

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/x.py` without an installed package
    sys.path.insert(0, str(REPO))

from rlhf_hf.modeling import lora_config  # noqa: E402

ARTIFACT_VERSION = "1"  # bump when the way artifacts are built changes (the cache is keyed by it)
PAD, EOS, BOS, UNK = "<pad>", "</s>", "<s>", "<unk>"
N_SPECIAL = 4  # ids 0..3; prompt tokens are drawn from the rest, so a prompt never holds eos or pad

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=1000,
    ),
    "1b": dict(  # TinyLlama-1.1B's shape, as the anchor
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
    "7b": dict(  # Llama-2-7B's shape, as the anchor
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "13b": dict(  # Llama-2-13B's shape
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32000,
    ),
}


# ------------------------------------------------------------------------------------------------ device
def on_gpu() -> bool:
    return torch.cuda.is_available()


def default_dtype_name() -> str:
    """bf16 weights on a GPU (as the anchor), fp32 on a CPU."""
    return "bfloat16" if on_gpu() else "float32"


def apply_memory_cap(gib: float | None) -> None:
    """Cap this process's CUDA allocations at `gib` (an allocation beyond it raises OutOfMemoryError)."""
    if gib is None or not on_gpu():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), 0)


def reset_peak() -> None:
    if on_gpu():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> dict[str, float | None]:
    """Peak allocated / reserved CUDA memory since the last `reset_peak` (None on a CPU)."""
    if not on_gpu():
        return {"peak_alloc_gib": None, "peak_reserved_gib": None}
    torch.cuda.synchronize()
    return {
        "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


def sync() -> None:
    if on_gpu():
        torch.cuda.synchronize()


def environment() -> dict[str, Any]:
    """Versions and device, recorded with every result."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["device"] = torch.cuda.get_device_name(0) if on_gpu() else "cpu"
    return out


# ------------------------------------------------------------------------------------------------ tokenizer
def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the model's whole vocabulary: word `w<i>` is token i, one token per word.

    So a prompt of N words is exactly N tokens. The chat template is the bare content (no role headers), so
    the chat-templated prompt PPO encodes has exactly the prompt's length too.
    """
    vocab = {PAD: 0, EOS: 1, BOS: 2, UNK: 3} | {f"w{i}": i for i in range(N_SPECIAL, vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, bos_token=BOS, unk_token=UNK
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = "{%- for message in messages %}{{- message['content'] }}{%- endfor %}"
    return tokenizer


def random_prompts(n: int, length: int, vocab_size: int, seed: int = 1) -> list[str]:
    """`n` prompts of exactly `length` random non-special tokens each."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, vocab_size, (n, length), generator=generator)
    return [" ".join(f"w{i}" for i in row) for row in ids.tolist()]


def random_texts(n: int, length: int, vocab_size: int, seed: int = 2) -> list[str]:
    return random_prompts(n, length, vocab_size, seed)


# ------------------------------------------------------------------------------------------------ artifacts
@dataclass
class Artifacts:
    sft: Path  # the random-weight base = "merged SFT model" (+ tokenizer)
    reward: Path  # the RM adapter dir (PEFT SEQ_CLS LoRA + score, tokenizer, reward_stats.json)
    build_seconds: float


def llama_config(size: str, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        **SIZES[size],
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        num_labels=1,
    )


def build_artifacts(size: str, root: str | Path, dtype: str | None = None, lora_r: int = 16) -> Artifacts:
    """Random-weight SFT base + RM adapter for `size`, built once under `root` (reused while `.done` exists).

    Built on the GPU when there is one (in seconds, even for 13B), saved in `dtype` (bf16 on a GPU).
    Needs about 2 bytes per parameter of free disk (26 GB for 13b).
    """
    dtype = dtype or default_dtype_name()
    out = Path(root) / f"{size}-{dtype}-v{ARTIFACT_VERSION}"
    sft_dir, rm_dir = out / "sft", out / "reward"
    if (out / ".done").exists():
        return Artifacts(sft_dir, rm_dir, 0.0)
    start = time.time()
    shutil.rmtree(out, ignore_errors=True)
    tokenizer = build_tokenizer(SIZES[size]["vocab_size"])
    config = llama_config(size, tokenizer)
    device = "cuda" if on_gpu() else "cpu"
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            causal = LlamaForCausalLM(config)
            with torch.device("meta"):  # the RM shares the base's decoder stack: only its head is new
                classifier = LlamaForSequenceClassification(config)
            classifier.model = causal.model
            classifier.score = torch.nn.Linear(config.hidden_size, 1, bias=False)
            torch.nn.init.normal_(classifier.score.weight, std=config.hidden_size**-0.5)
    finally:
        torch.set_default_dtype(previous)
    causal.generation_config.pad_token_id = tokenizer.pad_token_id
    causal.save_pretrained(sft_dir, safe_serialization=True)
    tokenizer.save_pretrained(sft_dir)

    rm_config = lora_config(
        ModelConfig(use_peft=True, lora_r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0), "SEQ_CLS"
    )
    reward = get_peft_model(classifier, rm_config)
    reward.save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    stats = {"mean": 0.0, "std": 1.0, "n": 0, "reference": "random-weight benchmark RM"}
    (rm_dir / "reward_stats.json").write_text(json.dumps(stats))
    del reward, classifier, causal
    if on_gpu():
        torch.cuda.empty_cache()
    (out / ".done").write_text(json.dumps({"size": size, "dtype": dtype, **SIZES[size]}))
    return Artifacts(sft_dir, rm_dir, time.time() - start)


def default_work_dir() -> Path:
    return Path(os.environ.get("RLHF_BENCH_DIR", "/tmp/rlhf_hf_bench"))


# ------------------------------------------------------------------------------------------------ reporting
def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:]) if len(values) > 1 else values[0]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ summary table
SPEED_HEADER = [
    "system",
    "size",
    "variant",
    "s / update",
    "episodes / s",
    "generate s",
    "scoring s",
    "PPO epochs s",
    "other s",
    "peak alloc GiB",
    "cap GiB",
    "note",
]


def speed_row(result: dict[str, Any]) -> list[Any]:
    """One row of the speed table, for our `ppo.py` results and the anchor's JSON line alike."""
    variant = result.get("variant") or f"{result.get('mode', '')} (anchor settings)"
    return [
        result.get("system"),
        result.get("size"),
        variant,
        result.get("median_update_s"),
        result.get("episodes_per_s"),
        result.get("generate_s"),
        result.get("scoring_s"),
        result.get("ppo_epochs_s"),
        result.get("other_s"),
        result.get("peak_alloc_gib"),
        result.get("memory_cap_gib"),
        result.get("error") or result.get("note") or "",
    ]


def summary(lines: list[str]) -> str:
    """Speed table (anchor + ours) and memory table (stage x size) from the JSON lines the benchmarks print."""
    speed, memory = [], {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if result.get("kind") == "memory":
            memory[result["stage"], result["size"], result.get("bits")] = result
        elif "system" in result:
            speed.append(speed_row(result))
    out = []
    if speed:
        out.append(markdown_table(SPEED_HEADER, speed))
    if memory:
        sizes = list(dict.fromkeys(k[1] for k in memory))
        stages = list(dict.fromkeys((k[0], k[2]) for k in memory))
        rows = []
        for stage, bits in stages:
            row: list[Any] = [f"{stage} ({bits}-bit base)" if bits in (4, 8) else f"{stage} (bf16 base)"]
            for size in sizes:
                cell = memory.get((stage, size, bits))
                if cell is None:
                    row.append("-")
                elif "error" in cell:
                    row.append("OOM" if str(cell["error"]).startswith("OOM") else "error")
                elif cell.get("peak_alloc_gib") is None:
                    row.append("n/a (CPU)")
                else:
                    cap = cell.get("memory_cap_gib") or float("inf")
                    fits = "fits" if cell["peak_alloc_gib"] <= cap else "over"
                    row.append(f"{cell['peak_alloc_gib']:.1f} GiB ({fits} {cap:g})")
            rows.append(row)
        out.append(markdown_table(["stage"] + [f"{s} peak" for s in sizes], rows))
    return "\n\n".join(out)


if __name__ == "__main__":  # python benchmarks/common.py results.jsonl [...]: print the summary tables
    text: list[str] = []
    for name in sys.argv[1:]:
        text += Path(name).read_text().splitlines()
    print(summary(text))
