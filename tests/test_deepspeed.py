"""DeepSpeed ZeRO on the CPU (DeepSpeed's CPU accelerator, gloo), through `accelerate launch` and our config files.

`deepspeed` is the optional extra `rlhf-hf[deepspeed]`: without it these tests skip. On a CPU the recipes need
`--use_cpu true` (else Trainer counts one process and DeepSpeed rejects the batch size) and `--mixed_precision no`
(the configs ask for bf16, which the recipes only turn on where a GPU supports it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SFT_TINY_YAML
from test_distributed import REWARD_TINY_YAML, _adapter, _free_port, _moved

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (optional extra: pip install 'rlhf-hf[deepspeed]')",
)


def _launch(config: str, nproc: int, args: list[str]) -> None:
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


def test_reward_model_under_zero3_on_two_cpu_processes(tmp_path, tiny_base):
    import ppo_fixtures

    out = tmp_path / "reward"
    _launch(
        "zero3",
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
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["std"] > 0
