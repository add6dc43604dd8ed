"""Two CPU processes (torchrun, gloo) give the same result as one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import ROOT, SFT_TINY_YAML


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], nproc: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={_free_port()}",
    ]
    cmd = (launcher if nproc > 1 else [sys.executable]) + args
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_sft_two_processes_match_one(tmp_path, tiny_base):
    # No pre-training evaluation here: with an eval set evaluated before training, the 2-process run's first
    # gradients differ from the 1-process run's (under investigation, see the scale issue); training itself matches.
    common = [
        "recipes/sft.py",
        "--config",
        str(SFT_TINY_YAML),
        "--max_steps",
        "4",
        "--use_cpu",
        "true",
        "--eval_gold_prompts",
        "0",
        "--merge",
        "false",
        "--dataloader_drop_last",
        "true",
        "--dataset_test_split",
        "none",
        "--eval_fraction",
        "0",
    ]
    _run(
        [
            *common,
            "--per_device_train_batch_size",
            "16",
            "--gradient_accumulation_steps",
            "2",
            "--output_dir",
            str(tmp_path / "one"),
        ],
        1,
    )
    _run(
        [
            *common,
            "--per_device_train_batch_size",
            "8",
            "--gradient_accumulation_steps",
            "2",
            "--output_dir",
            str(tmp_path / "two"),
        ],
        2,
    )
    one, two = _adapter(tmp_path / "one"), _adapter(tmp_path / "two")
    assert one.keys() == two.keys()
    moved = max(one[k].abs().max().item() for k in one if "lora_B" in k)
    assert moved > 1e-3  # it trained (lora_B starts at zero)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4
