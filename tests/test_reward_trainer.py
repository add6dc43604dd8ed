"""Reward-model stage: ranked trainer (loss, one forward per answer, mixed K), validation, artifacts, sampling.

Model-free parts (data formats, ranked_loss, metrics, JSONL round trip) are tested in test_reward_data.py.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForSequenceClassification

from rlhf_hf import RewardRecipe, RewardRecipeConfig
from rlhf_hf.cli import recipes
from rlhf_hf.reward.collect import export_for_ranking, import_ranked
from rlhf_hf.reward.loss import ranked_loss
from rlhf_hf.reward.model import load_reward_model, pad_right, score
from rlhf_hf.reward.sampling import drop_empty_answers, rank_with, sample_answers
from rlhf_hf.reward.trainer import RankedCollator, RankedRewardTrainer, prepare_ranked
from rlhf_hf.tasks import SimulatedLabeller
from rlhf_hf.tasks.tiny.model import TINY_CONFIG, build_tokenizer
from rlhf_hf.tasks.tiny_sort import DEFAULT_TASK

ROOT = Path(__file__).resolve().parents[1]
REWARD_TINY_YAML = ROOT / "recipes" / "configs" / "reward_tiny.yaml"
# Losses below are float32 means of a few log-sigmoids (|loss| < 1): within a few ulps (~1e-7) of the exact
# values, so abs=1e-6 leaves 8x headroom and still catches any wrong pair or weight.
NLL_1_0 = math.log(1 + math.exp(-1.0))  # -log sigmoid(1.0)
NLL_0_5 = math.log(1 + math.exp(-0.5))


# ---------------------------------------------------------------------------------------------- helpers
def tiny_classifier(seed: int = 0) -> LlamaForSequenceClassification:
    """A randomly initialised tiny Llama with a scalar head: enough to exercise the trainer, no pretraining."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=1, **TINY_CONFIG
    )
    return LlamaForSequenceClassification(config)


def ranked_rows(n: int, k: int = 3, seed: int = 0) -> list[dict]:
    """Sort-task prompts with K answers (the sorted one and corruptions), ranked by the noiseless gold judge."""
    rng = random.Random(seed)
    prompts = DEFAULT_TASK.prompts(n, seed)
    rows = []
    for prompt in prompts:
        best = DEFAULT_TASK.digits_of(prompt)
        answers = [" ".join(sorted(best))] + [" ".join(DEFAULT_TASK.corrupt(best, rng)) for _ in range(k - 1)]
        rows.append({"prompt": prompt, "responses": answers})
    return rank_with(SimulatedLabeller(DEFAULT_TASK.score, noise=0.0), rows)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_trainer(tmp_path: Path, rows: list[dict], **args) -> RankedRewardTrainer:
    defaults = dict(per_device_train_batch_size=2, max_length=64, save_strategy="no", report_to="none")
    config = RewardRecipeConfig(
        output_dir=str(tmp_path / "trainer"), disable_tqdm=True, use_cpu=True, **{**defaults, **args}
    )
    tokenizer = build_tokenizer()
    return RankedRewardTrainer(
        model=tiny_classifier(),
        args=config,
        train_dataset=prepare_ranked(rows, tokenizer, max_length=64).dataset,
        processing_class=tokenizer,
    )


def recipe(tmp_path: Path, model: Path | str, data: Path, **overrides) -> RewardRecipe:
    values = dict(
        model_name_or_path=str(model),
        dataset_name=str(data),
        output_dir=str(tmp_path / "rm"),
        eval_fraction=0.2,
        max_length=64,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        lora_r=4,
        lora_alpha=8,
    )
    return RewardRecipe.from_dict({**values, **overrides})


