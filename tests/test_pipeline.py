"""The whole recipe: rounds of sample -> rank -> RM -> PPO, human ranking round trip, resume of finished stages."""

from __future__ import annotations

import json

import pytest
import yaml
from paths import ROOT

from rlhf_hf.cli import main
from rlhf_hf.pipeline import PausedForRanking, PipelineConfig, RLHFPipeline
from rlhf_hf.reward.collect import import_ranked

CONFIGS = ROOT / "recipes" / "configs"


def _config(tmp_path, **top) -> PipelineConfig:
    """A quick version of pipeline_tiny.yaml: short stages, few prompts."""
    values = {
        "run_dir": str(tmp_path / "run"),
        "rounds": 1,
        "task": "tiny-sort",
        "rank_prompts": 48,
        "eval_prompts": 32,
        "sft": {"config": str(CONFIGS / "sft_tiny.yaml"), "max_steps": 30, "eval_gold_prompts": 0},
        "reward": {"config": str(CONFIGS / "reward_tiny.yaml"), "eval_gold_prompts": 0},
        "ppo": {
            "config": str(CONFIGS / "ppo_tiny.yaml"),
            "max_steps": 4,
            "save_steps": 2,
            "save_total_limit": None,
            "per_device_train_batch_size": 8,
            "eval_gold_prompts": 0,
            "ptx_coef": 0.05,
        },
        **top,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(values))
    return PipelineConfig.from_yaml(path)


def test_two_rounds_chain_the_stages_and_write_the_report(tmp_path, tiny_base):
    summary = RLHFPipeline(_config(tmp_path, rounds=2)).run()
    run = tmp_path / "run"
    for stage in (
        "sft/merged",
        "round_1/reward",
        "round_1/ppo/merged",
        "round_2/reward",
        "round_2/ppo/merged",
    ):
        assert (run / stage).is_dir(), stage
    # round 2: comparisons sampled from round 1's policy are added to round 1's, the policy continues round 1's
    round_1 = (run / "round_1" / "reward_data.jsonl").read_text().splitlines()
    round_2 = (run / "round_2" / "reward_data.jsonl").read_text().splitlines()
    assert len(round_2) > len(round_1) and round_2[: len(round_1)] == round_1
    ppo_2 = json.loads((run / "round_2" / "ppo" / "checkpoint-2" / "trainer_state.json").read_text())
    assert ppo_2["global_step"] == 2
    table = summary["table"]
    policies = ("sft", "ppo_round_1", "ppo_round_2")
    assert list(table) == [f"{p} {d}" for p in policies for d in ("greedy", "sampled")] + [
        "best-of-4",
        "best-of-16",
    ]
    for name, row in table.items():  # every row has every metric: the task has a judge and there is an RM
        assert set(row) >= {"gold_score", "exact", "win_rate_gold", "rm_score", "win_rate_rm", "kl"}, name
    assert table["sft greedy"]["win_rate_gold"] == 0.5 and table["sft sampled"]["win_rate_rm"] == 0.5
    assert table["sft greedy"]["kl"] == table["sft sampled"]["kl"] == 0.0  # one KL per model
    assert table["ppo_round_2 greedy"]["kl"] == table["ppo_round_2 sampled"]["kl"] > 0
    assert summary["headline"] == {
        "decoding": "greedy",
        "baseline": "sft greedy",
        "policy": "ppo_round_2 greedy",
    }
    assert 0.0 <= summary["rm_gold_pair_accuracy"] <= 1.0 and isinstance(summary["seconds"], float)
    curve = summary["overoptimisation"]
    assert [p["update"] for p in curve] == [0, 2, 4]
    # update 0 is the policy round 2 started from, round 1's: the same answers as its table rows
    for decoding in ("greedy", "sampled"):
        for metric in ("gold_score", "rm_score", "length"):
            assert curve[0][decoding][metric] == table[f"ppo_round_1 {decoding}"][metric]
    assert curve[0]["kl"] == table["ppo_round_1 sampled"]["kl"]
    for point in curve:
        assert set(point) == {"update", "kl", "greedy", "sampled"} and "gold_score" in point["greedy"]
    for png in ("overoptimisation.png", "training_curves.png"):
        assert (run / "eval" / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "summary.json").read_text())["table"] == table
    # `rlhf-hf eval` re-evaluates the finished run from its directory alone (same seeds: same numbers)
    (run / "eval" / "evaluation.json").unlink()
    assert main(["eval", "--run", str(run)]) == 0
    again = json.loads((run / "eval" / "evaluation.json").read_text())
    assert again["table"] == table  # the very same computation: exactly


