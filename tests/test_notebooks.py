"""The notebooks run top to bottom: the walkthrough on the embedded chat task (greedy and sampled results side by
side), the consumer-GPU one on the tiny sort default in 8-bit."""

from __future__ import annotations

import json
import math

import nbformat
import pytest
from nbclient import NotebookClient
from paths import ROOT


def _execute(name: str, parameters: str, tmp_path) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert nb.cells[1].source.startswith("# Parameters")  # the tests own this cell
    nb.cells[1].source = parameters
    NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return nb


def _last_json(nb: nbformat.NotebookNode) -> dict:
    for cell in reversed(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                for line in reversed(output.text.strip().splitlines()):
                    if line.startswith("{"):
                        return json.loads(line)
    raise AssertionError("the notebook printed no results")


@pytest.mark.slow  # the demo's recipe on the chat task, step by step: ~3 minutes on 2 cores
def test_walkthrough_notebook_runs_and_rlhf_improves_the_greedy_answer(tmp_path, tiny_chat_base):
    nb = _execute(
        "01_rlhf_walkthrough.ipynb", f'RUN_DIR = "{tmp_path}"\nSEED = 0\nPPO_UPDATES = 30', tmp_path
    )
    r = _last_json(nb)
    print(r)  # shown when an assertion fails
    # within a prompt the reward model scores a right answer above a wrong one (demo seeds: 0.56-0.80)
    assert r["rm_prefers_right"] > 0.5
    assert r["rm_score_last"] > r["rm_score_first"]  # PPO raised the proxy reward ...
    # ... and the gold score, served greedily and at T = 0.7. Measured 2026-12-02 with the demo's config (value head,
    # kl 0.5): 0.793 -> 0.799 greedy, 0.761 -> 0.773 at T = 0.7 (the previous config, adapter critic and kl 1.0: +0.022
    # / +0.020); must-refuse refused 0.73 -> 0.90 greedy, 0.70 -> 0.87 at T = 0.7; exact 0.485 -> 0.46 and win rate
    # 0.485 greedy (lists lose, as in the demo), reported, not asserted. The notebook's reward model is its own draw
    # (its comparisons, its split), so its gain is not the demo's; 200 prompts resolve differences of ~0.01.
    for decoding in ("greedy", "sampled"):
        assert r[f"gold_ppo_{decoding}"] > r[f"gold_sft_{decoding}"], decoding
    for decoding in ("greedy", "sampled"):
        assert r[f"refused_ppo_{decoding}"] > r[f"refused_sft_{decoding}"] + 0.05, decoding
    assert 0 < r["kl"] < 3
    for name in ("best_of_4", "best_of_16"):  # reported beside PPO
        assert 0 < r[f"gold_{name}"] <= 1 and 0 <= r[f"exact_{name}"] <= 1
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # reward histogram, PPO curves, SFT vs PPO bars


CONSUMER_GPU_TINY = """TINY = True
MODEL = "rlhf-hf/tiny"
SFT_DATASET, SFT_SPLIT = "rlhf-hf/tiny-sort-sft", "train"
PREFERENCE_DATASET = None
PROMPT_DATASET, PROMPT_SPLIT = "rlhf-hf/tiny-sort-prompts", "train"
MAX_ROWS = 600
LOAD_IN_8BIT, LOAD_IN_4BIT = True, False
PPO_UPDATES = 3
RUN_DIR = "{run_dir}"
SEED = 0"""


def test_consumer_gpu_notebook_runs_all_three_steps_in_8bit(tmp_path, tiny_base):
    nb = _execute("02_consumer_gpu.ipynb", CONSUMER_GPU_TINY.format(run_dir=tmp_path), tmp_path)
    r = _last_json(nb)
    assert r["sft_eval_loss"] < r["sft_eval_loss_before"]  # SFT on the 8-bit base learned
    assert r["rm_pair_accuracy"] > 0.6  # the 8-bit reward model ranks held-out answers better than chance
    assert r["ppo_updates"] == 3 and math.isfinite(r["ppo_score_last"]) and math.isfinite(r["ppo_kl_last"])
    assert r["int8_linear_layers"] > 0  # the base really was loaded in 8-bit ...
    assert r["footprint_quantised_mb"] < 0.8 * r["footprint_full_mb"]  # ... and is smaller for it
    for step in ("sft", "reward", "ppo"):
        assert (tmp_path / step / "metrics.json").exists()
    assert (tmp_path / "ppo" / "policy" / "adapter_model.safetensors").exists()
