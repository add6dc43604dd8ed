"""PPOTrainer / PPORecipe on the tiny embedded task: roles, rollouts, updates, checkpoints and the recipe.

The SFT model and reward model come from `ppo_fixtures` (built once, cached under $RLHF_HF_CACHE).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ppo_fixtures
import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rlhf_hf import PPORecipe, PPORecipeConfig
from rlhf_hf.cli import recipes
from rlhf_hf.data import load_split
from rlhf_hf.generation import encode_prompts, generate
from rlhf_hf.modeling import load_classifier, load_for_inference, load_tokenizer
from rlhf_hf.outputs import STAGING_DIR
from rlhf_hf.ppo import core
from rlhf_hf.ppo.recipe import validate_prompts
from rlhf_hf.ppo.roles import POLICY, REWARD, VALUE, PPOModel, build_ppo_model, position_ids
from rlhf_hf.ppo.trainer import PPOTrainer
from rlhf_hf.reward.model import score

REPO = Path(__file__).resolve().parents[1]
PPO_TINY = REPO / "recipes" / "configs" / "ppo_tiny.yaml"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def sft_dir() -> Path:
    return ppo_fixtures.sft_model()


@pytest.fixture(scope="session")
def rm_dir(sft_dir) -> Path:
    return ppo_fixtures.reward_adapter()


@pytest.fixture(scope="session")
def rm_full_dir(rm_dir) -> Path:
    return ppo_fixtures.reward_full()


@pytest.fixture(scope="session")
def prompts() -> Dataset:
    return load_split("rlhf-hf/tiny-sort-prompts", "train")


def make_config(sft_dir: Path, rm_dir: Path, output_dir: Path, **overrides) -> PPORecipeConfig:
    values = dict(
        model_name_or_path=str(sft_dir),
        reward_model_path=str(rm_dir),
        output_dir=str(output_dir),
        max_steps=1,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_mini_batches=1,
        num_ppo_epochs=2,
        max_new_tokens=8,
        max_prompt_length=32,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        save_strategy="no",
        sample_every=0,
        eval_gold_prompts=0,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    return PPORecipeConfig(**(values | overrides))


def make_trainer(
    cfg: PPORecipeConfig, prompts: Dataset, tokenizer=None, ptx: Dataset | None = None
) -> PPOTrainer:
    tokenizer = tokenizer or load_tokenizer(cfg.model_name_or_path)
    model = build_ppo_model(cfg, tokenizer.pad_token_id)
    return PPOTrainer(
        model=model, args=cfg, processing_class=tokenizer, train_dataset=prompts, ptx_dataset=ptx
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def updates(trainer: PPOTrainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "objective/scores" in h]


# ---------------------------------------------------------------------------------------------- config, data
def test_yaml_config_cli_and_exports():
    recipe = PPORecipe.from_yaml(PPO_TINY, max_steps=3)
    assert recipe.config.max_steps == 3 and recipe.config.critic == "adapter"
    assert recipes()["ppo"] is PPORecipe
    with pytest.raises(ValueError, match="unknown key"):
        PPORecipe.from_yaml(PPO_TINY, not_a_field=1)
    with pytest.raises(ValueError, match="critic"):
        PPORecipeConfig(critic="twin", output_dir="x")


def test_prompt_validation_names_the_row(tmp_path):
    tokenizer = load_tokenizer("rlhf-hf/tiny")
    ok = {"prompt": "sort 3 1 2"}
    with pytest.raises(ValueError, match="missing column 'prompt'"):
        validate_prompts(Dataset.from_list([{"question": "sort 1 2"}]), tokenizer, max_prompt_length=32)
    with pytest.raises(ValueError, match="row 1: field 'prompt' is empty"):
        validate_prompts(Dataset.from_list([ok, {"prompt": "  "}]), tokenizer, max_prompt_length=32)
    long = Dataset.from_list([ok, ok, {"prompt": "sort " + " ".join(["1"] * 40)}])
    with pytest.raises(
        ValueError, match=r"row 2: field 'prompt' is \d+ tokens, longer than max_prompt_length=32"
    ):
        validate_prompts(long, tokenizer, max_prompt_length=32)
    messages = Dataset.from_list([{"prompt": [{"role": "user", "content": "sort 1 2"}]}, {"prompt": []}])
    with pytest.raises(ValueError, match="row 1"):
        validate_prompts(messages, tokenizer, max_prompt_length=32)
    # Through the recipe: the error comes before any model is loaded (the reward path does not even exist).
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [ok, ok, ok, {"prompt": ""}]))
    cfg = make_config("rlhf-hf/tiny", tmp_path / "missing-rm", tmp_path / "out", dataset_name=str(data))
    with pytest.raises(
        ValueError, match=r"prompts.jsonl: 1 bad row .*\n  row 3 \(line 4\): field 'prompt' is empty"
    ):
        PPORecipe(cfg).run()


def test_output_dir_protection(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    cfg = make_config("rlhf-hf/tiny", tmp_path, out, overwrite_output_dir=False)
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        PPORecipe(cfg).run()
    assert (out / "keep.txt").exists()


# ---------------------------------------------------------------------------------------------- roles
def test_reference_logprobs_equal_the_sft_model(sft_dir, rm_dir, prompts, tmp_path):
    cfg = make_config(sft_dir, rm_dir, tmp_path)
    tokenizer = load_tokenizer(str(sft_dir))
    model = build_ppo_model(cfg, tokenizer.pad_token_id)
    batch = encode_prompts(tokenizer, prompts["prompt"][:6])
    ids, mask, width = batch["input_ids"], batch["attention_mask"], 4
    labels = ids[:, -width:]
    with torch.no_grad():
        ref = core.logprobs_from_logits(model.reference(ids, mask, width), labels)
        policy = core.logprobs_from_logits(model.policy(ids, mask, width)[0], labels)
        sft = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32)
        logits = sft(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
        expected = core.logprobs_from_logits(logits[:, -width - 1 : -1], labels)
    # Two computations of the same fp32 log-probs (PEFT-wrapped base with adapters off + a head on the sliced
    # hidden states, vs the plain model's full forward): kernels may sum in another order, so they agree to a few
    # ulps of |logit| <= ~30 through 4 layers, not bit for bit. torch's float32 defaults (rtol 1.3e-6, atol 1e-5)
    # are that bound; a wrong position or model would be off by > 0.1.
    torch.testing.assert_close(ref, expected)
    # LoRA B = 0: PPO starts at the SFT policy
    torch.testing.assert_close(policy, expected)


def test_value_function_starts_as_the_reward_model(sft_dir, rm_dir, tmp_path):
    cfg = make_config(sft_dir, rm_dir, tmp_path)
    tokenizer = load_tokenizer(str(sft_dir))
    model = build_ppo_model(cfg, tokenizer.pad_token_id)
    ids = tokenizer(["<|user|> sort 3 1 <|end|> <|assistant|> 1 3 <|end|>"], return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        score = model.scores(ids, mask)
        value = model.values(ids, mask, 1)  # value at the state before the last token = hidden[-2]
        value_last = model.values(torch.cat([ids, ids[:, :1]], 1), torch.cat([mask, mask[:, :1]], 1), 1)
    assert value.shape == (1, 1)
    # V starts as the RM, on the scale of the normalised score that the returns are built from
    stats = model.reward_stats
    # the same head on the same hidden state through an affine map: fp32 rounding only (torch's fp32 defaults)
    torch.testing.assert_close(value_last[0, 0], (score[0] - stats["mean"]) / stats["std"])
    assert score.abs().item() > 0


def test_one_update_trains_policy_and_value_only(sft_dir, rm_dir, prompts, tmp_path):
    trainer = make_trainer(make_config(sft_dir, rm_dir, tmp_path), prompts)
    model: PPOModel = trainer.roles
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    policy = {n for n in before if f".{POLICY}." in n}
    value = {n for n in before if f".{VALUE}." in n} | {"value_head.weight"}
    # Both trainable adapters learn in the same update (the lora_A of each changes; lora_B starts at 0 for
    # the policy and moves too) ...
    assert {n for n in policy if "lora_B" in n} <= changed
    assert {n for n in value if "lora_A" in n} <= changed and "value_head.weight" in changed
    # ... and nothing else moves: base weights, the reward adapter and the reward head are bit-identical.
    assert changed <= policy | value
    assert not any(f".{REWARD}." in n or "reward_head" in n for n in changed)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == names  # routing left grads alone
    assert names == policy | value


def test_merged_generation_samples_the_same_and_restores_the_base(sft_dir, rm_dir, prompts, tmp_path):
    trainer = make_trainer(make_config(sft_dir, rm_dir, tmp_path), prompts)
    trainer.train()  # a non-zero policy delta
    model = trainer.roles
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    batch = encode_prompts(trainer.processing_class, prompts["prompt"][:8])
    outs = []
    for merge in (False, True):
        torch.manual_seed(0)
        outs.append(
            model.generate(batch["input_ids"], batch["attention_mask"], trainer.generation_config, merge)
        )
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora" not in n)


def test_generation_in_chunks_pads_and_scores_every_row(sft_dir, rm_dir, prompts, tmp_path, monkeypatch):
    cfg = make_config(sft_dir, rm_dir, tmp_path, generation_batch_size=3, max_new_tokens=12)
    trainer = make_trainer(cfg, prompts)
    lm, calls = trainer.roles.causal_lm, []
    generate = lm.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        calls.append((kwargs["input_ids"].shape[0], out.shape[1] - kwargs["input_ids"].shape[1]))
        return out

    monkeypatch.setattr(lm, "generate", spy)
    torch.manual_seed(0)
    rollout = trainer.rollout(list(prompts.select(range(8))["prompt"]))
    assert [n for n, _ in calls] == [3, 3, 2]  # three generate calls, the KV cache of 3 rows at most
    assert rollout.answer_width == max(width for _, width in calls)
    lengths = rollout.answer_mask.sum(1)
    assert (lengths >= 1).all() and (lengths <= rollout.answer_width).all()
    pad = trainer.processing_class.pad_token_id
    assert (rollout.answer_ids[rollout.answer_mask == 0] == pad).all()
    assert torch.isfinite(rollout.logprobs).all() and torch.isfinite(rollout.raw_scores).all()


# ---------------------------------------------------------------------------------------------- rollouts
def test_static_cache_samples_the_same_answers_from_fixed_width_prompts(sft_dir, rm_dir, prompts, tmp_path):
    """`cache_implementation: static` (compiled decoding on a GPU) pads prompts to max_prompt_length: the same
    answers, log-probs, values and scores as the default, from one fixed shape."""
    batch = list(prompts.select(range(8))["prompt"])
    out = {}
    for impl in (None, "static"):
        cfg = make_config(sft_dir, rm_dir, tmp_path / str(impl), cache_implementation=impl)
        trainer = make_trainer(cfg, prompts)
        torch.manual_seed(0)
        out[impl] = trainer.rollout(batch)
    dynamic, static = out[None], out["static"]
    assert static.input_ids.shape[1] == cfg.max_prompt_length + static.answer_width
    assert dynamic.input_ids.shape[1] < static.input_ids.shape[1]
    assert torch.equal(dynamic.answer_ids, static.answer_ids)
    for name in ("logprobs", "ref_logprobs", "values", "raw_scores"):
        # other padding widths change the attention kernels' summation order: fp32 rounding (torch's defaults)
        torch.testing.assert_close(getattr(dynamic, name), getattr(static, name), msg=name)


def test_pad_equal_to_eos_scores_what_the_reward_model_scores(sft_dir, rm_dir, prompts, tmp_path):
    tokenizer = load_tokenizer(str(sft_dir))
    tokenizer.pad_token = tokenizer.eos_token  # the ambiguous case: "first pad" would be the eos itself
    cfg = make_config(sft_dir, rm_dir, tmp_path, max_new_tokens=10, per_device_train_batch_size=8)
    trainer = make_trainer(cfg, prompts, tokenizer)
    torch.manual_seed(0)
    rollout = trainer.rollout(prompts["prompt"][:16])
    lengths = rollout.answer_mask.sum(1).long()
    assert (lengths < rollout.answer_width).any(), "need answers that ended early and were padded with eos"
    # Reference: the RM stage's own scoring of the same conversations, with the same tokenizer (pad == eos).
    rm = PeftModel.from_pretrained(load_classifier(str(sft_dir), dtype=torch.float32), str(rm_dir)).eval()
    texts = [
        tokenizer.decode(rollout.answer_ids[i, : lengths[i]], skip_special_tokens=True).strip()
        for i in range(16)
    ]
    expected = score(rm, tokenizer, prompts["prompt"][:16], texts)
    # the same conversations batched with other padding widths: fp32 rounding of the same model
    torch.testing.assert_close(rollout.raw_scores, torch.tensor(expected), atol=1e-5, rtol=1.3e-6)
    for i in range(16):
        row = rollout.input_ids[i][rollout.attention_mask[i].bool()]
        eos_count = int((row[-int(lengths[i]) :] == tokenizer.eos_token_id).sum())
        assert eos_count == int(rollout.has_eos[i])  # exactly the answer's own eos is inside the mask


def test_score_shaping(sft_dir, rm_dir, prompts, tmp_path):
    cfg = make_config(sft_dir, rm_dir, tmp_path, reward_clip=1.0, missing_eos_penalty=0.5)
    trainer = make_trainer(cfg, prompts)
    stats = trainer.roles.reward_stats
    raw = torch.tensor([stats["mean"], stats["mean"] + 0.5 * stats["std"], stats["mean"] + 10 * stats["std"]])
    shaped = trainer.shape_scores(raw, torch.tensor([True, False, True]))
    # (x - mean) / std in fp32 against exact hand values: a few ulps (torch's fp32 defaults)
    torch.testing.assert_close(shaped, torch.tensor([0.0, 0.0, 1.0]))


def test_entropy_temperature_scales_row_by_row():
    logits = torch.randn(2, 3, 5)
    torch.testing.assert_close(core.entropy_from_logits(logits, 0.5), core.entropy_from_logits(logits / 0.5))


# ---------------------------------------------------------------------------------------------- options
def test_ptx_and_early_stop_and_logging(sft_dir, rm_dir, prompts, tmp_path):
    cfg = make_config(
        sft_dir, rm_dir, tmp_path, ptx_coef=0.5, ptx_batch_size=4, target_approx_kl=0.0, num_ppo_epochs=3
    )
    ptx = load_split(cfg.ptx_dataset_name, "train")
    trainer = make_trainer(cfg, prompts, ptx=ptx)
    trainer.train()
    (log,) = updates(trainer)
    assert math.isfinite(log["ptx/loss"]) and log["ptx/loss"] > 0
    # Epoch 1's only minibatch runs before any optimizer step (approx KL exactly 0); epoch 2's is > 0: stop.
    assert log["policy/ppo_epochs"] == 2
    for key in (
        "objective/scores",
        "objective/rlhf_reward",
        "objective/kl",
        "objective/entropy",
        "policy/clipfrac",
        "policy/approxkl",
        "loss/policy",
        "loss/value",
        "val/explained_variance",
        "beta",
        "answer/mean_length",
        "answer/eos_fraction",
        "perf/generated_tokens_per_s",
        "perf/seconds_per_update",
        "perf/seconds_generate",
        "perf/seconds_score",
        "perf/seconds_ppo_epochs",
    ):
        assert key in log and math.isfinite(log[key]), key
    parts = [log[f"perf/seconds_{k}"] for k in ("generate", "score", "ppo_epochs")]
    assert min(parts) > 0 and sum(parts) <= log["perf/seconds_per_update"]  # the breakdown of one update
    assert trainer.ptx_stream.position == 4 * 2 * 2  # a ptx batch of 4 per microbatch (2 per epoch, 2 epochs)


def test_adaptive_kl_changes_beta(sft_dir, rm_dir, prompts, tmp_path):
    cfg = make_config(
        sft_dir, rm_dir, tmp_path, adaptive_kl=True, kl_coef=0.1, kl_target=1e-6, kl_horizon=10, max_steps=2
    )
    trainer = make_trainer(cfg, prompts)
    trainer.train()
    betas = [h["beta"] for h in updates(trainer)]
    # the logged beta is the one the update used; the controller moves it after each batch
    assert betas[0] == 0.1 and trainer.kl_ctl.value != 0.1


def test_critic_head_smoke(sft_dir, rm_dir, prompts, tmp_path):
    trainer = make_trainer(make_config(sft_dir, rm_dir, tmp_path, critic="head"), prompts)
    head = trainer.roles.value_head.weight.detach().clone()
    assert not any(f".{VALUE}." in n for n, _ in trainer.roles.named_parameters())
    trainer.train()
    assert not torch.equal(head, trainer.roles.value_head.weight)
    assert math.isfinite(updates(trainer)[0]["loss/value"])


@pytest.mark.parametrize("bits", [8, 4])
def test_memory_path_one_kbit_base_paged_adamw_and_checkpointing(sft_dir, rm_dir, prompts, tmp_path, bits):
    """The 24 GB-GPU settings on CPU: one 8/4-bit base for all four roles, paged 8-bit AdamW, checkpointing."""
    cfg = make_config(
        sft_dir,
        rm_dir,
        tmp_path,
        critic="head",  # checkpointing re-runs forwards in backward: one adapter per pass
        gradient_checkpointing=True,
        optim="paged_adamw_8bit",
        **{f"load_in_{bits}bit": True},
    )
    trainer = make_trainer(cfg, prompts)
    model = trainer.roles
    quantized = [m for m in model.modules() if type(m).__module__.startswith("bitsandbytes")]
    layers = model.causal_lm.config.num_hidden_layers
    assert len(quantized) == 7 * layers  # q k v o gate up down, once: the roles share one base
    optimizer = trainer.optimizer.optimizer  # under Accelerate's wrapper
    assert (type(optimizer).__module__, optimizer.args.optim_bits, optimizer.is_paged) == (
        "bitsandbytes.optim.adamw",
        8,
        True,
    )
    assert model.causal_lm.is_activation_checkpointing
    policy_before = [p.detach().clone() for p in model.adapter_parameters(POLICY)]
    head_before = model.value_head.weight.detach().clone()
    trainer.train()
    assert any(
        not torch.equal(a, b) for a, b in zip(policy_before, model.adapter_parameters(POLICY), strict=True)
    )
    assert not torch.equal(head_before, model.value_head.weight)
    assert math.isfinite(updates(trainer)[0]["loss/total"])


def test_full_reward_model_and_model_critic_smoke(sft_dir, rm_dir, rm_full_dir, prompts, tmp_path):
    cfg = make_config(sft_dir, rm_full_dir, tmp_path / "a", critic="model")
    trainer = make_trainer(cfg, prompts)
    assert trainer.roles.reward_model is not None and trainer.roles.value_model is not None
    reward = snapshot(trainer.roles.reward_model)
    value = snapshot(trainer.roles.value_model)
    torch.manual_seed(0)
    scores_full = trainer.rollout(prompts["prompt"][:4]).raw_scores
    trainer.train()
    assert all(torch.equal(v, trainer.roles.reward_model.state_dict()[k]) for k, v in reward.items())
    assert any(not torch.equal(v, trainer.roles.value_model.state_dict()[k]) for k, v in value.items())
    # The full RM and the adapter RM are the same model: same scores for the same answers.
    adapter = make_trainer(make_config(sft_dir, rm_dir, tmp_path / "b"), prompts)
    torch.manual_seed(0)
    scores_adapter = adapter.rollout(prompts["prompt"][:4]).raw_scores
    # A merged full RM vs base + LoRA adapter: W + BA rounded once into the weights vs added at run time, so the
    # scores differ by the rounding of the merged weights (~1e-7 relative each) summed over the network: 1e-4.
    torch.testing.assert_close(scores_full, scores_adapter, atol=1e-4, rtol=1.3e-6)
    # critic: adapter next to a full reward model: a fresh value adapter, head from the RM's score
    mixed = make_trainer(make_config(sft_dir, rm_full_dir, tmp_path / "c"), prompts)
    mixed.train()
    assert math.isfinite(updates(mixed)[0]["loss/value"])


# ---------------------------------------------------------------------------------------------- checkpoints
def test_resume_continues_the_same_run(sft_dir, rm_dir, prompts, tmp_path):
    common = dict(
        max_steps=4, save_strategy="steps", save_steps=2, adaptive_kl=True, ptx_coef=0.1, ptx_batch_size=2
    )
    ptx = load_split("rlhf-hf/tiny-sort-corpus", "train")
    straight = make_trainer(make_config(sft_dir, rm_dir, tmp_path / "straight", **common), prompts, ptx=ptx)
    straight.train()
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert {"policy", "value", "optimizer.pt", "scheduler.pt", "rng_state.pth", "ppo_state.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
    resumed = make_trainer(make_config(sft_dir, rm_dir, tmp_path / "resumed", **common), prompts, ptx=ptx)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = updates(straight), updates(resumed)
    assert [h["step"] for h in b] == [1, 2, 3, 4]

    def comparable(h: dict) -> dict:
        return {k: v for k, v in h.items() if not k.startswith("perf/")}

    assert [comparable(h) for h in a] == [comparable(h) for h in b]
    final_a = load_file(tmp_path / "straight" / "checkpoint-4" / "policy" / "adapter_model.safetensors")
    final_b = load_file(tmp_path / "resumed" / "checkpoint-4" / "policy" / "adapter_model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


class Killed(Exception):
    """Stands for a kill -9 in the middle of writing a checkpoint."""


def test_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(
    sft_dir, rm_dir, prompts, tmp_path, monkeypatch
):
    """Killed between optimizer.pt and rng_state.pth of checkpoint-4: only checkpoint-2 is visible, resuming from
    "the last checkpoint" takes it and ends with the weights, metrics and samples of the uninterrupted run."""
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, sample_every=1)
    straight = make_trainer(make_config(sft_dir, rm_dir, tmp_path / "straight", **common), prompts)
    straight.train()
    out = tmp_path / "killed"
    save_rng_state = PPOTrainer._save_rng_state

    def killed_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise Killed
        save_rng_state(self, output_dir)

    monkeypatch.setattr(PPOTrainer, "_save_rng_state", killed_at_step_4)
    with pytest.raises(Killed):
        make_trainer(make_config(sft_dir, rm_dir, out, **common), prompts).train()
    monkeypatch.undo()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    partial = out / STAGING_DIR / "checkpoint-4"
    assert (partial / "optimizer.pt").exists() and not (partial / "rng_state.pth").exists()
    samples = [json.loads(line)["step"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(samples)) == [1, 2, 3, 4]

    resumed = make_trainer(make_config(sft_dir, rm_dir, out, **common), prompts)
    resumed.train(resume_from_checkpoint=True)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / STAGING_DIR).exists()
    for name in ("policy/adapter_model.safetensors", "value/adapter_model.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoint-4" / name)
        b = load_file(out / "checkpoint-4" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the replayed updates 3 and 4 log their samples once, the same rows as the uninterrupted run's
    assert (out / "samples.jsonl").read_text() == (tmp_path / "straight" / "samples.jsonl").read_text()

    def comparable(h: dict) -> dict:
        return {k: v for k, v in h.items() if not k.startswith("perf/")}

    assert [comparable(h) for h in updates(resumed)] == [comparable(h) for h in updates(straight)]


# ---------------------------------------------------------------------------------------------- the recipe
def test_recipe_writes_outputs(sft_dir, rm_dir, tmp_path):
    from rlhf_hf.cli import main

    out = tmp_path / "ppo"
    args = ["ppo", "--config", str(PPO_TINY), "--model_name_or_path", str(sft_dir)]
    args += [
        "--reward_model_path",
        str(rm_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--save_steps",
        "1",
    ]
    args += ["--eval_gold_prompts", "8", "--sample_every", "1", "--report_to", "tensorboard"]
    assert main(args) == 0
    for name in ("policy/adapter_config.json", "value/value_head.safetensors", "merged/config.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"score_first", "score_last", "kl_last", "gold_score", "gold_score_before"} <= set(metrics)
    history = json.loads((out / "log_history.json").read_text())
    assert [h["step"] for h in history if "objective/kl" in h] == [1, 2]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all("answer" in s for s in samples)
    events = list(out.rglob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = [EventAccumulator(str(e)).Reload().Tags() for e in events]
    assert any("samples/text_summary" in tags["tensors"] for tags in logged)  # the sample table, every step
    assert any("train/objective/kl" in tags["scalars"] for tags in logged)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.config.vocab_size > 0
    assert len(list(out.glob("checkpoint-*"))) == 1  # save_total_limit: 1
    # chat/generate/export accept the stage dir, the policy adapter (base and tokenizer resolved) and merged/
    answers = {}
    for path in (out, out / POLICY, out / "merged"):
        model, tokenizer = load_for_inference(str(path))
        answers[path.name] = generate(model, tokenizer, ["sort 3 1 2", "order 5 4"], max_new_tokens=6)
    assert answers[out.name] == answers[POLICY] == answers["merged"]


@pytest.mark.slow
def test_ppo_tiny_raises_the_reward_with_bounded_kl(sft_dir, rm_dir, tmp_path):
    """The default recipe (40 updates): the RM score of the last updates is above the first, KL stays small.

    Scores are normalised by the RM's std; KL is in nats per answer. On the gold judge (greedy, 200 held-out
    prompts) the policy must not get grossly worse. Measured with the lock (2026-12-01, same bits on two machines):
    RM score 0.11 -> 0.50, KL 0.68, gold 0.986 -> 0.977, exact 0.805 -> 0.745. It is not better either: PPO fixes
    some of SFT's mistakes and makes new ones the RM cannot see (#12, benchmarks/DIAGNOSIS.md). With the fixture's
    earlier, undertrained RM (200 steps) gold fell to 0.961 and this assertion failed.
    """
    recipe = PPORecipe.from_yaml(
        PPO_TINY,
        model_name_or_path=str(sft_dir),
        reward_model_path=str(rm_dir),
        output_dir=str(tmp_path / "ppo"),
        eval_gold_prompts=200,
    )
    metrics = recipe.run().metrics
    print(json.dumps(metrics, indent=2))
    assert metrics["score_last"] > metrics["score_first"] + 0.15
    assert metrics["raw_score_last"] > metrics["raw_score_first"]
    assert 0 < metrics["kl_last"] < 5.0
    assert metrics["gold_score"] >= metrics["gold_score_before"] - 0.02  # no gross reward hacking