def test_finished_stages_are_skipped_on_rerun_unless_forced(tmp_path, tiny_base):
    config = _config(tmp_path)
    RLHFPipeline(config).run()
    run = tmp_path / "run"
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("**/metrics.json")}
    again = RLHFPipeline(config)
    again.run()
    assert {p: p.stat().st_mtime_ns for p in run.glob("**/metrics.json")} == stamps
    assert [name for name, *_ in again.timings if "skipped" in name] == [
        "1. SFT (skipped)",
        "1. reward model (skipped)",
        "1. PPO (skipped)",
    ]


def test_human_ranking_round_trip_pauses_and_resumes(tmp_path, tiny_base):
    config = _config(tmp_path, labeller="human")
    with pytest.raises(PausedForRanking, match="ranked.jsonl"):
        RLHFPipeline(config).run()
    round_dir = tmp_path / "run" / "round_1"
    exported = [json.loads(line) for line in (round_dir / "to_rank.jsonl").read_text().splitlines()]
    assert exported and all(row["ranks"] == {} for row in exported)
    for row in exported:  # a "person" ranks by length, shortest first (ties share a rank)
        lengths = sorted({len(r["response"]) for r in row["responses"]})
        row["ranks"] = {r["id"]: lengths.index(len(r["response"])) + 1 for r in row["responses"]}
    (round_dir / "ranked.jsonl").write_text("".join(json.dumps(row) + "\n" for row in exported))
    summary = RLHFPipeline(config).run()
    comparisons = [json.loads(line) for line in (round_dir / "comparisons.jsonl").read_text().splitlines()]
    assert comparisons == import_ranked(round_dir / "ranked.jsonl")
    assert (round_dir / "ppo" / "metrics.json").exists() and "gold_score" in summary["table"][
        "ppo_round_1 greedy"
    ]


def test_unknown_pipeline_key_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("rounds: 1\nround: 2\n")
    with pytest.raises(ValueError, match="round"):
        PipelineConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("section", "key", "hint"),
    [
        ("sft", "lerning_rate", "learning_rate"),
        ("reward", "sample_kk", "sample_k"),
        ("ppo", "ptx_coeff", "ptx_coef"),
    ],
)
def test_a_typo_in_any_stage_section_fails_before_any_stage_runs(tmp_path, section, key, hint):
    """Named with the pipeline file, the section and the nearest key, not blamed on the stage YAML."""
    config = _config(tmp_path, **{})
    getattr(config, section)[key] = 1
    with pytest.raises(
        ValueError, match=rf"pipeline.yaml, section `{section}`: {section} config: unknown key"
    ):
        RLHFPipeline(config).run()
    with pytest.raises(ValueError, match=rf"\['{key}'\] \({key}: did you mean {hint}\?\)"):
        RLHFPipeline(config).run()
    assert not (tmp_path / "run").exists()


def test_a_typo_in_a_stage_yaml_or_a_bad_value_names_its_file(tmp_path):
    stage_yaml = tmp_path / "my_ppo.yaml"
    stage_yaml.write_text((CONFIGS / "ppo_tiny.yaml").read_text() + "kl_coeff: 0.1\n")
    config = _config(tmp_path)
    config.ppo["config"] = str(stage_yaml)
    with pytest.raises(
        ValueError, match=r"section `ppo`: .*my_ppo.yaml: ppo config: unknown key\(s\) \['kl_coeff'\]"
    ):
        RLHFPipeline(config).run()
    config = _config(tmp_path)
    config.reward["learning_rate"] = "fast"
    with pytest.raises(ValueError, match=r"pipeline.yaml, section `reward`: .*fast"):
        RLHFPipeline(config).run()
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "sort 2 1"}\n')
    config = _config(tmp_path, prompts_dataset=str(texts))
    with pytest.raises(
        ValueError, match=r"prompts_dataset: .*texts.jsonl' needs a train split with a `prompt` col"
    ):
        RLHFPipeline(config).run()
    assert not (tmp_path / "run").exists()


