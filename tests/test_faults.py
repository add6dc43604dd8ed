"""Fault injection (#14): PPO killed with SIGKILL at random points, resumed each time, ends as an uninterrupted run.

Slow (several process starts): `pytest -m slow tests/test_faults.py`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ppo_fixtures
import pytest
import torch
from paths import ROOT
from safetensors.torch import load_file

from rlhf_hf.outputs import MARKER, STAGING_DIR, last_complete_checkpoint

KILLS = 5
STEPS = 8


def _command(out: Path, *extra: str) -> list[str]:
    settings = {
        "model_name_or_path": ppo_fixtures.sft_model(),
        "reward_model_path": ppo_fixtures.reward_adapter(),
        "output_dir": out,
        "max_steps": STEPS,
        "save_steps": 1,
        "save_total_limit": 2,
        "sample_every": 1,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "num_mini_batches": 1,
        "num_ppo_epochs": 2,
        "max_new_tokens": 8,
        "lora_r": 4,
        "lora_alpha": 8,
        "ptx_coef": 0.1,
        "ptx_batch_size": 2,
        "adaptive_kl": "true",
        "eval_gold_prompts": 0,
        "merge": "false",
        "disable_tqdm": "true",
    }
    flags = [x for key, value in settings.items() for x in (f"--{key}", str(value))]
    config = str(ROOT / "recipes" / "configs" / "ppo_tiny.yaml")
    return [sys.executable, "-m", "rlhf_hf.cli", "ppo", "--config", config, *flags, *extra]


def _run(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # output to a file, not a pipe: a full pipe would block the child (the child keeps its own copy open)
    with open(out.parent / f"{out.name}.log", "a") as log:
        return subprocess.Popen(_command(out, *extra), env=env, stdout=log, stderr=subprocess.STDOUT)


def _tail(out: Path) -> str:
    return (out.parent / f"{out.name}.log").read_text()[-3000:]


def _restart(out: Path) -> subprocess.Popen:
    """What a user does after a crash: resume from the last complete checkpoint, or start over without one."""
    if last_complete_checkpoint(out) is not None:
        return _run(out, "--resume_from_checkpoint", "true")
    return _run(out, "--overwrite_output_dir", "true")


@pytest.mark.slow
def test_ppo_killed_at_random_points_resumes_to_the_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    start = time.time()
    proc = _run(straight)
    while not (straight / MARKER).exists() and proc.poll() is None:  # imports and data checks done
        time.sleep(0.05)
    startup = time.time() - start
    assert proc.wait(timeout=1800) == 0, _tail(straight)
    training = time.time() - start - startup

    out, rng, kills = tmp_path / "killed", random.Random(14), []
    proc = _run(out)
    while len(kills) < KILLS:
        # a random point of what is left of loading + training, so that kills spread over the updates
        done = int(Path(last_complete_checkpoint(out) or "checkpoint-0").name.split("-")[1])
        delay = startup + rng.uniform(0.0, training * (STEPS - done + 1) / (STEPS + 1))
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(
                (
                    round(delay - startup, 1),
                    sorted(p.name for p in out.glob("checkpoint-*")),
                    sorted(p.name for p in out.glob(f"{STAGING_DIR}/*")),
                )
            )
        else:  # finished before the kill: start over, every kill must land in a run
            assert proc.returncode == 0, _tail(out)
            shutil.rmtree(out)
            proc = _run(out)
            continue
        proc = _restart(out)
    assert proc.wait(timeout=1800) == 0, _tail(out)
    print("kills (seconds into loading + training, checkpoints, temp dirs):", kills)

    for name in ("policy/adapter_model.safetensors", "value/adapter_model.safetensors"):
        a, b = load_file(straight / name), load_file(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (out / "samples.jsonl").read_text() == (straight / "samples.jsonl").read_text()

    def updates(run: Path) -> list[dict]:
        history = json.loads((run / "log_history.json").read_text())
        return [
            {k: v for k, v in h.items() if not k.startswith("perf/")} for h in history if "objective/kl" in h
        ]

    assert len(updates(out)) == STEPS and updates(out) == updates(straight)
