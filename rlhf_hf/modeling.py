"""Loading models and tokenizers for every stage: one place for dtype, bitsandbytes, LoRA and tokenizer fixes.

Every `from_pretrained` of the package is here, on a Hub id or a local dir; embedded ids (`rlhf-hf/tiny`) are
resolved through `rlhf_hf.tasks`. Also here: adapter dirs (is it one, merge it) and whole-weight copies for work
on the main process under DeepSpeed ZeRO-3.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, prepare_model_for_kbit_training
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_layers import GenericForSequenceClassification
from trl import ModelConfig
from trl.trainer.utils import get_peft_config, get_quantization_config

from .tasks import embedded_model_path

logger = logging.getLogger(__name__)

# For tokenizers that ship without a chat template. Plain-text role headers (no new tokens, so no embedding
# resize), eos closes every turn so generation stops after the assistant's, and `{% generation %}` markers
# let TRL build the assistant-only loss mask.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '### ' + message['role'] + ':\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + eos_token }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '### assistant:\\n' }}{%- endif %}"
)
# Existing tokens that make a good pad when a tokenizer has none (or pads with eos), tried in order.
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|endoftext|>", "<unk>")


def is_missing_local_path(name_or_path: str) -> bool:
    """A path that does not exist but is clearly meant as a local one, not a Hub id: `./x`, `/x`, `~/x`, `a/b/c`,
    `x.jsonl`-like file names, or `a/b` whose `a` is a local dir."""
    text = str(name_or_path)
    if Path(text).expanduser().exists():
        return False
    return (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or Path(text).suffix in (".json", ".jsonl", ".parquet", ".csv", ".txt", ".safetensors")
        or ("/" in text and Path(text.split("/")[0]).is_dir())
    )


def resolve_model_path(name_or_path: str) -> str:
    """The embedded default's id -> its cached local dir; a local dir as it is; a Hub id passed on.

    A missing local path (`is_missing_local_path`) is a `FileNotFoundError` naming it, instead of the Hub
    client's "couldn't connect" or "Repo id must be in the form" about a string never meant as a repo id.
    """
    if embedded := embedded_model_path(name_or_path):
        return embedded
    if is_missing_local_path(name_or_path):
        raise FileNotFoundError(f"Model path {name_or_path} does not exist (no such local file or directory)")
    path = Path(name_or_path).expanduser()
    return str(path) if path.exists() else name_or_path


@dataclass
class InferenceModel:
    """What to load for generation from a dir we wrote: the model (or LoRA adapter) and its tokenizer."""

    model: str  # a model dir / Hub id, or the adapter dir when `base` is set
    tokenizer: str
    base: str | None = None  # the adapter's base model (resolved)


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file()


def resolve_inference_model(name_or_path: str) -> InferenceModel:
    """Accept every model dir a run of ours writes: a model dir (`sft/merged`), an adapter dir (`ppo/policy`,
    `sft`), or a stage dir holding one (`ppo` -> `ppo/merged`, else `ppo/policy`), plus Hub ids.

    An adapter resolves its base from `adapter_config.json` and its tokenizer from the adapter dir, the stage dir
    above it (PPO writes the tokenizer next to `policy/`) or the base. Errors name the missing file.
    """
    resolved = resolve_model_path(name_or_path)
    root = Path(resolved)
    if not root.is_dir():  # a Hub id
        return InferenceModel(resolved, resolved)
    for candidate in (root, root / "merged", root / "policy"):
        if (candidate / "config.json").is_file():
            return InferenceModel(str(candidate), str(candidate if _has_tokenizer(candidate) else root))
        adapter_config = candidate / ADAPTER_CONFIG
        if adapter_config.is_file():
            base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{adapter_config} names no base model (`base_model_name_or_path`)")
            try:
                base = resolve_model_path(base)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"The base model of adapter {candidate} ({base}, from {adapter_config}) does not exist"
                ) from None
            tokenizer = next((str(d) for d in (candidate, candidate.parent) if _has_tokenizer(d)), base)
            return InferenceModel(str(candidate), tokenizer, base)
    raise FileNotFoundError(
        f"{name_or_path} holds no model: expected config.json (a model dir), adapter_config.json (a LoRA adapter "
        "dir) or a `merged/` or `policy/` subdir (a stage's output dir)"
    )


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad distinct from eos where the vocabulary allows it, left padding, a chat template if there is none.

    A pad equal to eos makes "first pad" ambiguous with "end of answer"; we avoid it without adding tokens,
    since a new token would need an embedding resize (and a trained embedding row) in every stage.
    """
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        pad = next((t for t in PAD_CANDIDATES if t in vocab and vocab[t] != tokenizer.eos_token_id), None)
        if pad is not None:
            tokenizer.pad_token = pad
        elif tokenizer.pad_token is None:
            logger.warning("No pad token distinct from eos in the vocabulary: padding with eos.")
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right; training collators pad as they need
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def load_tokenizer(
    name_or_path: str, *, revision: str = "main", trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(name_or_path), revision=revision, trust_remote_code=trust_remote_code
    )
    return prepare_tokenizer(tokenizer)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype or "auto"
    return getattr(torch, dtype)


