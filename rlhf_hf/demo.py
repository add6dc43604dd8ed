"""`make demo`: the recipe on the embedded default, on CPU, with a table of what each stage did."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import AutoModelForCausalLM

from .evaluation import gold_eval
from .modeling import load_tokenizer
from .sft import SFTRecipe
from .tiny.model import get_tiny_base

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def run_demo(run_dir: str | Path = "runs/demo", seed: int = 0) -> dict:
    run_dir = Path(run_dir)
    rows: list[tuple[str, float, str]] = []

    start = time.time()
    base_dir = get_tiny_base()
    tokenizer = load_tokenizer(str(base_dir))
    base_gold = gold_eval(AutoModelForCausalLM.from_pretrained(base_dir), tokenizer)
    rows.append(("pretrain tiny base (cached)", time.time() - start, f"gold score {base_gold['score']:.2f}"))

    start = time.time()
    sft = SFTRecipe.from_yaml(CONFIGS / "sft_tiny.yaml", output_dir=str(run_dir / "sft"), seed=seed).run()
    rows.append(
        (
            "SFT (LoRA, merged)",
            time.time() - start,
            f"gold score {sft.metrics['gold_score']:.2f}, eval loss {sft.metrics['eval_loss']:.2f}",
        )
    )

    summary = {
        "gold_score_base": base_gold["score"],
        "gold_score_sft": sft.metrics["gold_score"],
        "gold_exact_sft": sft.metrics["gold_exact"],
        "seconds": sum(r[1] for r in rows),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{'stage':<32}{'seconds':>9}  key metric")
    for name, seconds, metric in rows:
        print(f"{name:<32}{seconds:>9.1f}  {metric}")
    print(f"\ngold score: base {summary['gold_score_base']:.2f} -> SFT {summary['gold_score_sft']:.2f}")
    return summary
