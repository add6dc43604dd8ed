"""Tiny SFT and reward-model artifacts for the PPO tests, built like the real stages would build them.

The reward model follows the RM stage's contract: a PEFT LoRA adapter (task SEQ_CLS, all-linear, the `score`
head in `modules_to_save`) on the SFT merged model, plus the tokenizer and `reward_stats.json`. It is trained
on 9,600 (sorted, corrupted) answer pairs so that its score means something and PPO can raise it: with a
third of that (200 steps) it told the SFT policy's own greedy mistakes from the right answer only 60 % of the
time (PPO then cut greedy exact answers 0.81 -> 0.60); with 600 steps 89 % (greedy exact 0.81 -> 0.75).
Artifacts are cached under $RLHF_HF_CACHE, keyed by FIXTURE_VERSION and the SFT config, so repeated runs reuse
them.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase
from trl import ModelConfig

from rlhf_hf import SFTRecipe
from rlhf_hf.modeling import load_tokenizer, lora_config
from rlhf_hf.tasks.tiny.model import cache_dir
from rlhf_hf.tasks.tiny_sort import DEFAULT_TASK

REPO = Path(__file__).resolve().parents[1]
SFT_CONFIG = REPO / "recipes" / "configs" / "sft_tiny.yaml"
FIXTURE_VERSION = (
    "3"  # bump when the way fixtures are built changes (the cache is keyed by it and the SFT config)
)


def _key() -> str:
    text = FIXTURE_VERSION + SFT_CONFIG.read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _cached(name: str, build) -> Path:
    """`build(staging_dir)` once per cache key; a crash leaves no half-written dir behind."""
    target = cache_dir() / f"ppo-fixtures-{_key()}" / name
    if (target / ".done").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(staging)
        (staging / ".done").touch()
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def sft_model() -> Path:
    """The merged SFT model (`<sft>/merged`, with its tokenizer), as step 1 writes it."""

    def build(out: Path) -> None:
        SFTRecipe.from_yaml(SFT_CONFIG, output_dir=str(out / "sft"), eval_gold_prompts=0).run()

    return _cached("sft", build) / "sft" / "merged"


def _sloppy(digits: list[str], rng: random.Random) -> str:
    """A wrong answer: one or two plausible mistakes on the sorted digits, or the digits left unsorted."""
    answer = sorted(digits)
    if rng.random() < 0.25 and len(set(digits)) > 1:
        while answer == sorted(digits):
            answer = rng.sample(digits, len(digits))
        return " ".join(answer)
    for _ in range(rng.choice([1, 1, 2])):
        answer = DEFAULT_TASK.corrupt(answer, rng)
    return " ".join(answer) if answer != sorted(digits) else " ".join(DEFAULT_TASK.corrupt(answer, rng))


def _pair_texts(tokenizer: PreTrainedTokenizerBase, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Chat texts of (correct, sloppy) answers to the same prompts."""
    rng = random.Random(seed)
    chosen, rejected = [], []
    for prompt in DEFAULT_TASK.prompts(n, seed):
        digits = DEFAULT_TASK.digits_of(prompt)
        good = DEFAULT_TASK.correct_answer(digits)
        bad = _sloppy(digits, rng)
        for answer, out in ((good, chosen), (bad, rejected)):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            out.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return chosen, rejected


def train_reward_adapter(sft_dir: Path, out: Path, *, steps: int = 600, seed: int = 0) -> Path:
    """A LoRA SEQ_CLS reward model on the SFT base, trained briefly with the Bradley-Terry loss."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(str(sft_dir))
    base = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1, dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id
    config = lora_config(ModelConfig(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0), "SEQ_CLS")
    model = get_peft_model(base, config)
    chosen, rejected = _pair_texts(tokenizer, steps * 16, seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(steps):
        sl = slice(step * 16, (step + 1) * 16)
        batch = tokenizer(
            chosen[sl] + rejected[sl], return_tensors="pt", padding=True, add_special_tokens=False
        )
        rewards = model(**batch).logits.squeeze(-1)
        loss = -torch.nn.functional.logsigmoid(rewards[:16] - rewards[16:]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():  # the stats PPO normalises scores with: rewards of reference answers
        batch = tokenizer(
            chosen[:256] + rejected[:256], return_tensors="pt", padding=True, add_special_tokens=False
        )
        scores = model(**batch).logits.squeeze(-1)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    stats = {
        "mean": scores.mean().item(),
        "std": scores.std().item(),
        "n": len(scores),
        "reference": "fixture",
    }
    (out / "reward_stats.json").write_text(json.dumps(stats))
    return out


def reward_adapter() -> Path:
    """The reward model as the RM stage writes it (LoRA SEQ_CLS adapter dir + reward_stats.json)."""
    return _cached("reward", lambda out: train_reward_adapter(sft_model(), out))


def reward_full() -> Path:
    """The same reward model merged into a standalone `AutoModelForSequenceClassification` dir."""

    def build(out: Path) -> None:
        sft = sft_model()
        base = AutoModelForSequenceClassification.from_pretrained(sft, num_labels=1, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(reward_adapter())).merge_and_unload()
        merged.config.pad_token_id = load_tokenizer(str(sft)).pad_token_id
        merged.save_pretrained(out)
        load_tokenizer(str(sft)).save_pretrained(out)
        shutil.copy(reward_adapter() / "reward_stats.json", out / "reward_stats.json")

    return _cached("reward-full", build)