def model_kwargs(model_config: ModelConfig, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """`from_pretrained` kwargs from a `trl.ModelConfig`: dtype, attention, revision and bitsandbytes."""
    kwargs: dict[str, Any] = {
        "revision": model_config.model_revision,
        "dtype": resolve_dtype(model_config.dtype),
        "trust_remote_code": trust_remote_code,
    }
    if model_config.attn_implementation:
        kwargs["attn_implementation"] = model_config.attn_implementation
    quantization = get_quantization_config(model_config)
    if quantization is not None:
        if model_config.load_in_4bit and not isinstance(kwargs["dtype"], torch.dtype):
            quantization.bnb_4bit_compute_dtype = torch.float32
        kwargs["quantization_config"] = quantization
        # k-bit weights cannot be moved after loading: place them on this process's device right away.
        device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
        kwargs["device_map"] = {"": device}
    return kwargs


def is_quantized(model_config: ModelConfig) -> bool:
    return bool(model_config.load_in_8bit or model_config.load_in_4bit)


def _prepare_if_quantized(
    model: PreTrainedModel, model_config: ModelConfig, gradient_checkpointing: bool
) -> PreTrainedModel:
    if is_quantized(model_config):
        # Casts norms to fp32 and enables input grads so LoRA on a frozen k-bit base trains stably.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if gradient_checkpointing:
            # What PEFT's `use_gradient_checkpointing=True` does, through transformers' current name (PEFT calls the
            # deprecated `gradient_checkpointing_enable`).
            model.enable_input_require_grads()
            model.activation_checkpointing_enable()
    return model


def load_causal_lm(
    model_config: ModelConfig, *, trust_remote_code: bool = False, gradient_checkpointing: bool = False
) -> PreTrainedModel:
    """A causal LM from a Hub id or local dir, in the dtype / bit width the config asks for."""
    path = resolve_model_path(model_config.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        path, **model_kwargs(model_config, trust_remote_code=trust_remote_code)
    )
    return _prepare_if_quantized(model, model_config, gradient_checkpointing)


def sequence_classifier_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The scalar-head classifier class for a model config: transformers' own `*ForSequenceClassification`, or, for
    causal LMs without one (Granite, Cohere, ...), the same generic classifier (backbone + `score` head, pooling the
    last non-pad token) built on the architecture's own pretrained-model class.
    """
    return _classifier_class(type(config))


@cache
def _classifier_class(config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
    try:
        return AutoModelForSequenceClassification._model_mapping[config_class]
    except KeyError:
        pass
    try:
        causal_lm = AutoModelForCausalLM._model_mapping[config_class]
    except KeyError:
        raise ValueError(
            f"{config_class.model_type}: neither a sequence classifier nor a causal LM in transformers; "
            "a reward model needs one of them"
        ) from None
    base = next(b for b in causal_lm.__mro__[1:] if issubclass(b, PreTrainedModel))
    name = causal_lm.__name__.removesuffix("ForCausalLM") + "ForSequenceClassification"
    # The checkpoint's backbone weights live under the architecture's own prefix (`model.`, `transformer.`, ...).
    return type(name, (GenericForSequenceClassification, base), {"base_model_prefix": base.base_model_prefix})


def load_classifier(path: str, *, pad_token_id: int | None = None, **kwargs: Any) -> PreTrainedModel:
    """`from_pretrained` of a scalar (num_labels=1) classifier from a causal-LM or classifier checkpoint.

    A causal-LM checkpoint has no `score` head yet (initialised fresh: expected); any other missing weight means
    the backbone did not load, which is an error rather than a silently random model.
    """
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    path = resolve_model_path(path)
    config = AutoConfig.from_pretrained(
        path,
        revision=kwargs.get("revision", "main"),
        trust_remote_code=kwargs.get("trust_remote_code", False),
    )
    config.num_labels = 1
    cls = sequence_classifier_class(config)
    with suppress_seqcls_warning():
        model, info = cls.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    missing = [k for k in info["missing_keys"] if not k.startswith("score.")]
    if missing:
        raise ValueError(f"{path}: {cls.__name__} found no weights for {missing[:3]} in the checkpoint")
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model


def load_sequence_classifier(
    model_config: ModelConfig,
    *,
    pad_token_id: int,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
) -> PreTrainedModel:
    """A scalar-output (num_labels=1) classifier, e.g. a reward model initialised from the SFT model.

    `pad_token_id` must be set: the classifier pools the last non-pad token of each row.
    """
    model = load_classifier(
        model_config.model_name_or_path,
        pad_token_id=pad_token_id,
        **model_kwargs(model_config, trust_remote_code=trust_remote_code),
    )
    return _prepare_if_quantized(model, model_config, gradient_checkpointing)


# -------------------------------------------------------------------------------------------- adapter dirs
def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter dir (LoRA weights + the base they were trained on), as opposed to a whole model."""
    return (Path(path) / ADAPTER_CONFIG).exists()


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model an adapter dir was trained on (resolved like any model name)."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    return resolve_model_path(config["base_model_name_or_path"])


def load_lora_config(adapter_dir: str | Path) -> LoraConfig:
    return LoraConfig.from_pretrained(str(adapter_dir))


def merge_adapter_into(model: PreTrainedModel, adapter_dir: str | Path) -> PreTrainedModel:
    """`model` with the adapter in `adapter_dir` merged into its weights (a plain model again)."""
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def load_unsharded(
    model_config: ModelConfig, adapter_dir: str | Path | None = None, path: str | Path | None = None
) -> PreTrainedModel:
    """The config's model (or the one at `path`), unquantised, with `adapter_dir` merged in: whole weights on this
    process alone.

    For work on the main process only (merging, gold evaluation): under ZeRO-3 a model loaded the usual way
    would be a set of empty shards that only all processes together can run.
    """
    with zero3_init_disabled():
        model = AutoModelForCausalLM.from_pretrained(
            str(path) if path else resolve_model_path(model_config.model_name_or_path),
            revision=None if path else model_config.model_revision,
            dtype=resolve_dtype(model_config.dtype),
            trust_remote_code=getattr(model_config, "trust_remote_code", False),
        )
        if adapter_dir is not None:
            model = merge_adapter_into(model, adapter_dir)
    return model


def merge_adapter(model_config: ModelConfig, adapter_dir: Path, merged_dir: Path) -> torch.nn.Module:
    """Base (unquantised, in the config's dtype) + adapter, merged and saved as a standalone model.

    The base is reloaded without bitsandbytes because LoRA deltas cannot be merged into 8/4-bit weights exactly.
    """
    merged = load_unsharded(model_config, adapter_dir)
    merged.save_pretrained(merged_dir, safe_serialization=True)
    return merged


def load_pretrained(path: str | Path, adapter_dir: str | Path | None = None) -> PreTrainedModel:
    """A saved causal LM as it was written (eval mode), optionally with an adapter merged in: for evaluation."""
    model = AutoModelForCausalLM.from_pretrained(str(path))
    if adapter_dir is not None:
        model = merge_adapter_into(model, adapter_dir)
    return model.eval()


def load_for_inference(
    path: str, dtype: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any model dir we write (merged model, LoRA adapter onto its base, a stage dir) or a Hub id, for generation."""
    found = resolve_inference_model(path)
    kwargs = {"dtype": resolve_dtype(dtype)} if dtype else {}
    if found.base is not None:
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(found.base, **kwargs), found.model
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(found.model, **kwargs)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), load_tokenizer(found.tokenizer)


def lora_config(
    model_config: ModelConfig, task_type: TaskType | str = TaskType.CAUSAL_LM
) -> LoraConfig | None:
    """TRL's LoRA config from the ModelConfig, defaulting to all linear layers; the score head trains in full."""
    if not model_config.use_peft:
        return None
    config = get_peft_config(model_config)
    config.task_type = TaskType(task_type)
    if config.target_modules is None:
        config.target_modules = "all-linear"
    if config.task_type == TaskType.SEQ_CLS and not config.modules_to_save:
        config.modules_to_save = ["score"]
    return config


@contextmanager
def zero3_init_disabled() -> Iterator[None]:
    """`from_pretrained` inside loads whole models even under DeepSpeed ZeRO-3 (`zero3_init_flag`), whose
    partitioned init would otherwise give the main process empty shards that no other process completes."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None or not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)
