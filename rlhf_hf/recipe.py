"""What every stage shares: the config mixin, YAML/CLI parsing with TRL's `TrlParser`, and the Recipe lifecycle.

A stage's config is ONE flat dataclass: `RecipeArgs` + the stage's TRL/transformers `TrainingArguments` subclass
+ `trl.ModelConfig`, so a YAML file reads like a TRL script's and unknown keys are rejected by the parser.
`Recipe.run()` is the one sequence every stage follows; a stage overrides its steps (`prepare_data`, `train`,
`save`, `finish`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
import yaml
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer
from trl import ModelConfig, TrlParser

from .data import Prepared, train_eval_splits
from .evaluation import gold_eval
from .modeling import load_tokenizer, zero3_init_disabled
from .outputs import finish_output_dir, prepare_output_dir
from .tasks import Task, get_task


@dataclass
class RecipeArgs:
    """Fields every recipe adds on top of TRL's configs (dataset selection, output-dir safety)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, a local dir/file (json, jsonl, parquet, csv), or an embedded `rlhf-hf/...` id."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config (subset) name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default="test",
        metadata={"help": "Split to evaluate on; if the dataset lacks it, `eval_fraction` is held out."},
    )
    eval_fraction: float = field(
        default=0.05, metadata={"help": "Held-out fraction when there is no test split."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace an earlier run of ours in a non-empty output dir (only what that run wrote is removed; "
            "a dir with other files, `.`, home or a git checkout is refused)."
        },
    )
    task: str | None = field(
        default=None,
        metadata={
            "help": "The task whose gold judge scores the model (`tiny-sort` for the embedded default); "
            "none: no gold metrics."
        },
    )

    def __post_init__(self) -> None:
        # TRL defaults bf16 to True, which refuses to start on a machine without bf16 (e.g. CPU CI): pick per device.
        if getattr(self, "bf16", None) is None and not getattr(self, "fp16", False):
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            if not torch.cuda.is_available() and (
                getattr(self, "load_in_8bit", False) or getattr(self, "load_in_4bit", False)
            ):
                # TRL casts the trainable weights of a k-bit model to bf16 (QLoRA) and relies on bf16 autocast,
                # which transformers allows on a CPU only with `use_cpu`.
                self.bf16 = self.use_cpu = True
        get_task(self.task)  # an unknown name fails now, listing the known ones
        if isinstance(self, ModelConfig):
            ModelConfig.__post_init__(self)
        resume = getattr(self, "resume_from_checkpoint", None)
        if isinstance(resume, str) and resume.lower() in ("true", "last"):
            self.resume_from_checkpoint = True  # the last checkpoint in output_dir, as Trainer reads True
        # transformers 5.24 renamed `gradient_checkpointing*` to `activation_checkpointing*`, and TRL's configs still
        # default the old name (to True): carry the old name over ourselves (transformers would, with a FutureWarning
        # about a field the user never wrote). A YAML may use either name; the new one wins when both are set.
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            if hasattr(self, new) and getattr(self, new) is None and getattr(self, old, None) is not None:
                setattr(self, new, getattr(self, old))
        super().__post_init__()  # the stage's TrainingArguments subclass (reads the accelerate/DeepSpeed launch)
        from transformers.integrations import is_deepspeed_zero3_enabled

        kbit = getattr(self, "load_in_8bit", False) or getattr(self, "load_in_4bit", False)
        if kbit and is_deepspeed_zero3_enabled():
            raise ValueError(
                "an 8/4-bit base cannot be sharded by DeepSpeed ZeRO-3 (bitsandbytes weights): launch with "
                "recipes/accelerate/zero2.yaml or multi_gpu.yaml, or drop load_in_8bit/load_in_4bit under ZeRO-3"
            )


@dataclass
class RecipeResult:
    output_dir: str
    metrics: dict[str, Any]


class Recipe:
    """One stage of the pipeline: `Recipe(config).run()` trains and writes `config.output_dir`."""

    config_class: ClassVar[type]
    name: ClassVar[str]

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The stage model's tokenizer (pad token, chat template: see `modeling.load_tokenizer`)."""
        cfg = self.config
        return load_tokenizer(
            cfg.model_name_or_path, revision=cfg.model_revision, trust_remote_code=cfg.trust_remote_code
        )

    # ---------------------------------------------------------------- construction
    @classmethod
    def parse_args(cls, args: list[str] | None = None) -> Any:
        """YAML (`--config file`) + CLI flags into the config; unknown keys raise, naming the file and the key."""
        args = list(sys.argv[1:] if args is None else args)
        if "--config" in args and args.index("--config") + 1 < len(args):
            path = args[args.index("--config") + 1]
            with open(path) as f:
                values = yaml.safe_load(f) or {}
            if not isinstance(values, dict):
                raise ValueError(f"{path}: a {cls.name} config must be a YAML mapping of keys to values")
            cls.check_keys(values, where=path)
        parser = TrlParser(dataclass_types=[cls.config_class], allow_abbrev=False)
        (config,) = parser.parse_args_and_config(args)
        return config

    @classmethod
    def check_keys(cls, values: dict[str, Any], where: str | os.PathLike | None = None) -> None:
        """Every key is a field of the stage's config (TrlParser's `env:` section aside); else a ValueError naming
        `where`, the unknown keys and the nearest known ones."""
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(values) - known - {"env"})
        if not unknown:
            return
        hints = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
        hint = "; ".join(f"{key}: did you mean {near[0]}?" for key, near in hints.items() if near)
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}{cls.name} config: unknown key(s) {unknown}" + (f" ({hint})" if hint else "")
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> Self:
        """`Recipe.from_yaml("sft.yaml", learning_rate=1e-4)`: keyword overrides beat the file, like CLI flags."""
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        for key, value in (values.pop("env", None) or {}).items():  # TrlParser's `env:` section
            os.environ[key] = str(value)
        try:
            return cls.from_dict({**values, **overrides})
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from a mapping (a YAML file's or one stage of a pipeline YAML); unknown keys raise.

        Values become the parser's defaults, so strings are converted as on the command line ("2e-3" -> float)
        while Python values (None, lists, numbers) pass through unchanged.
        """
        cls.check_keys(values)
        parser = TrlParser(dataclass_types=[cls.config_class], allow_abbrev=False, exit_on_error=False)
        parser.set_defaults_with_config(**values)
        try:
            (config,) = parser.parse_args_into_dataclasses(args=[])
        except argparse.ArgumentError as err:  # a value of the wrong type: not a usage message and an exit
            raise ValueError(f"{cls.name} config: {err}") from None
        return cls(config)

    # ---------------------------------------------------------------- running
    def run(self) -> RecipeResult:
        """Train and write `config.output_dir`; the same order for every stage.

        Everything that can fail cheaply (tokenizer, data validation, the output dir) comes before a model loads.
        Training and saving run on every process (saving is collective under DeepSpeed); merging, gold
        evaluation and `metrics.json` on the main process only; then all processes meet.
        """
        start = time.time()
        tokenizer = self.load_tokenizer()
        data, metrics = self.prepare_data(tokenizer)
        output_dir = self.check_output_dir()
        trainer = self.train(tokenizer, data, metrics)
        self.save(trainer, tokenizer, output_dir, metrics)
        if trainer.is_world_process_zero():
            self.finish(trainer, tokenizer, output_dir, metrics)
            metrics["seconds"] = time.time() - start
            self.write_metrics(output_dir, metrics)
        trainer.accelerator.wait_for_everyone()
        return RecipeResult(output_dir=str(output_dir), metrics=metrics)

    def train_eval_splits(
        self, prepare: Callable[[Dataset, str], Prepared]
    ) -> tuple[Prepared, Prepared | None]:
        """The config's train and eval splits, each converted and validated whole by `prepare(split, source)`
        before `eval_fraction` of train is held out (when there is no test split): see `data.train_eval_splits`."""
        cfg = self.config
        return train_eval_splits(
            cfg.dataset_name,
            cfg.dataset_config,
            cfg.dataset_train_split,
            cfg.dataset_test_split,
            cfg.eval_fraction,
            cfg.seed,
            prepare,
        )

    def prepare_data(self, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, dict[str, Any]]:
        """The stage's data, loaded and validated (no model loaded yet), and the metrics it starts with."""
        raise NotImplementedError

    def train(self, tokenizer: PreTrainedTokenizerBase, data: Any, metrics: dict[str, Any]) -> Trainer:
        """Load the model, train it, add the training metrics; returns the trainer (every process)."""
        raise NotImplementedError

    def save(
        self, trainer: Trainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, metrics: dict[str, Any]
    ) -> None:
        """Every process: `save_model` gathers DeepSpeed/FSDP shards, the main process writes."""
        trainer.save_model(str(output_dir))

    def finish(
        self, trainer: Trainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, metrics: dict[str, Any]
    ) -> None:
        """Main process only, after saving: the tokenizer, merged models, gold evaluation."""
        tokenizer.save_pretrained(output_dir)

    # ---------------------------------------------------------------- gold evaluation
    @property
    def gold_task(self) -> Task | None:
        """The config's task when gold evaluation is asked for (`task` set and `eval_gold_prompts` > 0)."""
        if not getattr(self.config, "eval_gold_prompts", 0):
            return None
        return get_task(self.config.task)

    def gold_metrics(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
        """Greedy answers of `policy` to the task's held-out prompts, scored by its gold judge (main process)."""
        with zero3_init_disabled():  # else generate() under ZeRO-3 waits for the other processes
            return gold_eval(policy, tokenizer, self.config.eval_gold_prompts, task=self.gold_task)

    def check_output_dir(self, write: bool = True) -> Path:
        """Refuse a non-empty output dir unless resuming, or overwriting an earlier run of ours (`outputs.py`).

        Under several processes every rank checks (so all raise alike) before the main one clears and marks it.
        `write=False` only checks: for a stage that has minutes of work to do before it writes anything.
        """
        from accelerate import PartialState

        state = PartialState()
        resuming = bool(getattr(self.config, "resume_from_checkpoint", None))
        check = {"overwrite": self.config.overwrite_output_dir, "resuming": resuming}
        prepare_output_dir(self.config.output_dir, self.name, **check, write=False)
        if not write:
            return Path(self.config.output_dir)
        state.wait_for_everyone()
        if state.is_main_process:
            prepare_output_dir(self.config.output_dir, self.name, **check)
        state.wait_for_everyone()
        return Path(self.config.output_dir)

    @staticmethod
    def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
        """The stage's last file: `metrics.json` says it finished (the pipeline skips it on re-run), then the
        output dir's marker records what the run wrote."""
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
        finish_output_dir(output_dir)
