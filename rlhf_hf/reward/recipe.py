"""Step 2, the reward model: the SFT model + a scalar head, trained on K ranked answers per prompt.

Data is either a ranked/pairwise dataset (any format `reward.data.to_ranked` reads) or, with `labeller`,
K answers sampled from the SFT model per prompt and ranked by a simulated labeller (the config's `task`).

Output (the contract PPO loads): `<output_dir>/` = LoRA adapter (SEQ_CLS, `score` head in modules_to_save,
base = the SFT dir) or, with `use_peft: false`, the full model; tokenizer; `reward_stats.json` (reward mean/std
on the training responses, for PPO's normalisation); `metrics.json`; with `merge: true` also `merged/`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import TaskType
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig, RewardConfig

from ..evaluation import gold_prompts
from ..modeling import (
    load_sequence_classifier,
    load_unsharded,
    lora_config,
)
from ..recipe import Recipe, RecipeArgs
from ..tasks import get_task
from ..validation import DataError, validate_prompts
from .loaders import RANKED_FORMATS, ranked_source_rows
from .metrics import ranking_metrics
from .model import load_reward_model, reward_stats, score_ids, write_stats
from .sampling import drop_empty_answers, rank_with, sample_answers, samples_per_prompt
from .trainer import PreparedRanked, RankedRewardTrainer, prepare_ranked

logger = logging.getLogger(__name__)

LABELLERS = ("simulated",)
TIES = ("drop", "error")


@dataclass
class RewardRecipeConfig(RecipeArgs, RewardConfig, ModelConfig):
    """`RewardConfig` + `trl.ModelConfig` + dataset/sampling/output fields, with defaults for RLHF's step 2."""

    model_name_or_path: str | None = field(
        default="runs/sft/merged",
        metadata={"help": "The SFT model (merged dir) the reward model starts from."},
    )
    dataset_name: str | None = field(
        default="rlhf-hf/tiny-sort-prompts",
        metadata={
            "help": "Ranked/pairwise data, or prompts (a `prompt` column) to sample from with `labeller`."
        },
    )
    output_dir: str | None = field(default="runs/reward", metadata={"help": "Adapter, stats and metrics."})
    use_peft: bool = field(default=True, metadata={"help": "Train LoRA adapters + the score head."})
    merge: bool = field(
        default=False, metadata={"help": "Also write a standalone model to `<output_dir>/merged`."}
    )
    dataset_format: str | None = field(
        default=None,
        metadata={
            "help": f"One of {list(RANKED_FORMATS)}: `ranked` (prompt/responses[/ranks|scores]), `pairwise` "
            "(chosen/rejected[/prompt]) or a public dataset as published; detected from the columns when unset."
        },
    )
    drop_long_rows: bool = field(
        default=False,
        metadata={"help": "Drop prompts with an answer longer than max_length instead of raising."},
    )
    ties: str = field(
        default="drop", metadata={"help": "Prompts whose answers all tie: `drop` (counted) or `error`."}
    )
    margin_scale: float = field(
        default=0.0,
        metadata={"help": "Loss margin = margin_scale * (score_w - score_l) where rows have scores."},
    )
    max_prompts: int | None = field(
        default=None, metadata={"help": "Use at most this many training prompts."}
    )
    labeller: str | None = field(
        default=None,
        metadata={
            "help": "`simulated`: sample `sample_k` answers per prompt, ranked by the task's judge + noise."
        },
    )
    labeller_noise: float = field(default=0.05, metadata={"help": "Std of the simulated labeller's noise."})
    sample_k: int = field(default=4, metadata={"help": "Answers sampled per prompt (K)."})
    sample_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    sample_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    sample_max_new_tokens: int = field(default=16, metadata={"help": "Longest sampled answer."})
    sample_batch_size: int = field(default=256, metadata={"help": "Prompts x K generated per batch."})
    sample_include_greedy: bool = field(
        default=False,
        metadata={
            "help": "One of the K answers is the policy's greedy answer (ranked against the sampled ones)."
        },
    )
    sample_draws: int | None = field(
        default=None,
        metadata={
            "help": "Sample this many answers per prompt and rank the first `sample_k` different ones (None: K "
            "samples, repeats kept)."
        },
    )
    eval_gold_prompts: int = field(
        default=200,
        metadata={"help": "Held-out prompts for gold pair accuracy (with `labeller` and `task`; 0 = off)."},
    )
    # A batch costs its longest answer times its rows: prompts of similar length batched together pad ~1.8x less
    # on the chat task (single requests beside multi-turn conversations). transformers' default is `random`.
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "`group_by_length` (default here: less padding), `random`, ... as in transformers."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.labeller, str) and self.labeller.lower() in ("none", "null"):
            self.labeller = None  # `--labeller none` on the command line, over a YAML's `labeller: simulated`
        if self.labeller is not None and self.labeller not in LABELLERS:
            raise ValueError(f"labeller must be one of {list(LABELLERS)} or null, got {self.labeller!r}")
        if self.labeller == "simulated" and self.task is None:
            raise ValueError("labeller: simulated ranks by a task's gold judge: set `task` (e.g. tiny-sort)")
        samples_per_prompt(self.sample_k, self.sample_include_greedy, self.sample_draws)
        if self.ties not in TIES:
            raise ValueError(f"ties must be one of {list(TIES)}, got {self.ties!r}")
        if self.dataset_format is not None and self.dataset_format not in RANKED_FORMATS:
            raise ValueError(
                f"dataset_format must be one of {list(RANKED_FORMATS)} or null, got {self.dataset_format!r}"
            )
        if self.dataset_format is not None and self.labeller is not None:
            raise ValueError(
                f"dataset_format {self.dataset_format!r} is for ranked data, but `labeller: {self.labeller}` samples "
                "answers for a dataset of prompts: set one of them (on the command line: --labeller none)"
            )