# ---------------------------------------------------------------------------------------------- loss / batching
def test_compute_loss_hand_value_with_tie(tmp_path):
    trainer = make_trainer(tmp_path, ranked_rows(2))
    batch = trainer.data_collator(
        [{"answer_ids": [[5, 6], [5, 7, 8], [5]], "ranks": [1, 2, 2], "scores": [math.nan] * 3}]
    )
    fixed = torch.tensor([[2.0], [1.0], [1.5]], requires_grad=True)
    stub = lambda **_: SimpleNamespace(logits=fixed)  # noqa: E731 - a model that returns fixed rewards
    loss = trainer.compute_loss(stub, batch)
    # ranks [1, 2, 2]: pairs (0, 1) and (0, 2); the tie (1, 2) is no pair
    assert loss.item() == pytest.approx((NLL_1_0 + NLL_0_5) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.3936693, abs=1e-6)


def test_compute_loss_matches_ranked_loss_on_model_rewards(tmp_path):
    trainer = make_trainer(tmp_path, ranked_rows(2))
    batch = trainer.data_collator(trainer.train_dataset.select(range(2)))
    loss = trainer.compute_loss(trainer.model, dict(batch))
    rewards = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected, _ = ranked_loss(rewards, batch["group_sizes"], batch["ranks"])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_each_answer_forwarded_once_with_mixed_k(tmp_path):
    rows = ranked_rows(2, k=3) + ranked_rows(2, k=2, seed=1)  # K=3, K=3, K=2, K=2
    trainer = make_trainer(tmp_path, rows, max_steps=2, per_device_train_batch_size=4)
    forwarded: list[int] = []
    trainer.model.model.register_forward_hook(
        lambda mod, args, out: forwarded.append(out.last_hidden_state.shape[0])
    )
    trainer.train()
    # all 4 prompts in each step's batch: 3 + 3 + 2 + 2 answers, each exactly once (pairwise: 2 * 8 = 16 rows)
    assert forwarded == [10, 10]


