"""Step 1, supervised fine-tuning on demonstrations: TRL's `SFTTrainer` + LoRA, then (by default) a merged model.

The merged dir (`<output_dir>/merged`) is what the reward-model and PPO stages load as their base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import ModelConfig, SFTConfig, SFTTrainer

from .modeling import load_causal_lm, load_unsharded, lora_config, merge_adapter
from .outputs import AtomicCheckpoints
from .recipe import Recipe, RecipeArgs
from .reward.loaders import oasst1_sft_rows
from .tasks import TINY_MODEL_ID
from .validation import ValidationReport, validate_sft_dataset

SFT_FORMATS = ("messages", "prompt_completion", "text", "oasst1")

logger = logging.getLogger(__name__)


@dataclass
class SFTRecipeConfig(RecipeArgs, SFTConfig, ModelConfig):
    """`SFTConfig` + `trl.ModelConfig` + dataset/output fields, with defaults for RLHF's first step."""

    model_name_or_path: str | None = field(
        default=TINY_MODEL_ID, metadata={"help": "Base model id or local dir."}
    )
    dataset_name: str | None = field(default="rlhf-hf/tiny-sort-sft", metadata={"help": "Demonstrations."})
    output_dir: str | None = field(
        default="runs/sft", metadata={"help": "Where adapter, merged model and metrics go."}
    )
    use_peft: bool = field(
        default=True, metadata={"help": "Train LoRA adapters (default) instead of all weights."}
    )
    assistant_only_loss: bool = field(
        default=True,
        metadata={
            "help": "Loss on assistant turns only (conversational data); prompt/completion data always "
            "trains on the completion unless `completion_only_loss: false`."
        },
    )
    dataset_format: str | None = field(
        default=None,
        metadata={
            "help": "`messages`, `prompt_completion`, `text` (detected from the columns when unset) or `oasst1` "
            "(an OpenAssistant/oasst1 message table: each tree's best-ranked path as `messages`)."
        },
    )
    drop_long_rows: bool = field(
        default=False, metadata={"help": "Drop rows longer than max_length (reported) instead of raising."}
    )
    merge: bool = field(
        default=True, metadata={"help": "Also write base+adapter merged into `<output_dir>/merged`."}
    )
    eval_gold_prompts: int = field(
        default=200, metadata={"help": "Held-out prompts scored by the task's gold judge (with `task` set)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset_format is not None and self.dataset_format not in SFT_FORMATS:
            raise ValueError(
                f"dataset_format must be one of {list(SFT_FORMATS)} or null, got {self.dataset_format!r}"
            )


class AtomicSFTTrainer(AtomicCheckpoints, SFTTrainer):
    """TRL's SFTTrainer whose checkpoints appear only when complete (`outputs.AtomicCheckpoints`)."""


class SFTRecipe(Recipe):
    config_class = SFTRecipeConfig
    name = "sft"

    def prepare_data(self, tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[Dataset, Dataset | None], dict]:
        cfg: SFTRecipeConfig = self.config
        reports: list[ValidationReport] = []

        def prepare(split: Dataset, source: str) -> Dataset:
            source_rows = None
            if cfg.dataset_format == "oasst1":
                rows, source_rows = oasst1_sft_rows(split, source)
                split = Dataset.from_list(rows)
            split, report = validate_sft_dataset(
                split,
                tokenizer,
                max_length=cfg.max_length,
                drop_long_rows=cfg.drop_long_rows,
                source=source,
                dataset_format=None if cfg.dataset_format == "oasst1" else cfg.dataset_format,
                source_rows=source_rows,
            )
            reports.append(report)
            return split

        train, evaluation = self.train_eval_splits(prepare)
        report = reports[0]  # the train split's
        if report.format != "messages":
            cfg.assistant_only_loss = False  # TRL supports it for conversational data only
        metrics = {"train_rows": len(train), "dropped_too_long": len(report.dropped_too_long)}
        return (train, evaluation), metrics

    def train(
        self, tokenizer: PreTrainedTokenizerBase, data: tuple[Dataset, Dataset | None], metrics: dict
    ) -> SFTTrainer:
        """Model + LoRA, trained by TRL (seeded first: LoRA's random init must not depend on the launcher)."""
        cfg: SFTRecipeConfig = self.config
        train, evaluation = data
        if evaluation is not None:
            # The loss before training is measured inside train(), once Accelerate has prepared the model: an
            # evaluate() before train() marks the model prepared without its DDP wrapper, and train() then runs
            # every process on its own gradients (no all-reduce) under torchrun / accelerate launch.
            cfg.eval_on_start = True
        set_seed(cfg.seed)
        model = load_causal_lm(
            cfg, trust_remote_code=cfg.trust_remote_code, gradient_checkpointing=cfg.activation_checkpointing
        )
        trainer = AtomicSFTTrainer(
            model=model,
            args=cfg,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            peft_config=lora_config(cfg),
        )
        train_out = trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
        metrics["train_loss"] = train_out.training_loss
        if evaluation is not None:
            metrics["eval_loss_before"] = next(
                h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h
            )
            metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
        return trainer

    def finish(
        self, trainer: SFTTrainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, metrics: dict
    ) -> None:
        """Tokenizer, the merged model for the next stages, gold evaluation of the trained policy."""
        cfg: SFTRecipeConfig = self.config
        tokenizer.save_pretrained(output_dir)
        policy = trainer.model
        if cfg.use_peft and cfg.merge:
            policy = merge_adapter(cfg, output_dir, output_dir / "merged")
            tokenizer.save_pretrained(output_dir / "merged")
        elif self.gold_task and is_deepspeed_zero3_enabled():  # the trained weights are shards: a whole copy
            policy = load_unsharded(cfg, output_dir) if cfg.use_peft else load_unsharded(cfg, path=output_dir)
        if self.gold_task:
            metrics.update({f"gold_{k}": v for k, v in self.gold_metrics(policy, tokenizer).items()})
