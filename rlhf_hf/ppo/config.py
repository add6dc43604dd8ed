"""The PPO stage's config: one flat dataclass = RecipeArgs + transformers' TrainingArguments + trl.ModelConfig.

Batch sizes, per device: a microbatch (`per_device_train_batch_size`) is one forward/backward; a minibatch
(`gradient_accumulation_steps` microbatches) is one optimizer step; a rollout batch (`num_mini_batches`
minibatches) is one set of sampled answers. One update (`global_step`, `max_steps`, `save_steps`, the LR
schedule) = one rollout batch + its `num_ppo_epochs` passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments
from trl import ModelConfig

from ..recipe import RecipeArgs

CRITICS = ("adapter", "head", "model")


@dataclass
class PPORecipeConfig(RecipeArgs, TrainingArguments, ModelConfig):
    """InstructGPT step 3 (PPO against a reward model, KL-penalised towards the SFT model), with defaults."""

    # ---------------------------------------------------------------- models and data
    model_name_or_path: str | None = field(
        default="runs/sft/merged",
        metadata={"help": "The merged SFT model: the frozen base of every role, and the reference policy."},
    )
    reward_model_path: str = field(
        default="runs/reward",
        metadata={
            "help": "The reward-model stage's output: a LoRA SEQ_CLS adapter dir on the same base (loaded as the "
            "`reward` adapter on the shared base) or a full AutoModelForSequenceClassification dir (a separate "
            "model). `reward_stats.json` there holds the mean/std used by `normalize_reward`."
        },
    )
    critic: str = field(
        default="adapter",
        metadata={
            "help": "Value function: `adapter` (own LoRA + head on the shared base, initialised from the reward "
            "model), `head` (a head on the policy's last hidden state: one forward for logits and values), or "
            "`model` (a separate AutoModelForSequenceClassification trained in full, initialised from the RM).",
            "choices": list(CRITICS),
        },
    )
    init_policy_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Start the policy from this LoRA adapter dir (e.g. an earlier round's `<ppo>/policy`, same base "
            "and LoRA shape) instead of a fresh adapter; the reference stays the base (the SFT model)."
        },
    )
    dataset_name: str | None = field(
        default="rlhf-hf/tiny-sort-prompts",
        metadata={"help": "Prompts: any dataset with a `prompt` column (a string or chat messages)."},
    )
    dataset_test_split: str | None = field(default=None, metadata={"help": "Unused by PPO."})
    output_dir: str | None = field(
        default="runs/ppo",
        metadata={"help": "Checkpoints, policy/ and value/ adapters, merged/ policy, metrics and samples."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the Hub (as `from_pretrained`)."}
    )
    use_peft: bool = field(
        default=True, metadata={"help": "Must stay true: the roles are LoRA adapters on one frozen base."}
    )
    merge: bool = field(
        default=True, metadata={"help": "Also write the merged policy to `<output_dir>/merged`."}
    )

    # ---------------------------------------------------------------- rollouts
    max_prompt_length: int = field(
        default=128,
        metadata={"help": "Longest chat-templated prompt in tokens; longer prompts are an error."},
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled answer, in tokens."})
    min_new_tokens: int = field(
        default=0,
        metadata={"help": "Shortest sampled answer (eos suppressed before it); benchmarks fix lengths."},
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature; log-probs (policy and reference) use the same temperature."},
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling (1.0 = off, the unbiased choice for PPO); top_k is 0."},
    )
    rollout_forward_batch_size: int | None = field(
        default=None,
        metadata={"help": "Rows per no-grad forward when scoring a rollout (None: the whole batch at once)."},
    )
    merge_adapter_for_generation: bool = field(
        default=False,
        metadata={
            "help": "Add the policy's LoRA delta into the base weights while generating (faster sampling), then "
            "restore the exact base weights from a transient copy. Not with a quantized base."
        },
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Prompts per `generate` call (None: the whole rollout batch at once). The KV cache grows with "
            "it: 64 x 256 tokens of bf16 cache is 8.6 GB for a 7B Llama."
        },
    )
    cache_implementation: str | None = field(
        default=None,
        metadata={
            "help": "KV cache for sampling, passed to transformers' GenerationConfig. `static`: a fixed-size cache "
            "for which transformers compiles the decoding step on a GPU (the anchors measured 64 x 128 tokens at "
            "1.1B: 2.9 s -> 0.77 s after a ~30 s first call); prompts are then left-padded to max_prompt_length so "
            "every rollout has the same shapes. None: transformers' default (dynamic)."
        },
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={
            "help": "DeepSpeed ZeRO-3: gather all weights once for sampling (fast; each GPU holds the whole model "
            "while generating). false: sample through ZeRO's per-layer gathers (slow; for models that do not fit "
            "whole). TRL's name for the same switch."
        },
    )

    # ---------------------------------------------------------------- rewards
    normalize_reward: bool = field(
        default=True,
        metadata={
            "help": "Score -> (score - mean) / std with the RM's `reward_stats.json` (warns if absent)."
        },
    )
    reward_clip: float | None = field(
        default=None,
        metadata={"help": "Clip normalised scores to [-reward_clip, reward_clip] (None: no clip)."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of answers that hit max_new_tokens without an eos."},
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "beta, the per-token KL(policy || SFT) penalty (initial value if adaptive)."},
    )
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "Per-token KL estimator: k1 = log p - log p_ref (InstructGPT), k3 = lower variance, >= 0.",
            "choices": ["k1", "k3"],
        },
    )
    adaptive_kl: bool = field(
        default=False,
        metadata={"help": "Steer beta so the KL per answer tracks `kl_target` (Ziegler et al.)."},
    )
    kl_target: float = field(default=6.0, metadata={"help": "Target KL per answer (nats) for `adaptive_kl`."})
    kl_horizon: float = field(
        default=10000, metadata={"help": "Horizon (in answers) of the adaptive controller."}
    )

    # ---------------------------------------------------------------- PPO
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    num_mini_batches: int = field(
        default=1, metadata={"help": "Optimizer steps per pass over a rollout batch."}
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount factor for GAE."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (bias/variance trade-off of advantages)."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon for the policy loss."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value loss."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    target_approx_kl: float | None = field(
        default=None,
        metadata={
            "help": "Stop an update's PPO epochs once mean approx KL(old || new) exceeds it (None: off)."
        },
    )

    # ---------------------------------------------------------------- PPO-ptx
    ptx_coef: float = field(
        default=0.0,
        metadata={
            "help": "gamma_ptx: weight of the LM loss on `ptx_dataset_name` mixed into every microbatch."
        },
    )
    ptx_dataset_name: str = field(
        default="rlhf-hf/tiny-sort-corpus", metadata={"help": "Pretraining-style data (a `text` column)."}
    )
    ptx_dataset_split: str = field(default="train", metadata={"help": "Split of the PPO-ptx data."})
    ptx_batch_size: int = field(default=8, metadata={"help": "PPO-ptx rows per microbatch."})
    ptx_max_length: int = field(
        default=128, metadata={"help": "PPO-ptx rows are truncated to this many tokens."}
    )

    # ---------------------------------------------------------------- reporting
    sample_every: int = field(
        default=10,
        metadata={
            "help": "Every N updates, log sample answers to `<output_dir>/samples.jsonl` (and tensorboard)."
        },
    )
    num_samples: int = field(default=8, metadata={"help": "Sample answers per table."})
    eval_gold_prompts: int = field(
        default=200,
        metadata={"help": "Embedded task only: held-out prompts scored by the gold judge before/after PPO."},
    )

    # ---------------------------------------------------------------- TrainingArguments defaults for PPO
    learning_rate: float = field(default=3e-5, metadata={"help": "AdamW learning rate (policy and critic)."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Microbatch size (forward/backward)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every N updates."})
    save_steps: float = field(default=50, metadata={"help": "Checkpoint every N updates."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: where supported)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {self.critic!r}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if not self.use_peft:
            raise ValueError(
                "PPO trains LoRA adapters on a frozen base (the reference): keep `use_peft: true`"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (PPO needs sampling), got {self.temperature}")
        if self.critic == "adapter" and self.activation_checkpointing:
            # Checkpointed layers re-run their forward during backward, when another adapter may be active.
            raise ValueError("activation checkpointing needs `critic: head` or `critic: model`")
        if self.merge_adapter_for_generation and (self.load_in_4bit or self.load_in_8bit):
            raise ValueError("merge_adapter_for_generation needs an unquantized base")
        if self.merge_adapter_for_generation and self.use_dora:
            # the merge adds the plain LoRA delta B @ A; DoRA's magnitude vector would be left out
            raise ValueError("merge_adapter_for_generation does not support use_dora")
        if self.merge_adapter_for_generation and not self.ds3_gather_for_generation:
            raise ValueError(
                "merge_adapter_for_generation needs whole weights: keep ds3_gather_for_generation"
            )

    @property
    def minibatch_size(self) -> int:
        """Rows per optimizer step on this process."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @property
    def rollout_batch_size(self) -> int:
        """Prompts sampled per update on this process."""
        return self.minibatch_size * self.num_mini_batches
