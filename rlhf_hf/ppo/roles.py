"""One frozen base, four roles: the models PPO needs, sharing a single copy of the SFT weights.

The base is the merged SFT model. It carries LoRA adapters: `policy` (trained), `value` (trained, plus a scalar
head, both initialised from the reward model as InstructGPT initialised its value function from the RM) and
`reward` (frozen, plus the RM's head); the reference policy is the base with every adapter switched off.

Switching roles sets each LoRA layer's active adapter directly. PEFT's `set_adapter` / `disable_adapter` also
rewrite `requires_grad` (they freeze every inactive adapter), which would stop one of the two trainable adapters
from learning whenever the other one ran last; here `requires_grad` is set once, at construction.

Options: `critic: head` puts the value head on the policy's last hidden state (one forward gives logits and
values); `critic: model` trains a separate AutoModelForSequenceClassification in full; a reward model dir without
`adapter_config.json` is loaded as a separate full classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_FILE
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import GenerationConfig, PreTrainedModel, set_seed
from trl.trainer.utils import disable_dropout_in_model

from ..generation import generate_ids
from ..modeling import (
    is_adapter_dir,
    is_quantized,
    load_causal_lm,
    load_classifier,
    load_lora_config,
    lora_config,
    merge_adapter_into,
    model_kwargs,
    zero3_init_disabled,
)
from ..reward.model import IDENTITY_STATS, normalize, pooled_index, read_stats
from .config import PPORecipeConfig

logger = logging.getLogger(__name__)

POLICY, VALUE, REWARD = "policy", "value", "reward"
HEAD_FILE = "value_head.safetensors"


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, as `generate` does for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_hidden(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Final (normed) hidden states from the decoder stack alone: no vocabulary projection is wasted."""
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


