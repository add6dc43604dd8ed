"""Real architectures x chat-template styles x (pad != eos, pad == eos): the numbers PPO computes are the ones the
other stages and `generate` compute (issue #13).

Per combination, with a tiny random-weight model (tests/arch_fixtures.py) whose generation_config.json ships
non-neutral sampling defaults, a reward model saved as the RM stage saves it, and one PPO rollout:

- reference log-probs == the SFT model's own (its plain forward on the unpadded sequence);
- PPO's policy logits == the model's own forward logits (Granite's logits_scaling, Cohere's logit_scale, Gemma-2's
  softcapping included);
- the score PPO uses == the RM stage's score of the same conversation (finished answers, cut-off answers, and a
  3-turn prompt);
- `generate`'s own sampling log-probs (its processed `scores`) == PPO's rollout log-probs.

Tolerances: everything runs in fp32; the two sides of each comparison are the same computation over differently
batched and padded inputs (left-padded batch vs one unpadded row, different matmul shapes), so they differ by
float32 rounding accumulated over two layers and a 300-way log-softmax: measured <= 8e-6. 1e-4 is far below
every difference these tests caught before #13 was fixed (>= 0.025 on a score, >= 0.07 nats between generate's and
PPO's log-probs, logits 8x / 16x off on Granite / Cohere).

A few combinations also run the three stages through their public recipes (`test_three_stages`).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from arch_fixtures import ARCHITECTURES, SHIPPED_SAMPLING_DEFAULTS, TEMPLATES, save_model, tokenizer
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoModelForCausalLM, GenerationConfig
from trl import ModelConfig

from rlhf_hf.generation import own_sampling_defaults, sampling_config
from rlhf_hf.modeling import load_sequence_classifier, lora_config
from rlhf_hf.ppo import core
from rlhf_hf.ppo.config import PPORecipeConfig
from rlhf_hf.ppo.roles import answer_logits, build_ppo_model, last_hidden
from rlhf_hf.ppo.trainer import PPOTrainer
from rlhf_hf.reward.model import reward_stats, score, write_stats

ATOL = 1e-4
TEMPERATURE = 0.8
THREE_TURNS = [
    {"role": "user", "content": "the cat sat on a mat"},
    {"role": "assistant", "content": "and the dog ran to the park, 1 2 3."},
    {"role": "user", "content": "please answer with only one short sentence"},
]
PROMPTS = ["the cat sat on a mat", THREE_TURNS, "birds sang songs in tall green trees", "numbers today"]
FINISHED = ["on a mat, 1 2 3.", "the dog ran.", "music and food, 4 5.", "old houses near trees"]
COMBINATIONS = [
    pytest.param(arch, style, pad_is_eos, id=f"{arch}-{style}-{'pad=eos' if pad_is_eos else 'pad'}")
    for arch in ARCHITECTURES
    for style in TEMPLATES
    for pad_is_eos in (False, True)
]


def randomise_lora(model: torch.nn.Module, seed: int, adapters: tuple[str, ...] = ("default",)) -> None:
    """LoRA B starts at zero (a no-op adapter); random B makes a wrongly routed adapter show in the numbers."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(f"lora_B.{a}." in name or f"score.modules_to_save.{a}." in name for a in adapters):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def save_reward_model(sft_dir: Path, out: Path, tok) -> torch.nn.Module:
    """The RM stage's output contract: SEQ_CLS LoRA + `score` head on the SFT model, tokenizer, reward_stats.json.

    Returns the in-memory classifier: the model the RM stage computes reward_stats and evaluation scores with.
    """
    cfg = ModelConfig(
        model_name_or_path=str(sft_dir), use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0
    )
    model = get_peft_model(
        load_sequence_classifier(cfg, pad_token_id=tok.pad_token_id), lora_config(cfg, "SEQ_CLS")
    )
    randomise_lora(model, seed=1)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    write_stats(out, reward_stats(score(model, tok, PROMPTS, FINISHED), "test answers"))
    return model


