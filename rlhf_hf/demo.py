"""`make demo`: the whole recipe on the embedded chat task, on CPU, with a table of what each stage did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .pipeline import RLHFPipeline

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "demo_chat.yaml"


def run_demo(run_dir: str | Path = "runs/demo", seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Pretrain (cached) -> SFT -> sample + rank (simulated labeller) -> reward model -> PPO (with ptx) -> eval.

    Writes `<run_dir>/summary.json` and the PNG curves under `<run_dir>/eval/`; prints the evaluation table
    (greedy and sampled rows, best-of-n), the stage table and a headline that leads with the greedy result.
    Re-running skips finished stages; `force=True` starts over.
    """
    import time

    from .tasks import TINY_CHAT_MODEL_ID, embedded_model_is_built, embedded_model_path

    # the base of demo_chat.yaml's SFT stage, pretrained once (cached) here so its time is not charged to SFT
    start, cached = time.time(), embedded_model_is_built(TINY_CHAT_MODEL_ID)
    embedded_model_path(TINY_CHAT_MODEL_ID)
    pipeline = RLHFPipeline.from_yaml(DEMO_CONFIG, run_dir=str(run_dir), seed=seed, **overrides)
    pipeline.timings.append(
        ("0. pretrain tiny-chat base", time.time() - start, "cached" if cached else "built")
    )
    return pipeline.run()