def test_an_answer_repeated_within_a_prompt_is_forwarded_once_and_the_loss_is_unchanged(tmp_path):
    trainer = make_trainer(tmp_path, ranked_rows(2))
    # the K = 5 a confident policy samples: the same answers again and again (different prompts never share a row)
    rows = [
        {
            "prompt": "sort 3 1 2",
            "responses": ["1 2 3", "1 3", "1 2 3", "3 1 2", "1 3"],
            "ranks": [1, 2, 1, 3, 2],
        },
        {"prompt": "sort 5 4", "responses": ["4 5", "4 5", "5", "4 5", "4 4 5"], "ranks": [1, 1, 3, 1, 2]},
    ]
    prepared = prepare_ranked(rows, build_tokenizer(), max_length=64).dataset
    batch = trainer.data_collator(prepared)
    assert batch["input_ids"].shape[0] == 6  # 3 distinct answers per prompt, not 5
    assert batch["answer_rows"].tolist() == [0, 1, 0, 2, 1, 3, 3, 4, 3, 5]
    assert batch["group_sizes"].tolist() == [5, 5]

    trainer.model.eval()  # no dropout: both forwards compute the same function
    loss = trainer.compute_loss(trainer.model, dict(batch))
    pad = trainer.processing_class.pad_token_id
    every = pad_right([ids for row in prepared["answer_ids"] for ids in row], pad)  # each of the 10 forwarded
    rewards = trainer.model(**every).logits
    expected, _ = ranked_loss(rewards, batch["group_sizes"], batch["ranks"])
    # float32 rewards of the same tokens in differently padded batches: equal to ~1e-7; abs=1e-6 as above
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_ranked_rows_batch_by_length_by_default(tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    rows = ranked_rows(6)
    prepared = prepare_ranked(rows, build_tokenizer(), max_length=64).dataset
    assert prepared["length"] == [max(map(len, ids)) for ids in prepared["answer_ids"]]
    # a dataset tokenised elsewhere, without the column, gets it
    trainer = make_trainer(tmp_path, rows)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    bare = RankedRewardTrainer(
        model=tiny_classifier(),
        args=trainer.args,
        train_dataset=prepared.remove_columns("length"),
        processing_class=build_tokenizer(),
    )
    assert bare.train_dataset["length"] == prepared["length"]


def test_collator_mixed_k_right_pads_and_groups():
    collator = RankedCollator(pad_token_id=0)
    batch = collator(
        [
            {"answer_ids": [[4, 5, 6], [4, 5]], "ranks": [1, 2], "scores": [1.0, 0.0]},
            {"answer_ids": [[7], [8, 9], [9, 9, 9, 9]], "ranks": [2, 1, 2], "scores": [math.nan] * 3},
        ]
    )
    assert batch["group_sizes"].tolist() == [2, 3]
    assert batch["ranks"].tolist() == [1, 2, 2, 1, 2]
    assert batch["input_ids"].tolist()[1] == [
        4,
        5,
        0,
        0,
    ]  # right padding: the reward is read at the last real token
    assert batch["attention_mask"].sum(1).tolist() == [3, 2, 1, 2, 4]
    assert torch.isnan(batch["margin_scores"][2:]).all() and batch["margin_scores"][:2].tolist() == [1.0, 0.0]


def test_rewards_do_not_depend_on_padding():
    model, tokenizer = tiny_classifier().eval(), build_tokenizer()
    prompt, short, long = "sort 3 1 2", "1 2 3", "1 2 3 3 3 3 3 3"
    alone = score(model, tokenizer, [prompt], [short])
    batched = score(model, tokenizer, [prompt, prompt], [short, long])
    assert alone[0] == pytest.approx(batched[0], abs=1e-5)


# ---------------------------------------------------------------------------------------------- validation
BAD_ROWS = [
    ({"prompt": "sort 1 2", "answers": ["1 2", "2 1"]}, "row 1", "missing column"),
    ({"prompt": "sort 1 2", "responses": ["1 2"], "ranks": [1]}, "row 1", "'responses'"),
    ({"prompt": "sort 1 2", "responses": ["1 2", "  "], "ranks": [1, 2]}, "row 1", "'responses[1]'"),
    ({"prompt": "sort 1 2", "responses": ["1 2", "2 1"], "scores": [1.0, float("nan")]}, "row 1", "'scores'"),
    ({"prompt": "sort 1 2", "responses": ["1 2", "2 1"], "ranks": [1, "two"]}, "row 1", "'ranks'"),
    ({"prompt": "sort 1 2", "responses": ["1 2", "2 1"], "ranks": [1, 2, 3]}, "row 1", "'ranks'"),
    (
        {"prompt": "sort 1 2", "responses": ["1 2", " ".join(["1"] * 80)], "ranks": [1, 2]},
        "row 1",
        "'responses[1]'",
    ),
]


@pytest.mark.parametrize(("bad", "row", "field_name"), BAD_ROWS)
def test_bad_rows_raise_before_any_model_loads(tmp_path, tokenizer_dir, no_model_load, bad, row, field_name):
    good = {"prompt": "sort 2 1", "responses": ["1 2", "2 1"], "ranks": [1, 2]}
    data = tmp_path / "ranked.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError) as err:
        recipe(tmp_path, tokenizer_dir, data, eval_fraction=0.0).run()
    assert row in str(err.value) and field_name in str(err.value)
    assert not (tmp_path / "rm").exists()


def test_long_rows_dropped_with_a_count():
    rows = ranked_rows(3)
    rows[1]["responses"][2] = " ".join(["1"] * 80)
    prepared = prepare_ranked(rows, build_tokenizer(), max_length=64, drop_long_rows=True)
    assert prepared.dropped_too_long == [1] and len(prepared.dataset) == 2 == len(prepared.rows)


def test_all_tied_rows_dropped_or_refused():
    rows = ranked_rows(2)
    rows[0]["ranks"] = [1, 1, 1]
    prepared = prepare_ranked(rows, build_tokenizer(), max_length=64)
    assert prepared.report.n_dropped_all_tied == 1 and len(prepared.dataset) == 1
    with pytest.raises(ValueError, match=r"row 0: field 'ranks'"):
        prepare_ranked(rows, build_tokenizer(), max_length=64, ties="error")


def test_prompts_only_dataset_needs_a_labeller(tmp_path, tokenizer_dir, no_model_load):
    with pytest.raises(ValueError, match="labeller"):
        recipe(tmp_path, tokenizer_dir, "rlhf-hf/tiny-sort-prompts").run()


def test_existing_output_dir_is_protected(tmp_path, tokenizer_dir, no_model_load):
    data = write_jsonl(tmp_path / "ranked.jsonl", ranked_rows(4))
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        recipe(tmp_path, tokenizer_dir, data).run()
    assert (tmp_path / "rm" / "keep.txt").read_text() == "precious"


def test_config_yaml_cli_and_exports():
    assert recipes()["reward"] is RewardRecipe
    cfg = RewardRecipe.from_yaml(REWARD_TINY_YAML, learning_rate=1e-4).config
    assert cfg.labeller == "simulated" and cfg.sample_k == 4 and cfg.learning_rate == 1e-4
    with pytest.raises(ValueError, match="labeller"):
        RewardRecipe.from_yaml(REWARD_TINY_YAML, labeller="crowd")


# ---------------------------------------------------------------------------------------------- artifacts
def ranked_dataset_dir(tmp_path: Path, n_train: int = 40, n_test: int = 10) -> tuple[Path, list[dict]]:
    """A saved DatasetDict with explicit train/test splits; returns it and the train rows."""
    train, test = ranked_rows(n_train), ranked_rows(n_test, seed=1)
    path = tmp_path / "ranked"
    DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)}).save_to_disk(str(path))
    return path, train