def ppo_trainer(sft_dir: Path, rm_dir: Path, out: Path, tok) -> PPOTrainer:
    cfg = PPORecipeConfig(
        **{
            "model_name_or_path": str(sft_dir),
            "reward_model_path": str(rm_dir),
            "output_dir": str(out),
            "max_steps": 1,
            "per_device_train_batch_size": len(PROMPTS),
            "num_mini_batches": 1,
            "max_new_tokens": 6,
            "max_prompt_length": 64,
            "temperature": TEMPERATURE,
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
            "save_strategy": "no",
            "sample_every": 0,
            "eval_gold_prompts": 0,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": True,
            "seed": 0,
            "critic": "head",  # values from the policy forward's hidden states: that path is checked below
        }
    )
    roles = build_ppo_model(cfg, tok.pad_token_id)
    randomise_lora(roles.lm, seed=2, adapters=("policy",))  # the policy differs from the reference
    return PPOTrainer(
        model=roles, args=cfg, processing_class=tok, train_dataset=Dataset.from_dict({"prompt": ["x"]})
    )


def own_logprobs(model, rollout, row: int) -> torch.Tensor:
    """Log-probs of the answer tokens under `model`'s plain forward on the unpadded row (as a user would call it)."""
    real = rollout.attention_mask[row].bool()
    ids = rollout.input_ids[row][real][None]
    n = int(rollout.answer_mask[row].sum())
    logits = model(input_ids=ids).logits[:, -n - 1 : -1]
    return core.logprobs_from_logits(logits, ids[:, -n:], TEMPERATURE)[0]


@pytest.mark.parametrize(("arch", "style", "pad_is_eos"), COMBINATIONS)
def test_ppo_reads_what_the_model_and_the_reward_model_compute(
    arch, style, pad_is_eos, tmp_path, monkeypatch
):
    tok = tokenizer(style, pad_is_eos)
    assert (tok.pad_token_id == tok.eos_token_id) == pad_is_eos
    sft_dir = save_model(arch, style, pad_is_eos, tmp_path / "sft")
    reward_model = save_reward_model(sft_dir, tmp_path / "rm", tok)
    trainer = ppo_trainer(sft_dir, tmp_path / "rm", tmp_path / "ppo", tok)

    # Spy on the policy's `generate`: its processed scores are the distribution the tokens were drawn from.
    lm, seen = trainer.roles.causal_lm, {}
    real_generate = lm.generate

    def spy(*, generation_config, **kwargs):
        generation_config = copy.deepcopy(generation_config)
        generation_config.output_scores = generation_config.return_dict_in_generate = True
        out = real_generate(generation_config=generation_config, **kwargs)
        seen["scores"] = torch.stack(out.scores, dim=1)  # [B, T, V] after every logits processor
        return out.sequences

    monkeypatch.setattr(lm, "generate", spy)
    torch.manual_seed(0)
    rollout = trainer.rollout(PROMPTS)
    mask = rollout.answer_mask.bool()

    # generate's sampling log-probs == PPO's rollout log-probs (the model ships repetition_penalty, min_p, ...)
    sampled = torch.log_softmax(seen["scores"].float(), -1)
    sampled = sampled.gather(-1, rollout.answer_ids[:, : sampled.shape[1], None]).squeeze(-1)
    torch.testing.assert_close(sampled[mask], rollout.logprobs[mask], atol=ATOL, rtol=0)

    # reference log-probs == the SFT model's own; policy log-probs == the policy's own (adapter merged in)
    sft = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32).eval()
    roles = trainer.roles
    with torch.no_grad(), roles.merged_policy():
        policy_own = [own_logprobs(roles.causal_lm, rollout, i) for i in range(len(PROMPTS))]
    with torch.no_grad():
        for i in range(len(PROMPTS)):
            n = int(rollout.answer_mask[i].sum())
            torch.testing.assert_close(
                rollout.ref_logprobs[i, :n], own_logprobs(sft, rollout, i), atol=ATOL, rtol=0
            )
            torch.testing.assert_close(rollout.logprobs[i, :n], policy_own[i], atol=ATOL, rtol=0)

    # `critic: head` reads the policy forward's final hidden states: the backbone's own last hidden state
    ids, attention, width = rollout.input_ids, rollout.attention_mask, rollout.answer_width
    with torch.no_grad():
        _, hidden = answer_logits(roles.causal_lm, ids, attention, width, with_hidden=True)
        backbone = last_hidden(roles.causal_lm, ids, attention)[:, -width - 1 : -1]
    torch.testing.assert_close(hidden, backbone, atol=ATOL, rtol=0)

    # the score PPO uses == the RM stage's score of the same conversation (what was sampled, mostly cut off)
    texts = [
        tok.decode(
            rollout.answer_ids[i, : int(rollout.answer_mask[i].sum())], skip_special_tokens=True
        ).strip()
        for i in range(len(PROMPTS))
    ]
    expected = torch.tensor(score(reward_model, tok, PROMPTS, texts))
    torch.testing.assert_close(rollout.raw_scores, expected, atol=ATOL, rtol=0)

    # ... and for finished answers (eos, then pad), including the 3-turn prompt
    def finished(*, input_ids, **kwargs):
        answers = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for a in FINISHED]
        width = max(map(len, answers))
        rows = [a + [tok.pad_token_id] * (width - len(a)) for a in answers]
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)

    monkeypatch.setattr(lm, "generate", finished)
    rollout = trainer.rollout(PROMPTS)
    assert rollout.has_eos.all()
    expected = torch.tensor(score(reward_model, tok, PROMPTS, FINISHED))
    torch.testing.assert_close(rollout.raw_scores, expected, atol=ATOL, rtol=0)


