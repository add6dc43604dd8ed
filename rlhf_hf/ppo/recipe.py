"""Step 3, PPO against the reward model: `PPORecipe(config).run()` or `rlhf-hf ppo --config ppo.yaml`.

Writes `<output_dir>/policy` (adapter), `merged/` (standalone policy for the next round, eval or export),
`value/`, `metrics.json`, `log_history.json`, `samples.jsonl` and `checkpoint-*` dirs.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..data import load_split
from ..modeling import is_adapter_dir, load_unsharded, merge_adapter, zero3_init_disabled
from ..recipe import Recipe
from ..validation import describe_source, validate_prompts
from .config import PPORecipeConfig
from .roles import POLICY, PPOModel, build_ppo_model
from .trainer import PPOTrainer

logger = logging.getLogger(__name__)


class PPORecipe(Recipe):
    config_class = PPORecipeConfig
    name = "ppo"

    def prepare_data(self, tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[Dataset, Dataset | None], dict]:
        cfg: PPORecipeConfig = self.config
        prompts = load_split(cfg.dataset_name, cfg.dataset_train_split, cfg.dataset_config)
        if prompts is None:
            raise ValueError(f"Dataset {cfg.dataset_name!r} has no split {cfg.dataset_train_split!r}")
        validate_prompts(
            prompts,
            tokenizer,
            cfg.max_prompt_length,
            describe_source(cfg.dataset_name, cfg.dataset_train_split),
        )
        ptx = None
        if cfg.ptx_coef > 0:
            ptx = load_split(cfg.ptx_dataset_name, cfg.ptx_dataset_split)
            if ptx is None or "text" not in ptx.column_names:
                raise ValueError(f"PPO-ptx data {cfg.ptx_dataset_name!r} needs a `text` column")
        if not Path(cfg.reward_model_path).is_dir():
            raise ValueError(f"reward_model_path {cfg.reward_model_path!r} is not a directory")
        return (prompts, ptx), {"train_prompts": len(prompts)}

    def train(
        self, tokenizer: PreTrainedTokenizerBase, data: tuple[Dataset, Dataset | None], metrics: dict
    ) -> PPOTrainer:
        """One base, four roles; PPO on Trainer's machinery. The gold score before PPO is the SFT model's."""
        cfg: PPORecipeConfig = self.config
        prompts, ptx = data
        self.model = model = build_ppo_model(cfg, tokenizer.pad_token_id)
        trainer = PPOTrainer(
            model=model, args=cfg, processing_class=tokenizer, train_dataset=prompts, ptx_dataset=ptx
        )
        if model.reward_stats is None and cfg.normalize_reward:
            logger.warning("No reward_stats.json in %s: scores are not normalised", cfg.reward_model_path)
        if self.gold_task and trainer.is_world_process_zero():  # only the main process evaluates
            if trainer.is_zero3:  # the live weights are shards: evaluate a whole copy, alone
                with zero3_init_disabled():
                    before = self.gold_metrics(load_unsharded(cfg), tokenizer)
            else:
                with model.adapter(None):  # the SFT model, i.e. the policy before PPO
                    before = self.gold_metrics(model.causal_lm, tokenizer)
            metrics.update({f"gold_{k}_before": v for k, v in before.items()})
        trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
        return trainer

    def save(
        self, trainer: PPOTrainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, metrics: dict
    ) -> None:
        """Adapters (every process: collective) and the run's headline metrics."""
        cfg: PPORecipeConfig = self.config
        trainer.save_model(str(output_dir))
        history = [h for h in trainer.state.log_history if "objective/scores" in h]
        metrics.update(summarize(history))
        metrics["reward_model"] = "adapter" if is_adapter_dir(cfg.reward_model_path) else "model"

    def finish(
        self, trainer: PPOTrainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, metrics: dict
    ) -> None:
        """Log history, the merged policy, gold evaluation of the trained policy."""
        cfg: PPORecipeConfig = self.config
        model: PPOModel = self.model
        (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
        policy = model.causal_lm
        if cfg.merge:
            policy = merge_adapter(cfg, output_dir / POLICY, output_dir / "merged")
            tokenizer.save_pretrained(output_dir / "merged")
        elif self.gold_task and trainer.is_zero3:
            policy = load_unsharded(cfg, output_dir / POLICY)
        if self.gold_task:
            with model.adapter(POLICY):
                after = self.gold_metrics(policy, tokenizer)
            metrics.update({f"gold_{k}": v for k, v in after.items()})


def summarize(history: list[dict], window: int = 3) -> dict[str, float]:
    """First/last-window means of the headline metrics: how far PPO moved the score and the KL."""
    if not history:
        return {}
    n = min(window, max(1, len(history) // 2))
    out: dict[str, float] = {"updates": history[-1]["step"]}
    for key, name in (
        ("objective/scores", "score"),
        ("objective/kl", "kl"),
        ("objective/raw_scores", "raw_score"),
    ):
        out[f"{name}_first"] = statistics.fmean(h[key] for h in history[:n])
        out[f"{name}_last"] = statistics.fmean(h[key] for h in history[-n:])
    out["seconds_per_update"] = statistics.fmean(h["perf/seconds_per_update"] for h in history)
    return out
