"""Step 1, supervised fine-tuning on demonstrations: TRL's `SFTTrainer` + LoRA, then (by default) a merged model.

The merged dir (`<output_dir>/merged`) is what the reward-model and PPO stages load as their base.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from transformers import set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import ModelConfig, SFTConfig, SFTTrainer

from .data import train_eval_splits, validate_sft_dataset
from .modeling import load_causal_lm, lora_config, resolve_model_path, zero3_init_disabled
from .outputs import AtomicCheckpoints
from .recipe import Recipe, RecipeArgs, RecipeResult
from .tiny.model import TINY_MODEL_ID

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
    drop_long_rows: bool = field(
        default=False, metadata={"help": "Drop rows longer than max_length (reported) instead of raising."}
    )
    merge: bool = field(
        default=True, metadata={"help": "Also write base+adapter merged into `<output_dir>/merged`."}
    )
    eval_gold_prompts: int = field(
        default=200, metadata={"help": "Held-out prompts scored by the gold judge (embedded task only)."}
    )


class AtomicSFTTrainer(AtomicCheckpoints, SFTTrainer):
    """TRL's SFTTrainer whose checkpoints appear only when complete (`outputs.AtomicCheckpoints`)."""


class SFTRecipe(Recipe):
    config_class = SFTRecipeConfig
    name = "sft"

    def run(self) -> RecipeResult:
        cfg: SFTRecipeConfig = self.config
        start = time.time()
        # ---- 1. everything that can fail cheaply, before a model is loaded or a file written
        tokenizer = self.load_tokenizer()
        train, evaluation = train_eval_splits(
            cfg.dataset_name,
            cfg.dataset_config,
            cfg.dataset_train_split,
            cfg.dataset_test_split,
            cfg.eval_fraction,
            cfg.seed,
        )
        train, report = validate_sft_dataset(
            train, tokenizer, max_length=cfg.max_length, drop_long_rows=cfg.drop_long_rows, where="train"
        )
        if evaluation is not None:
            evaluation, _ = validate_sft_dataset(
                evaluation,
                tokenizer,
                max_length=cfg.max_length,
                drop_long_rows=cfg.drop_long_rows,
                where="eval",
            )
        if report.format != "messages":
            cfg.assistant_only_loss = False  # TRL supports it for conversational data only
        output_dir = self.check_output_dir()

        # ---- 2. model + LoRA, trained by TRL (seeded first: LoRA's random init must not depend on the launcher)
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
        metrics: dict[str, float] = {
            "train_rows": len(train),
            "dropped_too_long": len(report.dropped_too_long),
        }
        train_out = trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
        metrics["train_loss"] = train_out.training_loss
        if evaluation is not None:
            metrics["eval_loss_before"] = next(
                h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h
            )
            metrics["eval_loss"] = trainer.evaluate()["eval_loss"]

        # ---- 3. save: adapter (or full model) + tokenizer, then the merged model for the next stages
        trainer.save_model(str(output_dir))  # every process (it gathers ZeRO-3 shards), the main one writes
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(output_dir)
            gold_task = bool(
                cfg.dataset_name
                and cfg.dataset_name.startswith("rlhf-hf/tiny-sort")
                and cfg.eval_gold_prompts
            )
            policy = trainer.model
            if cfg.use_peft and cfg.merge:
                policy = merge_adapter(cfg, output_dir, output_dir / "merged")
                tokenizer.save_pretrained(output_dir / "merged")
            elif gold_task and is_deepspeed_zero3_enabled():  # the trained weights are shards: a whole copy
                policy = load_whole(cfg, output_dir) if cfg.use_peft else load_whole(cfg, path=output_dir)
            if gold_task:
                from .evaluation import gold_eval

                with zero3_init_disabled():  # else generate() under ZeRO-3 waits for the other processes
                    gold = gold_eval(policy, tokenizer, cfg.eval_gold_prompts)
                metrics.update({f"gold_{k}": v for k, v in gold.items()})
            metrics["seconds"] = time.time() - start
            self.write_metrics(output_dir, metrics)
        trainer.accelerator.wait_for_everyone()
        return RecipeResult(output_dir=str(output_dir), metrics=metrics)


def merge_adapter(cfg: ModelConfig, adapter_dir: Path, merged_dir: Path) -> torch.nn.Module:
    """Base (unquantised, in the config's dtype) + adapter, merged and saved as a standalone model.

    The base is reloaded without bitsandbytes because LoRA deltas cannot be merged into 8/4-bit weights exactly.
    """
    merged = load_whole(cfg, adapter_dir)
    merged.save_pretrained(merged_dir, safe_serialization=True)
    return merged


def load_whole(
    cfg: ModelConfig, adapter_dir: Path | None = None, path: str | Path | None = None
) -> torch.nn.Module:
    """The config's model (or the one at `path`), unquantised, with `adapter_dir` merged in: whole weights on this
    process alone.

    For work on the main process only (merging, gold evaluation): under ZeRO-3 a model loaded the usual way
    would be a set of empty shards that only all processes together can run.
    """
    from transformers import AutoModelForCausalLM

    from .modeling import resolve_dtype

    with zero3_init_disabled():
        model = AutoModelForCausalLM.from_pretrained(
            str(path) if path else resolve_model_path(cfg.model_name_or_path),
            revision=None if path else cfg.model_revision,
            dtype=resolve_dtype(cfg.dtype),
            trust_remote_code=getattr(cfg, "trust_remote_code", False),
        )
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return model