def test_sampling_sets_the_models_own_defaults_aside_and_says_so(caplog):
    """Inside the one sampler the model's generation_config keeps only its token ids; the fields set aside are
    named in a warning, and the model's own config is back afterwards (saving the model keeps it)."""
    tok = tokenizer("chatml", False)
    shipped = GenerationConfig(eos_token_id=tok.eos_token_id, **SHIPPED_SAMPLING_DEFAULTS)
    model = SimpleNamespace(generation_config=shipped)
    config = sampling_config(tok, max_new_tokens=4, do_sample=True, temperature=TEMPERATURE)
    with caplog.at_level(logging.WARNING, logger="rlhf_hf.generation"), own_sampling_defaults(model, config):
        inside = model.generation_config.to_dict()
    assert inside["eos_token_id"] == tok.eos_token_id
    assert all(inside[k] is None for k in SHIPPED_SAMPLING_DEFAULTS)
    assert model.generation_config is shipped
    for field in ("repetition_penalty", "no_repeat_ngram_size", "min_p", "top_k"):
        assert field in caplog.text
    assert config.top_k == 0 and config.top_p == 1.0 and config.temperature == TEMPERATURE
    # Once per model, and every new model is told: a freed config's id is often reused by the next one, which
    # must not be taken for the one already warned about.
    for _ in range(5):
        caplog.clear()
        fresh = SimpleNamespace(generation_config=GenerationConfig(**SHIPPED_SAMPLING_DEFAULTS))
        with caplog.at_level(logging.WARNING, logger="rlhf_hf.generation"):
            for _ in range(2):
                with own_sampling_defaults(fresh, config):
                    pass
        assert caplog.text.count("repetition_penalty") == 1
        del fresh


def test_no_warning_for_a_models_output_settings(caplog):
    """What `generate` returns (attentions, hidden states) says nothing about sampling: no warning for it."""
    tok = tokenizer("chatml", False)
    outputs_only = GenerationConfig(output_attentions=False, output_hidden_states=False, output_scores=False)
    model = SimpleNamespace(generation_config=outputs_only)
    config = sampling_config(tok, max_new_tokens=4, do_sample=True, temperature=TEMPERATURE)
    with caplog.at_level(logging.WARNING, logger="rlhf_hf.generation"), own_sampling_defaults(model, config):
        pass
    assert caplog.text == ""


