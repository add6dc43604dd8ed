"""The pipeline on a user's data (#13 item 7): a real-architecture model, a local prompts file, no gold judge.

Without a judge nothing "gold" is reported (no toy metrics on someone else's prompts); with a judge callable the
report is that judge's. Multi-turn prompts go through the human ranking round trip and come back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from paths import ROOT
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rlhf_hf.evaluation import sample
from rlhf_hf.modeling import load_tokenizer
from rlhf_hf.pipeline import PausedForRanking, PipelineConfig, RLHFPipeline
from rlhf_hf.report import held_out_prompts

CONFIGS = ROOT / "recipes" / "configs"
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "log",
    "red",
    "blue",
    "green",
    "why",
    "how",
    "what",
    "is",
    "are",
    "you",
    "me",
    "tell",
    "more",
]
FOLLOW_UP = [
    {"role": "user", "content": "tell me what the cat is"},
    {"role": "assistant", "content": "the cat sat on the mat"},
    {"role": "user", "content": "tell me more"},
]


def _qwen2(out) -> str:
    """A random-weight Qwen2 and a byte-level BPE tokenizer trained here (no chat template: ours is installed)."""
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<|pad|>", "<|endoftext|>"]
    backend.train_from_iterator(
        [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))],
        trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|pad|>", eos_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(out)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    return str(out)


def _files(tmp_path) -> tuple[str, str]:
    prompts, sft = tmp_path / "prompts.jsonl", tmp_path / "sft.jsonl"
    rows = [{"prompt": f"{WORDS[i % 21]} is {WORDS[i // 3]} why"} for i in range(30)]  # all different
    rows[::3] = [{"prompt": FOLLOW_UP}] * len(rows[::3])  # multi-turn prompts among single-turn ones
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    demos = [
        {"messages": [{"role": "user", "content": f"{w} is"}, {"role": "assistant", "content": f"the {w}"}]}
        for w in WORDS
    ]
    sft.write_text("".join(json.dumps(r) + "\n" for r in demos))
    return str(prompts), str(sft)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("user_data")
    model = _qwen2(tmp_path / "qwen2")
    prompts, sft = _files(tmp_path)
    stage = {"report_to": "none", "use_peft": True, "lora_r": 4, "lora_alpha": 8}
    values = {
        "run_dir": str(tmp_path / "run"),
        "labeller": "human",
        "prompts_dataset": prompts,
        "rank_prompts": 12,
        "sample_k": 3,
        "sample_max_new_tokens": 6,
        "eval_prompts": 6,
        "sft": {"config": str(CONFIGS / "sft_tiny.yaml"), **stage, "model_name_or_path": model},
        "reward": {
            "config": str(CONFIGS / "reward_tiny.yaml"),
            **stage,
            "num_train_epochs": 1,
            "max_length": 256,
            "eval_gold_prompts": 0,
        },
        "ppo": {
            "config": str(CONFIGS / "ppo_tiny.yaml"),
            **stage,
            "max_steps": 2,
            "save_steps": 1,
            "save_total_limit": None,
            "per_device_train_batch_size": 4,
            "max_new_tokens": 6,
            "max_prompt_length": 128,
            "eval_gold_prompts": 0,
            "ptx_coef": 0.0,
        },
    }
    values["sft"] |= {"dataset_name": sft, "max_steps": 3, "max_length": 256, "eval_gold_prompts": 0}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(values))
    config = PipelineConfig.from_yaml(path)
    with pytest.raises(PausedForRanking):
        RLHFPipeline(config).run()
    round_dir = tmp_path / "run" / "round_1"
    exported = [json.loads(line) for line in (round_dir / "to_rank.jsonl").read_text().splitlines()]
    for row in exported:  # a "person" prefers shorter answers (ties share a rank)
        lengths = sorted({len(r["response"]) for r in row["responses"]})
        row["ranks"] = {r["id"]: lengths.index(len(r["response"])) + 1 for r in row["responses"]}
    (round_dir / "ranked.jsonl").write_text("".join(json.dumps(row) + "\n" for row in exported))
    return config, RLHFPipeline(config).run(), exported


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_user_prompts_give_no_gold_metrics_and_multi_turn_prompts_survive_ranking(user_run):
    config, summary, exported = user_run
    assert summary["judge"] is None and "rm_gold_pair_accuracy" not in summary
    assert not {k for k in _keys(summary) if "gold" in k or "exact" in k}
    held_out = [json.loads(line)["prompt"] for line in Path(config.prompts_dataset).read_text().splitlines()][
        -6:
    ]
    assert summary["prompts"] == 6
    ranked = [row["prompt"] for row in exported]
    assert FOLLOW_UP in ranked and not any(p in ranked for p in held_out if isinstance(p, str))
    comparisons_file = Path(config.run_dir) / "round_1" / "comparisons.jsonl"
    comparisons = [json.loads(line) for line in comparisons_file.read_text().splitlines()]
    assert [c["prompt"] for c in comparisons] == ranked  # multi-turn prompts come back exactly as exported
    for name, row in summary["table"].items():
        assert set(row) == {"model", "decoding", "rm_score", "win_rate_rm", "kl", "length", "eos_rate"}, name
    assert summary["table"]["sft greedy"]["win_rate_rm"] == 0.5


def test_a_judge_callable_is_what_the_report_scores_with(user_run):
    config, _, _ = user_run

    def brevity(prompt, answer) -> float:  # the user's judge: short answers are good
        return 1.0 if len(answer.split()) <= 2 else 0.25

    pipeline = RLHFPipeline(config, judge=brevity)
    summary = pipeline.run()  # every stage is finished: only the evaluation runs again
    assert summary["judge"] == "user judge"
    sft_dir = f"{config.run_dir}/sft/merged"
    answers = sample(
        AutoModelForCausalLM.from_pretrained(sft_dir),
        load_tokenizer(sft_dir),
        held_out_prompts(config),
        temperature=0.0,
        max_new_tokens=config.sample_max_new_tokens,
    ).texts
    expected = [brevity(None, a) for a in answers]
    sft = summary["table"]["sft greedy"]
    assert sft["gold_score"] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert sft["exact"] == sum(e == 1.0 for e in expected) / len(expected)