class RewardRecipe(Recipe):
    config_class = RewardRecipeConfig
    name = "reward"

    def __init__(self, config: RewardRecipeConfig) -> None:
        super().__init__(config)
        config.model_name_or_path = _absolute_if_local(config.model_name_or_path)  # recorded in the adapter
        self.stats: dict[str, Any] = {}

    def prepare_data(
        self, tokenizer: PreTrainedTokenizerBase
    ) -> tuple[tuple[PreparedRanked, PreparedRanked | None, list[dict]], dict[str, Any]]:
        """Ranked rows (sampled + labelled, or read), validated and tokenised before the RM loads."""
        self.check_output_dir(
            write=False
        )  # refuses a dir it may not write to now, before minutes of sampling
        train, evaluation, gold_rows, metrics = self._collect(tokenizer)
        metrics.update(
            train_prompts=len(train.rows),
            train_answers=sum(len(r["responses"]) for r in train.rows),
            dropped_all_tied=train.report.n_dropped_all_tied,
            dropped_too_long=len(train.dropped_too_long),
        )
        return (train, evaluation, gold_rows), metrics

    def train(
        self,
        tokenizer: PreTrainedTokenizerBase,
        data: tuple[PreparedRanked, PreparedRanked | None, list[dict]],
        metrics: dict[str, Any],
    ) -> RankedRewardTrainer:
        """The SFT model + scalar head, trained by (our subclass of) TRL's RewardTrainer; then reward statistics
        on the training responses and held-out metrics (every process scores)."""
        cfg: RewardRecipeConfig = self.config
        train, evaluation, gold_rows = data
        trainer = self._trainer(tokenizer, train, evaluation)
        train_start = time.time()
        metrics["train_loss"] = trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint).training_loss
        metrics["train_seconds"] = time.time() - train_start
        model = trainer.model
        rewards = score_ids(
            model, _flat(train.dataset["answer_ids"]), tokenizer.pad_token_id, cfg.eval_batch_size
        )
        reference = (
            f"train responses ({len(rewards)} answers to {len(train.rows)} prompts of {cfg.dataset_name})"
        )
        self.stats = reward_stats(rewards, reference)
        metrics.update(reward_mean=self.stats["mean"], reward_std=self.stats["std"])
        if evaluation is not None:
            held_out = ranking_metrics(model, tokenizer, evaluation.rows, batch_size=cfg.eval_batch_size)
            metrics.update({f"eval_{k}": v for k, v in held_out.items()})
        if gold_rows:
            gold = ranking_metrics(model, tokenizer, gold_rows, batch_size=cfg.eval_batch_size)
            metrics.update(
                gold_pair_accuracy=gold["pairwise_accuracy"],
                gold_pairs=gold["pairs"],
                gold_kendall_tau=gold["kendall_tau"],
            )
        return trainer

    def finish(
        self,
        trainer: RankedRewardTrainer,
        tokenizer: PreTrainedTokenizerBase,
        output_dir: Path,
        metrics: dict,
    ) -> None:
        """Tokenizer + stats; `merged/` reloads base + adapter unquantised and merges."""
        cfg: RewardRecipeConfig = self.config
        tokenizer.save_pretrained(output_dir)
        write_stats(output_dir, self.stats)
        if cfg.use_peft and cfg.merge:
            merged, _, _ = load_reward_model(output_dir, dtype=cfg.dtype)
            merged.save_pretrained(output_dir / "merged", safe_serialization=True)
            tokenizer.save_pretrained(output_dir / "merged")
            write_stats(output_dir / "merged", self.stats)

    # ------------------------------------------------------------------------------------------ data
    def _collect(
        self, tokenizer: PreTrainedTokenizerBase
    ) -> tuple[PreparedRanked, PreparedRanked | None, list[dict], dict[str, Any]]:
        """(train, eval, gold-ranked rows, metrics): ranked data read and validated whole before it is split, or
        prompts validated, split, then answered by the SFT model and ranked by the labeller."""
        cfg: RewardRecipeConfig = self.config

        def prepare(split: Dataset, source: str) -> PreparedRanked | Dataset:
            if cfg.labeller is not None:
                validate_prompts(split, None, None, source)
                return split
            if set(split.column_names) <= {"prompt"}:
                raise DataError(
                    f"{source} holds prompts only (columns {split.column_names}): set `labeller: simulated` to "
                    "sample and rank answers, or give a ranked dataset"
                )
            rows, source_rows = ranked_source_rows(split, cfg.dataset_format, source)
            return self._prepare(rows, tokenizer, source, source_rows)

        train, evaluation = self.train_eval_splits(prepare)
        if cfg.max_prompts is not None:
            train = train.select(range(min(cfg.max_prompts, len(train))))
        if cfg.labeller is None:
            return train, evaluation, [], {}
        train_rows, eval_rows, gold_rows, metrics = self._sample_and_rank(tokenizer, train, evaluation)
        train = self._prepare(train_rows, tokenizer, "answers sampled for the train prompts")
        if eval_rows is not None:
            evaluation = self._prepare(eval_rows, tokenizer, "answers sampled for the eval prompts")
        return train, evaluation, gold_rows, metrics

    def _sample_and_rank(
        self, tokenizer: PreTrainedTokenizerBase, train: Dataset, evaluation: Dataset | None
    ) -> tuple[list[dict], list[dict] | None, list[dict], dict[str, Any]]:
        """K answers per prompt from the SFT model, ranked by the simulated labeller (gold rows: noiselessly)."""
        cfg: RewardRecipeConfig = self.config
        start = time.time()
        task = get_task(cfg.task)
        policy = _load_policy(cfg)
        labeller = task.labeller(noise=cfg.labeller_noise, seed=cfg.seed)

        def sampled(prompts: list, seed: int) -> tuple[list[dict], int]:
            rows = sample_answers(
                policy,
                tokenizer,
                prompts,
                cfg.sample_k,
                temperature=cfg.sample_temperature,
                top_p=cfg.sample_top_p,
                max_new_tokens=cfg.sample_max_new_tokens,
                seed=seed,
                batch_size=cfg.sample_batch_size,
                progress=not cfg.disable_tqdm,
                include_greedy=cfg.sample_include_greedy,
                draws=cfg.sample_draws,
            )
            return drop_empty_answers(rows)

        train_rows, empty = sampled(train["prompt"], cfg.seed)
        train_rows = rank_with(labeller, train_rows)
        eval_rows = None
        if evaluation is not None:
            eval_rows, _ = sampled(evaluation["prompt"], cfg.seed + 1)
            eval_rows = rank_with(labeller, eval_rows)
        gold_rows: list[dict] = []
        if cfg.eval_gold_prompts:  # ranked by the noiseless judge: pairs with different gold scores count
            gold_rows, _ = sampled(gold_prompts(cfg.eval_gold_prompts, task), cfg.seed + 2)
            gold_rows = rank_with(task.labeller(noise=0.0), gold_rows)
        return (
            train_rows,
            eval_rows,
            gold_rows,
            {"empty_answers_dropped": empty, "sampling_seconds": time.time() - start},
        )

    def _prepare(
        self,
        rows: list[dict],
        tokenizer: PreTrainedTokenizerBase,
        source: str,
        source_rows: list[int] | None = None,
    ) -> PreparedRanked:
        cfg: RewardRecipeConfig = self.config
        return prepare_ranked(
            rows,
            tokenizer,
            max_length=cfg.max_length,
            drop_long_rows=cfg.drop_long_rows,
            ties=cfg.ties,
            source=source,
            source_rows=source_rows,
        )

    # ------------------------------------------------------------------------------------------ model
    def _trainer(
        self, tokenizer: PreTrainedTokenizerBase, train: PreparedRanked, evaluation: PreparedRanked | None
    ) -> RankedRewardTrainer:
        cfg: RewardRecipeConfig = self.config
        model = load_sequence_classifier(
            cfg,
            pad_token_id=tokenizer.pad_token_id,
            trust_remote_code=cfg.trust_remote_code,
            gradient_checkpointing=cfg.activation_checkpointing,
        )
        return RankedRewardTrainer(
            model=model,
            args=cfg,
            train_dataset=train.dataset,
            eval_dataset=None if evaluation is None else evaluation.dataset,
            processing_class=tokenizer,
            peft_config=lora_config(cfg, TaskType.SEQ_CLS),
            margin_scale=cfg.margin_scale,
        )


def _load_policy(cfg: RewardRecipeConfig) -> PreTrainedModel:
    """The SFT model to sample from, unquantised (sampling quality should not depend on the RM's bit width).

    Whole on every process, also under DeepSpeed ZeRO-3: it is used outside any DeepSpeed engine.
    """
    return load_unsharded(cfg).to(cfg.device)


def _absolute_if_local(name_or_path: str) -> str:
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else name_or_path


def _flat(nested: list[list[Any]]) -> list[Any]:
    return [item for inner in nested for item in inner]
