"""DeepSpeed ZeRO on the CPU (DeepSpeed's CPU accelerator, gloo), through `accelerate launch` and our config files.

`make install` installs `deepspeed` (for pip users it is the extra `rlhf-hf[deepspeed]`); without it these tests
skip. They are marked slow (`make test-slow`, which CI runs). On a CPU the recipes need
`--use_cpu true` (else Trainer counts one process and DeepSpeed rejects the batch size) and `--mixed_precision no`
(the configs ask for bf16, which the recipes only turn on where a GPU supports it).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from paths import ROOT, SFT_TINY_YAML
from test_distributed import (
    PPO_DRIVER,
    PPO_TINY_YAML,
    REWARD_TINY_YAML,
    _adapter,
    _free_port,
    _max_diff,
    _metrics,
    _moved,
    _run,
)

pytestmark = [
    pytest.mark.slow,  # ~2.5 min of multi-process launches: `make test-slow`
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason="deepspeed is not installed (`make install` installs it; or pip install 'rlhf-hf[deepspeed]')",
    ),
]


def _launch(config: str, nproc: int, args: list[str]) -> None:
    """`accelerate launch` with one of our `recipes/accelerate/*.yaml` files, on the CPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "recipes" / "accelerate" / f"{config}.yaml"),
        "--num_processes",
        str(nproc),
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
        *args,
        "--use_cpu",
        "true",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _full_shapes(adapter: dict[str, torch.Tensor]) -> bool:
    """ZeRO-3 saves gathered weights: no empty (still partitioned) tensor may reach the file."""
    return all(t.numel() > 0 and t.dim() == 2 for t in adapter.values())


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_sft_under_deepspeed_on_two_cpu_processes(tmp_path, tiny_base, stage):
    out = tmp_path / stage
    _launch(
        stage,
        2,
        [
            "recipes/sft.py",
            "--config",
            str(SFT_TINY_YAML),
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--eval_gold_prompts",
            "20",
            "--output_dir",
            str(out),
        ],
    )
    adapter = _adapter(out)
    assert _full_shapes(adapter) and _moved(adapter) > 1e-4
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["gold_score"] <= 1  # gold eval on the merged model, main process only
    assert (out / "merged" / "model.safetensors").exists()


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_reward_model_under_deepspeed_on_two_cpu_processes(tmp_path, tiny_base, stage):
    import ppo_fixtures

    out = tmp_path / "reward"
    _launch(
        stage,
        2,
        [
            "recipes/reward.py",
            "--config",
            str(REWARD_TINY_YAML),
            "--model_name_or_path",
            str(ppo_fixtures.sft_model()),
            "--max_prompts",
            "64",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "8",
            "--dataset_test_split",
            "none",
            "--eval_fraction",
            "0",
            "--eval_gold_prompts",
            "0",
            "--output_dir",
            str(out),
        ],
    )
    adapter = _adapter(out)
    assert _full_shapes(adapter) and any(".score." in k for k in adapter)
    assert _moved(adapter) > 1e-4  # it trained (lora_B starts at zero)
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["std"] > 0


# ------------------------------------------------------------------------------------------------ PPO
def _ppo_args(driver, rlhf_inputs, out, **flags: str) -> list[str]:
    """The tiny PPO run of test_distributed (per-prompt sampling seeds, fixed answer lengths, 3 updates)."""
    sft_dir, reward_dir = rlhf_inputs
    flags = {
        "config": str(PPO_TINY_YAML),
        "model_name_or_path": str(sft_dir),
        "reward_model_path": str(reward_dir),
        "max_steps": "3",
        "num_mini_batches": "1",
        "min_new_tokens": "8",
        "max_new_tokens": "8",
        "save_steps": "2",
        "save_total_limit": "none",
        "eval_gold_prompts": "0",
        "merge": "false",
        "output_dir": str(out),
    } | flags
    return [str(driver)] + [part for key, value in flags.items() for part in (f"--{key}", value)]


def _history(run) -> list[dict]:
    rows = json.loads((run / "log_history.json").read_text())
    return [h for h in rows if "objective/scores" in h]


@pytest.fixture(scope="module")
def ppo_setup(tiny_base, tmp_path_factory):
    """(driver script, (SFT dir, RM adapter dir), the plain 1-process run's output dir), built once."""
    import ppo_fixtures

    root = tmp_path_factory.mktemp("ppo_ds")
    driver = root / "ppo_driver.py"
    driver.write_text(PPO_DRIVER)
    inputs = (ppo_fixtures.sft_model(), ppo_fixtures.reward_adapter())
    one = root / "one"
    _run(
        _ppo_args(
            driver,
            inputs,
            one,
            per_device_train_batch_size="16",
            gradient_accumulation_steps="2",
            use_cpu="true",
        ),
        1,
    )
    return driver, inputs, one


