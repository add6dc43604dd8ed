"""Config parsing: YAML + CLI overrides through TRL's parser, unknown keys rejected, CPU-safe defaults."""

from __future__ import annotations

import importlib.util

import pytest
from paths import ROOT, SFT_TINY_YAML

from rlhf_hf import SFTRecipe, SFTRecipeConfig
from rlhf_hf.cli import main


def test_yaml_fields_reach_the_trl_configs():
    cfg = SFTRecipe.from_yaml(SFT_TINY_YAML).config
    assert isinstance(cfg, SFTRecipeConfig)
    assert cfg.learning_rate == 0.002 and cfg.max_length == 64  # SFTConfig / TrainingArguments fields
    assert cfg.lora_r == 16 and cfg.model_name_or_path == "rlhf-hf/tiny"  # trl.ModelConfig fields
    assert cfg.merge is True and cfg.dataset_name == "rlhf-hf/tiny-sort-sft"  # our own


def test_keyword_overrides_beat_the_file():
    cfg = SFTRecipe.from_yaml(SFT_TINY_YAML, learning_rate=0.5, lora_r=4, output_dir="/tmp/x").config
    assert (cfg.learning_rate, cfg.lora_r, cfg.output_dir) == (0.5, 4, "/tmp/x")


def test_cli_flags_override_the_yaml():
    cfg = SFTRecipe.parse_args(
        ["--config", str(SFT_TINY_YAML), "--learning_rate", "0.01", "--merge", "false"]
    )
    assert cfg.learning_rate == 0.01 and cfg.merge is False


@pytest.mark.parametrize(
    ("flag", "expected"), [("true", True), ("last", True), ("runs/x/checkpoint-4", "runs/x/checkpoint-4")]
)
def test_resume_flag_true_means_the_last_checkpoint(flag, expected):
    # `Trainer.train(resume_from_checkpoint="true")` would look for a directory called "true".
    cfg = SFTRecipe.parse_args(["--config", str(SFT_TINY_YAML), "--resume_from_checkpoint", flag])
    assert cfg.resume_from_checkpoint == expected


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SFT_TINY_YAML.read_text() + "learning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        SFTRecipe.from_yaml(bad)
    with pytest.raises(ValueError, match="learning_rat"):
        SFTRecipe.parse_args(["--config", str(bad)])


def test_unknown_override_and_cli_flag_are_errors():
    with pytest.raises(ValueError, match="lora_rank"):
        SFTRecipe.from_yaml(SFT_TINY_YAML, lora_rank=8)
    with pytest.raises((ValueError, SystemExit)):
        SFTRecipe.parse_args(["--config", str(SFT_TINY_YAML), "--no_such_flag", "1"])


def test_cpu_defaults_do_not_ask_for_bf16():
    import torch

    cfg = SFTRecipeConfig(output_dir="/tmp/x")
    assert cfg.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert cfg.assistant_only_loss and cfg.use_peft  # loss on answers only, LoRA by default


def test_recipe_rejects_a_foreign_config():
    with pytest.raises(TypeError):
        SFTRecipe(object())


def test_cli_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "sft" in capsys.readouterr().out
    assert main(["fly"]) == 2


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_kbit_base_under_zero3_is_refused_before_loading(monkeypatch):
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # what `accelerate launch --config_file recipes/accelerate/zero3.yaml` sets for the training script
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    try:
        with pytest.raises(ValueError, match="cannot be sharded by DeepSpeed ZeRO-3"):
            SFTRecipe.from_yaml(SFT_TINY_YAML, load_in_8bit=True)
    finally:
        unset_hf_deepspeed_config()  # no process-wide ZeRO-3 flag may leak into later tests


@pytest.mark.parametrize("recipe", ["sft", "reward", "ppo"])
@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ({}, None),  # the stage's default
        ({"activation_checkpointing": True}, True),  # transformers' current name
        # the name older YAMLs use (the shipped YAMLs write the current one: unset it as such a YAML would)
        ({"gradient_checkpointing": True, "activation_checkpointing": None}, True),
        ({"gradient_checkpointing": True, "activation_checkpointing": False}, False),  # the current name wins
    ],
)
def test_either_checkpointing_name_works_without_a_future_warning(recipe, written, expected):
    import warnings

    from rlhf_hf import PPORecipe, RewardRecipe

    cls = {"sft": SFTRecipe, "reward": RewardRecipe, "ppo": PPORecipe}[recipe]
    overrides = dict(written)
    if recipe == "ppo":
        overrides["critic"] = "head"  # PPO refuses activation checkpointing with the adapter critic
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        cfg = cls.from_yaml(ROOT / "recipes" / "configs" / f"{recipe}_tiny.yaml", **overrides).config
    if expected is not None:
        assert cfg.activation_checkpointing is expected
    assert cfg.gradient_checkpointing is cfg.activation_checkpointing  # transformers mirrors the old name


def test_pipeline_cli_overrides_any_top_level_key_of_its_yaml(monkeypatch):
    """`rlhf-hf pipeline` is parsed like a stage (TrlParser): the YAML gives defaults, every key is a flag."""
    import rlhf_hf.pipeline as pipeline_module

    seen = {}

    class Recorder:
        def __init__(self, config):
            seen["config"] = config

        def run(self):
            pass

    monkeypatch.setattr(pipeline_module, "RLHFPipeline", Recorder)
    yaml_file = ROOT / "recipes" / "configs" / "pipeline_tiny.yaml"
    assert main(["pipeline", "--config", str(yaml_file), "--sample_k", "8", "--rounds", "2", "--force"]) == 0
    config = seen["config"]
    assert (config.sample_k, config.rounds, config.force) == (8, 2, True)
    assert config.rank_prompts == 600 and config.ppo["ptx_coef"] == 0.05  # the rest from the file
    assert config.config_dir == str(yaml_file.parent)  # stage `config:` paths resolve next to the YAML
    with pytest.raises(SystemExit):
        main(["pipeline", "--config", str(yaml_file), "--sample_kk", "8"])
