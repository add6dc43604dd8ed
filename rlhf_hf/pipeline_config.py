"""The pipeline's top-level config: read by the pipeline that runs and by the report that evaluates a run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .reward.sampling import samples_per_prompt


@dataclass
class PipelineConfig:
    """Top-level keys of a pipeline YAML; `sft`, `reward` and `ppo` hold each stage's config (a `config:` path to a
    stage YAML and/or its keys), with `model_name_or_path`, data and output paths filled in by the pipeline."""

    run_dir: str = "runs/pipeline"
    seed: int = 0
    rounds: int = 1
    task: str | None = (
        None  # e.g. "tiny-sort": its judge ranks (simulated labeller) and scores; every stage's default
    )
    labeller: str = "simulated"  # "simulated" (the task's judge + noise) or "human" (JSONL round trip)
    labeller_noise: float = 0.05
    prompts_dataset: str = "rlhf-hf/tiny-sort-prompts"
    rank_prompts: int = 600  # prompts per round whose K sampled answers get ranked
    sample_k: int = 4
    sample_temperature: float = 1.0  # the training temperature: comparisons, PPO's samples, the report
    sample_include_greedy: bool = False  # one of the K is the policy's greedy answer (see sample_answers)
    # sample this many answers per prompt and rank the first K different ones (see sample_answers)
    sample_draws: int | None = None
    # Multi-turn prompts: the policy writes the earlier assistant turns and a random turn is compared (ChatGPT's
    # comparison data; see conversation_prompts) instead of ranking the dataset's last turn after its own answers.
    sample_policy_turns: bool = False
    sample_max_new_tokens: int = 16
    eval_prompts: int = 200
    eval_every_checkpoint: bool = True  # gold vs RM score at every PPO checkpoint (over-optimisation curve)
    force: bool = False
    quiet: bool = False  # stage output to run_dir/logs/*.log; the console shows one line per stage
    sft: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=dict)
    ppo: dict[str, Any] = field(default_factory=dict)
    config_dir: str | None = None  # stage `config:` paths are relative to it (the pipeline YAML's dir)
    config_file: str | None = None  # the pipeline YAML itself: errors in its stage sections name it

    def __post_init__(self) -> None:
        samples_per_prompt(self.sample_k, self.sample_include_greedy, self.sample_draws)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> PipelineConfig:
        values = yaml.safe_load(Path(path).read_text()) or {}
        values.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"pipeline config {path}: unknown key(s) {unknown}")
        values.setdefault("config_dir", str(Path(path).resolve().parent))
        values.setdefault("config_file", str(path))
        return cls(**values)