def test_a_typo_in_a_stage_yaml_on_the_command_line_names_file_key_and_hint(tmp_path):
    bad = tmp_path / "ppo.yaml"
    bad.write_text((CONFIGS / "ppo_tiny.yaml").read_text() + "ptx_coeff: 0.1\n")
    with pytest.raises(ValueError, match=r"ppo.yaml: ppo config: unknown key\(s\) \['ptx_coeff'\]") as err:
        main(["ppo", "--config", str(bad)])
    assert "did you mean ptx_coef?" in str(err.value) and "fail_with_unknown_args" not in str(err.value)


def test_reward_section_dataset_trains_the_rm_instead_of_sampling(tmp_path, monkeypatch):
    """`reward: {dataset_name, dataset_format}` in the pipeline YAML: round 1's RM reads that data (no sampling or
    ranking) and every round's PPO uses it; `sft: {dataset_format: oasst1}` reaches the SFT stage."""
    fixtures = ROOT / "tests" / "fixtures" / "reward"
    built = []

    def record(self, name, out, build):
        built.append((name, build().config))
        return {}

    monkeypatch.setattr(RLHFPipeline, "_run_stage", record)
    monkeypatch.setattr(
        RLHFPipeline, "comparisons", lambda *a: pytest.fail("sampled despite a reward dataset")
    )
    monkeypatch.setattr("rlhf_hf.pipeline.evaluate_run", lambda *a, **k: {"prompts": 0})
    monkeypatch.setattr(RLHFPipeline, "print_summary", lambda self, summary: None)
    config = _config(tmp_path, rounds=2)
    config.sft.update(dataset_name=str(fixtures / "oasst1.jsonl"), dataset_format="oasst1")
    config.reward.update(dataset_name=str(fixtures / "shp.jsonl"), dataset_format="shp")
    RLHFPipeline(config).run()
    names = [name for name, _ in built]
    assert names == ["1. SFT", "1. reward model", "1. PPO", "2. PPO"]
    sft, reward, ppo1, ppo2 = (cfg for _, cfg in built)
    assert (sft.dataset_format, reward.dataset_format, reward.labeller) == ("oasst1", "shp", None)
    assert reward.dataset_name == str(fixtures / "shp.jsonl")
    assert ppo1.reward_model_path == ppo2.reward_model_path == str(tmp_path / "run" / "round_1" / "reward")


def test_reward_dataset_format_without_a_dataset_is_refused(tmp_path):
    config = _config(tmp_path)
    config.reward["dataset_format"] = "ultrafeedback"
    with pytest.raises(ValueError, match="reward.dataset_format describes reward.dataset_name"):
        RLHFPipeline(config)


def test_ppo_samples_at_the_runs_one_training_temperature(tmp_path):
    """The comparisons, PPO's samples and the report's sampled column share `sample_temperature`: PPO gets it
    over its stage YAML's (ppo_tiny.yaml says 1.0), and a different ppo.temperature is an error before any stage."""
    pipeline = RLHFPipeline(_config(tmp_path, sample_temperature=0.7))
    recipe = pipeline._ppo_recipe(tmp_path / "ppo", "sft", tmp_path / "rm", "rlhf-hf/tiny-sort-prompts")
    assert recipe.config.temperature == 0.7
    config = _config(tmp_path, sample_temperature=0.7)
    config.ppo["temperature"] = 1.0
    with pytest.raises(
        ValueError, match=r"pipeline.yaml: ppo.temperature = 1.0 differs from sample_temperature"
    ):
        RLHFPipeline(config).run()
    assert not (tmp_path / "run").exists()


def test_every_comparison_so_far_trains_the_rm_whatever_the_stage_configs_max_prompts(tmp_path):
    """`max_prompts` in a reward stage config caps the prompts that stage ranks when run alone; the pipeline's RM
    trains on all the comparisons its rounds added up. A user's preference dataset keeps the cap."""
    config = _config(tmp_path, rounds=2)
    config.reward["max_prompts"] = 5
    pipeline = RLHFPipeline(config)
    round_dir = tmp_path / "run" / "round_2"
    recipe = pipeline._reward_recipe(round_dir / "reward", "sft", pipeline._reward_data(round_dir))
    assert recipe.config.max_prompts is None
    assert recipe.config.dataset_name == str(round_dir / "reward_data.jsonl")
    config.reward.update(
        dataset_name=str(ROOT / "tests" / "fixtures" / "reward" / "shp.jsonl"), dataset_format="shp"
    )
    recipe = pipeline._reward_recipe(round_dir / "reward", "sft", pipeline._reward_data(round_dir))
    assert recipe.config.max_prompts == 5
