"""`make demo`'s promise: on the embedded default, PPO beats SFT on the gold judge, for every seed."""

from __future__ import annotations

import json

import pytest

from rlhf_hf.demo import run_demo


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_improves_on_sft_for_every_seed(seed, tmp_path, tiny_base):
    summary = run_demo(tmp_path / "demo", seed=seed, force=True)
    written = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for key in ("gold_score_sft", "gold_score_ppo", "rm_accuracy", "win_rate_vs_sft", "kl", "seconds"):
        assert key in written, key
    assert summary["gold_score_ppo"] > summary["gold_score_sft"] + 0.03
    assert summary["gold_exact_ppo"] > summary["gold_exact_sft"] + 0.08
    assert summary["win_rate_vs_sft"] > 0.58
    assert summary["rm_accuracy"] > 0.7
    assert 0 < summary["kl"] < 5  # improved without running away from the SFT model
    assert (tmp_path / "demo" / "eval" / "overoptimisation.png").exists()