def all_answers(rows: list[dict]) -> tuple[list, list]:
    return [r["prompt"] for r in rows for _ in r["responses"]], [a for r in rows for a in r["responses"]]


def test_artifact_contract_reload_and_stats(sft_run, tmp_path):
    _, sft_dir = sft_run
    data, train = ranked_dataset_dir(tmp_path)
    result = recipe(tmp_path, sft_dir, data, merge=True).run()
    out = Path(result.output_dir)

    names = (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "reward_stats.json",
        "metrics.json",
    )
    assert all((out / name).exists() for name in names)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    assert Path(adapter["base_model_name_or_path"]) == sft_dir.resolve()
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        assert any("score" in key for key in f.keys())  # noqa: SIM118 - safe_open is not iterable
    stats = json.loads((out / "reward_stats.json").read_text())
    assert set(stats) == {"mean", "std", "n", "reference"} and "train responses" in stats["reference"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(result.metrics)
    for key in ("eval_pairwise_accuracy", "eval_kendall_tau", "eval_reward_mean", "eval_reward_std"):
        assert math.isfinite(metrics[key])

    # the reloaded adapter dir scores the training responses as the trained model did: the same stats
    model, tokenizer, loaded_stats = load_reward_model(out)
    assert loaded_stats == stats
    prompts, responses = all_answers(train)
    rewards = torch.tensor(score(model, tokenizer, prompts, responses))
    assert stats["n"] == rewards.numel() == metrics["train_answers"]
    assert rewards.mean().item() == pytest.approx(stats["mean"], abs=1e-4)
    assert rewards.std(unbiased=False).item() == pytest.approx(stats["std"], abs=1e-4)

    merged, _, merged_stats = load_reward_model(out / "merged")
    assert merged_stats == stats and not (out / "merged" / "adapter_config.json").exists()
    assert score(merged, tokenizer, prompts, responses) == pytest.approx(rewards.tolist(), abs=1e-4)


def test_full_finetune_writes_a_full_model(sft_run, tmp_path):
    _, sft_dir = sft_run
    data, train = ranked_dataset_dir(tmp_path, n_train=16, n_test=4)
    out = Path(recipe(tmp_path, sft_dir, data, use_peft=False, max_steps=2).run().output_dir)
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    model, tokenizer, stats = load_reward_model(out)
    rewards = torch.tensor(score(model, tokenizer, *all_answers(train)))
    assert rewards.mean().item() == pytest.approx(stats["mean"], abs=1e-4)


@pytest.mark.parametrize("bits", [8, 4])
def test_kbit_base_trains_the_adapter_and_head(sft_run, tmp_path, bits):
    """QLoRA-style RM on an 8/4-bit base (TRL keeps the trainable weights in bf16: on CPU the recipe turns on
    bf16 autocast by itself)."""
    _, sft_dir = sft_run
    data, _ = ranked_dataset_dir(tmp_path, n_train=16, n_test=4)
    cfg = recipe(tmp_path, sft_dir, data, max_steps=2, **{f"load_in_{bits}bit": True}).config
    assert cfg.bf16 == (torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True)
    out = Path(RewardRecipe(cfg).run().output_dir)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
        head = [k for k in names if "score" in k]
        assert head and any("lora_" in k for k in names)
        assert f.get_tensor(head[0]).abs().sum() > 0


# ---------------------------------------------------------------------------------------------- sampling
def test_sample_export_rank_import_round_trip(sft_run, tmp_path):
    _, sft_dir = sft_run
    model, tokenizer = load_causal_lm_dir(sft_dir)
    prompts = [[{"role": "user", "content": p}] for p in DEFAULT_TASK.prompts(6, seed=3)]
    rows, _ = drop_empty_answers(sample_answers(model, tokenizer, prompts, 3, max_new_tokens=12, seed=0))
    assert rows and all(len(r["responses"]) >= 2 for r in rows)
    again, _ = drop_empty_answers(sample_answers(model, tokenizer, prompts, 3, max_new_tokens=12, seed=0))
    assert again == rows  # seeded

    path = export_for_ranking(rows, tmp_path / "to_rank.jsonl", seed=0)
    judge = SimulatedLabeller(DEFAULT_TASK.score, noise=0.0)
    filled = []
    for line in path.read_text().splitlines():  # a "human" fills in the ranks by response id
        record = json.loads(line)
        ids = [r["id"] for r in record["responses"]]
        ranks = judge(record["prompt"], [r["response"] for r in record["responses"]])
        filled.append(json.dumps({**record, "ranks": dict(zip(ids, ranks, strict=True))}))
    path.write_text("\n".join(filled) + "\n")

    imported = import_ranked(path)
    expected = rank_with(judge, rows)
    assert [(r["prompt"], r["responses"], r["ranks"]) for r in imported] == [
        (r["prompt"], r["responses"], r["ranks"]) for r in expected
    ]
    assert len(prepare_ranked(imported, tokenizer, max_length=64, ties="drop").rows) >= 1


def test_include_greedy_puts_the_served_answer_first_among_k(sft_run):
    """The greedy answer is one of the K (first), the other K-1 are the same seeded samples as without it."""
    from rlhf_hf.generation import generate

    _, sft_dir = sft_run
    model, tokenizer = load_causal_lm_dir(sft_dir)
    prompts = DEFAULT_TASK.prompts(5, seed=4)
    with_greedy = sample_answers(model, tokenizer, prompts, 3, max_new_tokens=12, seed=1, include_greedy=True)
    sampled_only = sample_answers(model, tokenizer, prompts, 2, max_new_tokens=12, seed=1)
    greedy = generate(model, tokenizer, prompts, max_new_tokens=12)
    assert [r["prompt"] for r in with_greedy] == prompts
    assert [r["responses"][0] for r in with_greedy] == greedy
    assert [r["responses"][1:] for r in with_greedy] == [r["responses"] for r in sampled_only]


def load_causal_lm_dir(path: Path):
    from transformers import AutoModelForCausalLM

    from rlhf_hf.modeling import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(path), load_tokenizer(str(path))


# ---------------------------------------------------------------------------------------------- acceptance
@pytest.mark.slow
def test_tiny_reward_model_gold_pair_accuracy(sft_run, tmp_path):
    """The embedded task end to end: K=4 samples of the SFT model, simulated labeller, >= 85% gold pairs."""
    _, sft_dir = sft_run
    result = RewardRecipe.from_yaml(
        REWARD_TINY_YAML, model_name_or_path=str(sft_dir), output_dir=str(tmp_path / "rm"), disable_tqdm=True
    ).run()
    metrics = result.metrics
    assert metrics["gold_pairs"] >= 300
    assert metrics["gold_pair_accuracy"] >= 0.85, metrics
    assert metrics["eval_pairwise_accuracy"] > 0.6 and metrics["eval_kendall_tau"] > 0.3
