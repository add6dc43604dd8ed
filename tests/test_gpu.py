"""What only a GPU shows, on the tiny fixtures: bf16 weights, bitsandbytes' CUDA kernels, compiled decoding.

Marked `gpu`: skipped where there is no CUDA device (CI). On a GPU machine: `pytest -m gpu`
(`bash benchmarks/gpu.sh gpu-tests` on the device machine).
"""

from __future__ import annotations

import math

import pytest
import torch
from test_ppo_trainer import make_config, make_trainer, updates

from rlhf_hf.ppo.roles import POLICY

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def inputs(tiny_base):
    import ppo_fixtures

    from rlhf_hf.data import load_split

    return (
        ppo_fixtures.sft_model(),
        ppo_fixtures.reward_adapter(),
        load_split("rlhf-hf/tiny-sort-prompts", "train"),
    )


def test_bf16_update_with_merged_generation_and_static_cache(inputs, tmp_path):
    sft_dir, rm_dir, prompts = inputs
    cfg = make_config(
        sft_dir,
        rm_dir,
        tmp_path,
        dtype="bfloat16",
        merge_adapter_for_generation=True,
        cache_implementation="static",
        max_steps=2,
    )
    assert cfg.bf16  # picked for a GPU that supports it
    trainer = make_trainer(cfg, prompts)
    model = trainer.roles
    assert next(model.causal_lm.parameters()).device.type == "cuda"
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n and "head" not in n}
    policy = [p.detach().clone() for p in model.adapter_parameters(POLICY)]
    trainer.train()
    for log in updates(trainer):
        assert all(math.isfinite(v) for k, v in log.items() if isinstance(v, float)), log
        assert log["perf/seconds_generate"] > 0
    # merging bf16 deltas in and out must leave the reference (the base) bit-identical
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(not torch.equal(a, b) for a, b in zip(policy, model.adapter_parameters(POLICY), strict=True))


@pytest.mark.parametrize("bits", [8, 4])
def test_kbit_base_with_paged_adamw_on_gpu(inputs, tmp_path, bits):
    sft_dir, rm_dir, prompts = inputs
    cfg = make_config(
        sft_dir,
        rm_dir,
        tmp_path,
        critic="head",
        gradient_checkpointing=True,
        optim="paged_adamw_8bit",
        **{f"load_in_{bits}bit": True},
    )
    trainer = make_trainer(cfg, prompts)
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    log = updates(trainer)[0]
    assert math.isfinite(log["loss/total"]) and math.isfinite(log["objective/kl"])
    assert trainer.optimizer.optimizer.is_paged
    assert torch.cuda.max_memory_allocated() < 2 * 2**30  # a 1 M-parameter model: no stray full-size copies