@pytest.mark.parametrize(
    ("stage", "batch", "accumulation"),
    [("zero2", "8", "2"), ("zero3", "16", "1")],  # 2 processes x batch x accumulation = 32 rows per step
)
def test_ppo_under_deepspeed_matches_one_process(tmp_path, ppo_setup, stage, batch, accumulation):
    driver, inputs, one = ppo_setup
    out = tmp_path / stage
    flags = {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation}
    _launch(stage, 2, _ppo_args(driver, inputs, out, **flags))
    for part in ("policy", "value"):
        mine = _adapter(out / part)
        assert _full_shapes(mine)  # ZeRO-3: gathered before saving
        assert _max_diff(_adapter(one / part), mine) < 1e-5, part
    assert _moved(_adapter(one / "policy")) > 1e-4
    for a, b in zip(_history(one), _history(out), strict=True):
        for key in a:
            if not key.startswith("perf/"):
                assert abs(a[key] - b[key]) < 1e-4 * max(1.0, abs(a[key])), (a["step"], key, a[key], b[key])
    # DeepSpeed's checkpoint holds the trainable weights and optimizer shards, not the frozen base.
    checkpoint = out / "checkpoint-2"
    engine_dir = next(checkpoint.glob("global_step*"))
    base_bytes = (inputs[0] / "model.safetensors").stat().st_size
    model_bytes = sum(f.stat().st_size for f in engine_dir.glob("*model_states.pt"))
    assert 0 < model_bytes < base_bytes / 2
    assert len(list(engine_dir.glob("zero_pp_rank_*_optim_states.pt"))) == 2
    if stage == "zero3":  # resuming from checkpoint-2 continues the same run, exactly
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        shutil.copytree(checkpoint, resumed / checkpoint.name)
        args = _ppo_args(driver, inputs, resumed, **flags, resume_from_checkpoint="true")
        _launch(stage, 2, [*args, "--overwrite_output_dir", "false"])
        for part in ("policy", "value"):
            assert _max_diff(_adapter(out / part), _adapter(resumed / part)) == 0.0, part

        def last(run) -> dict:
            return {k: v for k, v in _history(run)[-1].items() if not k.startswith("perf/")}

        assert last(resumed) == last(out)


def test_ppo_zero3_full_model_critic_gold_eval_and_merge(tmp_path, ppo_setup):
    """`critic: model` merges the RM adapter into a whole classifier, and the main process evaluates and merges
    whole copies: three places where ZeRO-3's empty shards would break a naive load."""
    driver, inputs, _ = ppo_setup
    out = tmp_path / "critic_model"
    flags = {
        "critic": "model",
        "max_steps": "1",
        "save_steps": "100",
        "per_device_train_batch_size": "16",
        "eval_gold_prompts": "16",
        "merge": "true",
    }
    _launch("zero3", 2, _ppo_args(driver, inputs, out, **flags))
    from safetensors.torch import load_file

    value = load_file(str(out / "value" / "model.safetensors"))
    assert any(k.startswith("score.") for k in value) and all(t.numel() > 0 for t in value.values())
    metrics = _metrics(out)
    assert metrics["gold_score_before"] > 0.5 and metrics["gold_score"] > 0.5  # the SFT fixture scores ~0.9
    assert (out / "merged" / "model.safetensors").exists()


def test_ppo_zero2_on_an_8bit_base(tmp_path, ppo_setup):
    """ZeRO-2 shards optimizer state and gradients only, so a bitsandbytes base works (ZeRO-3 refuses it)."""
    driver, inputs, _ = ppo_setup
    out = tmp_path / "zero2_8bit"
    flags = {
        "load_in_8bit": "true",
        "max_steps": "1",
        "save_steps": "100",
        "per_device_train_batch_size": "16",
    }
    _launch("zero2", 2, _ppo_args(driver, inputs, out, **flags))
    assert _moved(_adapter(out / "policy")) > 0
    assert all(math.isfinite(v) for v in _history(out)[0].values())


def test_ppo_zero3_full_reward_model_seeds_a_whole_value_head(tmp_path, ppo_setup):
    """A full reward classifier loads as ZeRO-3 shards; the value head copied from its `score` must be whole."""
    import ppo_fixtures
    from safetensors.torch import load_file

    driver, inputs, _ = ppo_setup
    out = tmp_path / "full_rm"
    flags = {
        "reward_model_path": str(ppo_fixtures.reward_full()),
        "critic": "head",
        "max_steps": "1",
        "save_steps": "100",
        "per_device_train_batch_size": "16",
    }
    _launch("zero3", 2, _ppo_args(driver, inputs, out, **flags))
    head = load_file(str(out / "value" / "value_head.safetensors"))["weight"]
    hidden = json.loads((inputs[0] / "config.json").read_text())["hidden_size"]
    assert head.shape == (1, hidden) and head.abs().sum() > 0