# ------------------------------------------------------------------------------------------ the three stages
COMMON = dict(
    overwrite_output_dir=True,
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    max_steps=1,
    learning_rate=1e-3,
    save_strategy="no",
    eval_strategy="no",
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    eval_gold_prompts=0,
    dataset_test_split="none",
    eval_fraction=0.0,
    seed=0,
)


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    ("arch", "style", "pad_is_eos"),
    [
        pytest.param("granite", "chatml", True, id="granite-chatml-pad=eos"),  # no *ForSequenceClassification
        pytest.param("cohere", "gemma", False, id="cohere-gemma-pad"),  # neither
        pytest.param("qwen2", "chatml", False, id="qwen2-chatml-pad"),
        pytest.param("gpt2", "llama3", True, id="gpt2-llama3-pad=eos"),
    ],
)
def test_three_stages(arch, style, pad_is_eos, tmp_path):
    """SFT -> RM -> PPO through the public recipes; PPO's logged scores are the RM's scores of those answers."""
    from rlhf_hf import PPORecipe, RewardRecipe, SFTRecipe
    from rlhf_hf.reward.model import load_reward_model

    base = save_model(arch, style, pad_is_eos, tmp_path / "base")
    sft_rows = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
        for p, a in zip(PROMPTS[::2], FINISHED, strict=False)
    ] + [{"messages": THREE_TURNS + [{"role": "assistant", "content": FINISHED[1]}]}]
    SFTRecipe.from_dict(
        dict(
            model_name_or_path=str(base),
            dataset_name=jsonl(tmp_path / "sft.jsonl", sft_rows),
            output_dir=str(tmp_path / "sft"),
            per_device_train_batch_size=3,
            max_length=160,
            **COMMON,
        )
    ).run()
    # As messages: a column must hold one type (the 3-turn prompt is a list of messages).
    chats = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in PROMPTS]
    ranked = [{"prompt": p, "responses": FINISHED[:3], "ranks": [1, 2, 3]} for p in chats]
    rm = RewardRecipe.from_dict(
        dict(
            model_name_or_path=str(tmp_path / "sft" / "merged"),
            dataset_name=jsonl(tmp_path / "ranked.jsonl", ranked),
            output_dir=str(tmp_path / "rm"),
            per_device_train_batch_size=2,
            max_length=160,
            **COMMON,
        )
    ).run()
    prompts = [{"prompt": p} for p in chats]
    PPORecipe.from_dict(
        dict(
            model_name_or_path=str(tmp_path / "sft" / "merged"),
            reward_model_path=rm.output_dir,
            dataset_name=jsonl(tmp_path / "prompts.jsonl", prompts),
            output_dir=str(tmp_path / "ppo"),
            per_device_train_batch_size=4,
            num_mini_batches=1,
            max_new_tokens=6,
            max_prompt_length=128,
            sample_every=1,
            num_samples=4,
            merge=False,
            **{
                k: v
                for k, v in COMMON.items()
                if k not in ("dataset_test_split", "eval_fraction", "eval_strategy")
            },
        )
    ).run()
    samples = [json.loads(line) for line in (tmp_path / "ppo" / "samples.jsonl").read_text().splitlines()]
    model, tok, _ = load_reward_model(rm.output_dir)
    by_last_turn = {p[-1]["content"]: p for p in chats}
    prompts = [by_last_turn[s["prompt"]] for s in samples]
    expected = score(model, tok, prompts, [s["answer"] for s in samples])
    # samples.jsonl rounds scores to 4 decimals; the merged RM differs from base + adapter by fp32 rounding
    torch.testing.assert_close(
        torch.tensor([s["score"] for s in samples]), torch.tensor(expected), atol=2e-4, rtol=0
    )