def answer_logits(
    model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, width: int, with_hidden: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Next-token logits for the last `width` tokens, from the model's own forward (and its final hidden states
    there when `with_hidden`).

    The model's forward applies whatever its head does (Granite's `logits_scaling`, Cohere's `logit_scale`,
    Gemma-2's softcapping, ...), so these are the logits `generate` samples from; `logits_to_keep` projects only
    the `width` positions that predict those tokens, never the prompt's. The hidden states are taken from the
    backbone's output by a hook: `output_hidden_states` would keep every layer's.
    """
    length = input_ids.shape[1]
    keep = slice(length - width - 1, length - 1)
    captured: list[Tensor] = []
    hook = None
    if with_hidden:
        backbone = getattr(model, model.base_model_prefix)
        hook = backbone.register_forward_hook(lambda module, args, out: captured.append(out[0][:, keep]))
    try:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            use_cache=False,
            logits_to_keep=width + 1,  # an int: the form every causal LM's forward takes (one spare position)
        )
    finally:
        if hook is not None:
            hook.remove()
    return out.logits[:, :-1], captured[0] if with_hidden else None


def scalar_head(weight: Tensor) -> nn.Linear:
    head = nn.Linear(weight.shape[-1], 1, bias=False, device=weight.device, dtype=torch.float32)
    with torch.no_grad():
        head.weight.copy_(weight.reshape(1, -1).float())
    return head


def apply_head(head: nn.Linear, hidden: Tensor) -> Tensor:
    return head(hidden.to(head.weight.dtype)).squeeze(-1)


class PPOModel(nn.Module):
    """The four roles behind one `nn.Module`, so Trainer/Accelerate wrap, place and optimise it as one model.

    `forward` is the training pass (policy logits on the answer + values, and the PPO-ptx LM loss); the other
    methods are the no-grad rollout passes. Sequences are `[left-padded prompt | answer of width T]`; the logits
    and values for answer token t come from position P - 1 + t, i.e. `hidden[:, -T - 1 : -1]`. The reward reads
    the conversation as the RM stage does (`reward.model.conversation_batch`, right-padded, `pooled_index`).
    """

    def __init__(
        self,
        lm: PeftModel,
        *,
        critic: str,
        value_head: nn.Linear | None = None,
        reward_head: nn.Linear | None = None,
        reward_model: PreTrainedModel | None = None,
        value_model: PreTrainedModel | None = None,
        reward_stats: dict | None = None,
        normalize_values: bool = False,
        pad_token_id: int | None = None,
    ) -> None:
        super().__init__()
        self.lm, self.critic, self.pad_token_id = lm, critic, pad_token_id
        self.value_head, self.reward_head = value_head, reward_head
        self.reward_model, self.value_model = reward_model, value_model
        self.reward_stats = reward_stats
        # The critic starts as the RM, whose outputs are raw scores; PPO's returns are built from normalised
        # scores, so values are mapped the same way (a fixed affine map, not a parameter).
        self.value_stats = reward_stats if normalize_values and reward_stats else IDENTITY_STATS
        self.lora_layers = [m for m in lm.modules() if isinstance(m, BaseTunerLayer)]
        if getattr(lm.get_base_model(), "hf_device_map", None) is not None:
            self.hf_device_map = lm.get_base_model().hf_device_map  # k-bit: Trainer must not move it
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    # ---------------------------------------------------------------- parameters
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Policy LoRA, and the critic: value LoRA + head, the value head alone, or the whole value model."""
        yield from self.adapter_parameters(POLICY)
        if self.critic == "adapter":
            yield from self.adapter_parameters(VALUE)
        if self.value_head is not None:
            yield from self.value_head.parameters()
        if self.value_model is not None:
            yield from self.value_model.parameters()

    def adapter_parameters(self, name: str) -> Iterator[nn.Parameter]:
        for m in self.lora_layers:
            for layer_name in m.adapter_layer_names:
                weights = getattr(m, layer_name)
                if name in weights:
                    yield from (
                        weights[name].parameters()
                        if isinstance(weights[name], nn.Module)
                        else [weights[name]]
                    )

    @property
    def causal_lm(self) -> PreTrainedModel:
        return self.lm.get_base_model()

    # ---------------------------------------------------------------- adapter routing
    @contextmanager
    def adapter(self, name: str | None) -> Iterator[None]:
        """Route every LoRA layer through adapter `name`, or through none (the reference); restores on exit."""
        saved = [(m, m._active_adapter, m._disable_adapters) for m in self.lora_layers]
        for m in self.lora_layers:
            m._disable_adapters = name is None
            if name is not None:
                m._active_adapter = [name]
        try:
            yield
        finally:
            for m, active, disabled in saved:
                m._active_adapter, m._disable_adapters = active, disabled

    @contextmanager
    def merged_policy(self) -> Iterator[None]:
        """Policy delta added into the base weights (LoRA layers bypassed); exact base weights restored after.

        Subtracting the delta again would not give the original bf16 weights back, and the base is also the
        reference model, so the touched weights are copied once per generation instead.
        """
        saved = []
        with torch.no_grad():
            for m in self.lora_layers:
                if POLICY in getattr(m, "lora_A", {}):
                    weight = m.get_base_layer().weight
                    saved.append((weight, weight.data.clone()))
                    weight.data += m.get_delta_weight(POLICY).to(weight.dtype)
        try:
            with self.adapter(None):
                yield
        finally:
            with torch.no_grad():
                for weight, original in saved:
                    weight.data.copy_(original)

    # ---------------------------------------------------------------- role passes
    def hidden(self, input_ids: Tensor, attention_mask: Tensor, adapter: str | None) -> Tensor:
        with self.adapter(adapter):
            return last_hidden(self.causal_lm, input_ids, attention_mask)

    def policy(
        self, input_ids: Tensor, attention_mask: Tensor, answer_width: int
    ) -> tuple[Tensor, Tensor | None]:
        """Policy logits on the answer, and the values too when the critic is a head on the policy."""
        with self.adapter(POLICY):
            logits, hidden = answer_logits(
                self.causal_lm, input_ids, attention_mask, answer_width, with_hidden=self.critic == "head"
            )
        if self.critic == "head":
            return logits, self._values(self.value_head, hidden)
        return logits, None

    def reference(self, input_ids: Tensor, attention_mask: Tensor, answer_width: int) -> Tensor:
        """The SFT model's logits: the shared base with all adapters off."""
        with self.adapter(None):
            return answer_logits(self.causal_lm, input_ids, attention_mask, answer_width)[0]

    def values(self, input_ids: Tensor, attention_mask: Tensor, answer_width: int) -> Tensor:
        """V(state before answer token t), [B, T], for the adapter and model critics."""
        if self.critic == "model":
            hidden = last_hidden(self.value_model, input_ids, attention_mask)
            return self._values(self.value_model.score, hidden[:, -answer_width - 1 : -1])
        hidden = self.hidden(input_ids, attention_mask, VALUE)
        return self._values(self.value_head, hidden[:, -answer_width - 1 : -1])

    def _values(self, head: nn.Linear, hidden: Tensor) -> Tensor:
        return normalize(apply_head(head, hidden), self.value_stats)

    def scores(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The reward model's score of right-padded conversations (`reward.model.conversation_batch`), read at
        `reward.model.pooled_index`: the tokens and the position the RM stage trains and scores with."""
        if self.reward_model is not None:
            out = self.reward_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return out.logits[:, 0].float()
        hidden = self.hidden(input_ids, attention_mask, REWARD)
        index = pooled_index(input_ids, self.pad_token_id)
        return apply_head(
            self.reward_head, hidden[torch.arange(len(index), device=hidden.device), index]
        ).float()

    def ptx_loss(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Next-token loss of the policy on right-padded pretraining text (PPO-ptx)."""
        with self.adapter(POLICY):  # predictions for tokens 1..L-1
            logits, _ = answer_logits(self.causal_lm, input_ids, attention_mask, input_ids.shape[1] - 1)
        labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        answer_width: int,
        ptx_input_ids: Tensor | None = None,
        ptx_attention_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The training pass, in one call so DDP sees one forward per backward."""
        logits, values = self.policy(input_ids, attention_mask, answer_width)
        if values is None:
            values = self.values(input_ids, attention_mask, answer_width)
        out = {"logits": logits, "values": values}
        if ptx_input_ids is not None:
            out["ptx_loss"] = self.ptx_loss(ptx_input_ids, ptx_attention_mask)
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        generation_config: GenerationConfig,
        merge: bool = False,
        batch_size: int | None = None,
    ) -> Tensor:
        """`[prompt | sampled answer]` rows from the policy (unmerged adapter, or merged when `merge`).

        `batch_size` prompts per `generate` call (the KV cache grows with it); shorter answers are right-padded.
        """
        width, size = input_ids.shape[1], batch_size or len(input_ids)
        with self.merged_policy() if merge else self.adapter(POLICY):
            answers = [
                generate_ids(self.causal_lm, ids, mask, generation_config)[:, width:]
                for ids, mask in zip(input_ids.split(size), attention_mask.split(size), strict=True)
            ]
        longest = max(a.shape[1] for a in answers)
        pad = generation_config.pad_token_id
        answers = [nn.functional.pad(a, (0, longest - a.shape[1]), value=pad) for a in answers]
        return torch.cat([input_ids, torch.cat(answers)], dim=1)

    # ---------------------------------------------------------------- saving and loading
    def save_adapter(self, name: str, directory: Path) -> None:
        """A standard PEFT adapter dir (`PeftModel.from_pretrained(base, directory)` loads it)."""
        directory.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.lm, adapter_name=name)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, directory / ADAPTER_FILE)
        self.lm.peft_config[name].save_pretrained(str(directory))

    def _load_adapter(self, name: str, directory: Path) -> None:
        """Inverse of `save_adapter`; a checkpoint that lacks some of the adapter's weights is an error."""
        result = set_peft_model_state_dict(self.lm, load_file(directory / ADAPTER_FILE), adapter_name=name)
        missing = [k for k in result.missing_keys if f".{name}." in k]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{directory}: the checkpoint does not match the {name} adapter (missing {missing[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )

    def save_trainable(self, directory: Path) -> None:
        """`<dir>/policy` (adapter) and `<dir>/value` (adapter + head, head, or full model, per the critic)."""
        self.save_adapter(POLICY, directory / POLICY)
        value_dir = directory / VALUE
        if self.critic == "model":
            self.value_model.save_pretrained(value_dir, safe_serialization=True)
            return
        if self.critic == "adapter":
            self.save_adapter(VALUE, value_dir)
        value_dir.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.value_head.weight.detach().cpu().contiguous()}, value_dir / HEAD_FILE)

    def load_trainable(self, directory: Path) -> None:
        """In-place inverse of `save_trainable` (parameters keep their identity, so the optimizer still holds them)."""
        device = next(self.trainable_parameters()).device
        self._load_adapter(POLICY, directory / POLICY)
        value_dir = directory / VALUE
        if self.critic == "model":
            state = load_file(value_dir / "model.safetensors", device=str(device))
            result = self.value_model.load_state_dict(
                state, strict=False
            )  # save_pretrained drops tied copies
            current = self.value_model.state_dict()
            loaded = {current[k].data_ptr() for k in state if k in current}
            missing = [k for k in result.missing_keys if current[k].data_ptr() not in loaded]
            if missing or result.unexpected_keys:
                raise ValueError(
                    f"{value_dir}: the checkpoint does not match the value model (missing {missing[:3]}, "
                    f"unexpected {result.unexpected_keys[:3]})"
                )
            return
        if self.critic == "adapter":
            self._load_adapter(VALUE, value_dir)
        with torch.no_grad():
            self.value_head.weight.copy_(load_file(value_dir / HEAD_FILE)["weight"])


# -------------------------------------------------------------------------------------------- construction
def _reward_adapter(lm: PeftModel, reward_dir: Path) -> tuple[LoraConfig, Tensor]:
    """Load a SEQ_CLS LoRA adapter onto the causal LM as adapter `reward`; return its config and score weight.

    The causal LM has no `score` module, so the LoRA weights go into a fresh causal-LM adapter and the head
    (saved through `modules_to_save=["score"]`) is read from the adapter file into our own head.
    """
    config = load_lora_config(reward_dir)
    config.task_type, config.modules_to_save, config.inference_mode = "CAUSAL_LM", None, False
    lm.add_adapter(REWARD, config)
    weights = load_file(reward_dir / ADAPTER_FILE)
    head = [k for k in weights if ".score." in k or k.endswith("score.weight")]
    if len(head) != 1:
        raise ValueError(f"{reward_dir}: expected one `score` head weight in {ADAPTER_FILE}, found {head}")
    score = weights.pop(head[0])
    result = set_peft_model_state_dict(lm, weights, adapter_name=REWARD)
    missing = [k for k in result.missing_keys if f".{REWARD}." in k]
    if missing:
        raise ValueError(
            f"{reward_dir}: adapter weights missing for {missing[:3]}... (not trained on this base?)"
        )
    return config, score


def _copy_adapter(lm: PeftModel, source: str, target: str) -> None:
    set_peft_model_state_dict(lm, get_peft_model_state_dict(lm, adapter_name=source), adapter_name=target)


def _classifier(cfg: PPORecipeConfig, path: str, pad_token_id: int) -> PreTrainedModel:
    return load_classifier(
        path, pad_token_id=pad_token_id, **model_kwargs(cfg, trust_remote_code=cfg.trust_remote_code)
    )


def _gathered_copy(weight: nn.Parameter) -> Tensor:
    """A copy of the whole tensor, also when DeepSpeed ZeRO-3 loaded it as an empty shard (`zero3_init_flag`)."""
    if not hasattr(weight, "ds_id"):
        return weight.detach().clone()
    import deepspeed

    with deepspeed.zero.GatheredParameters([weight]):
        return weight.detach().clone()


def build_ppo_model(cfg: PPORecipeConfig, pad_token_id: int) -> PPOModel:
    """Base + roles per `cfg.critic` and the kind of reward model in `cfg.reward_model_path`."""
    set_seed(cfg.seed)  # LoRA initialisation is random: seed it so runs (and resumed runs) start identically
    reward_dir = Path(cfg.reward_model_path)
    base = load_causal_lm(cfg, trust_remote_code=cfg.trust_remote_code)
    base.config.pad_token_id = pad_token_id
    lm = get_peft_model(base, lora_config(cfg), adapter_name=POLICY)
    if cfg.init_policy_adapter:  # iterated RLHF: continue from an earlier round's policy
        state = load_file(Path(cfg.init_policy_adapter) / ADAPTER_FILE)
        missing = [
            k
            for k in set_peft_model_state_dict(lm, state, adapter_name=POLICY).missing_keys
            if f".{POLICY}." in k
        ]
        if missing:
            raise ValueError(
                f"init_policy_adapter {cfg.init_policy_adapter}: no weights for {missing[:3]}..."
            )
    value_head = reward_head = reward_model = value_model = None
    if is_adapter_dir(reward_dir):
        reward_config, score = _reward_adapter(lm, reward_dir)
        reward_head = scalar_head(score)
        if cfg.critic == "adapter":  # the value function starts as the reward model (LoRA and head)
            lm.add_adapter(VALUE, reward_config)
            _copy_adapter(lm, REWARD, VALUE)
    else:
        reward_model = _classifier(cfg, str(reward_dir), pad_token_id)
        reward_model.requires_grad_(False)
        score = _gathered_copy(reward_model.score.weight)
        if cfg.critic == "adapter":
            lm.add_adapter(VALUE, lora_config(cfg))
    if cfg.critic in ("adapter", "head"):
        value_head = scalar_head(score)
    else:
        value_model = _value_model(cfg, reward_dir, pad_token_id)
    for module in (lm, reward_model, value_model):
        if module is not None:
            disable_dropout_in_model(module)  # PPO's ratio compares passes
    device = next(base.parameters()).device
    heads = [h.to(device) if h is not None else None for h in (value_head, reward_head)]
    return PPOModel(
        lm,
        critic=cfg.critic,
        value_head=heads[0],
        reward_head=heads[1],
        reward_model=reward_model,
        value_model=value_model,
        reward_stats=read_stats(reward_dir, missing=None),  # the recipe warns when normalising without
        normalize_values=cfg.normalize_reward,
        pad_token_id=pad_token_id,
    )


def _value_model(cfg: PPORecipeConfig, reward_dir: Path, pad_token_id: int) -> PreTrainedModel:
    """`critic: model`: a full classifier initialised from the RM (adapter merged into a fresh base copy)."""
    if not is_adapter_dir(reward_dir):
        return _classifier(cfg, str(reward_dir), pad_token_id)
    if is_quantized(cfg):
        raise ValueError("critic: model trains a full model: it cannot be built from a quantized base")
    # Merging needs whole weights: under ZeRO-3 load them whole here; DeepSpeed shards the result at `prepare`.
    with zero3_init_disabled():
        base = _classifier(cfg, cfg.model_name_or_path, pad_token_id)
        return merge_adapter_into(base, reward_dir)
