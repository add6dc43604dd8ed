"""Model/tokenizer loading: local dirs, dtype, 8-bit / 4-bit bitsandbytes on CPU, LoRA defaults, tokenizer fixes."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import TaskType, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl import ModelConfig

from rlhf_hf.modeling import (
    DEFAULT_CHAT_TEMPLATE,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    lora_config,
    model_kwargs,
    prepare_tokenizer,
    resolve_model_path,
)


def _word_tokenizer(words: list[str], **special) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def test_pad_distinct_from_eos_is_picked_from_the_vocab():
    tok = prepare_tokenizer(
        _word_tokenizer(["<unk>", "</s>", "<pad>", "a"], eos_token="</s>", pad_token="</s>")
    )
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    assert len(tok) == 4  # no token added, so no embedding resize


def test_pad_falls_back_to_eos_only_when_nothing_else_exists(caplog):
    with caplog.at_level(logging.WARNING):
        tok = prepare_tokenizer(_word_tokenizer(["</s>", "a"], eos_token="</s>"))
    assert tok.pad_token == "</s>" and "distinct from eos" in caplog.text


def test_default_chat_template_has_generation_markers_and_masks_the_answer():
    tok = prepare_tokenizer(_word_tokenizer(["<unk>", "</s>", "<pad>", "hi", "yo"], eos_token="</s>"))
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [
        t
        for t, m in zip(tok.convert_ids_to_tokens(out["input_ids"]), out["assistant_masks"], strict=True)
        if m
    ]
    assert masked == ["yo", "</s>"]


def test_existing_chat_template_is_kept(tiny_base):
    from rlhf_hf.tasks.tiny.model import CHAT_TEMPLATE

    assert load_tokenizer(str(tiny_base)).chat_template == CHAT_TEMPLATE


def test_tiny_id_resolves_to_the_cached_local_dir(tiny_base):
    assert resolve_model_path("rlhf-hf/tiny") == str(tiny_base)
    assert resolve_model_path(str(tiny_base)) == str(tiny_base)
    assert resolve_model_path("org/model") == "org/model"  # a Hub id
    with pytest.raises(FileNotFoundError, match="Model path /some/dir does not exist"):
        resolve_model_path("/some/dir")


def test_safe_defaults_in_from_pretrained_kwargs():
    kwargs = model_kwargs(ModelConfig(model_name_or_path="x", dtype="bfloat16"))
    assert kwargs["trust_remote_code"] is False and kwargs["dtype"] is torch.bfloat16
    assert "quantization_config" not in kwargs


def test_loads_from_a_local_dir_in_the_requested_dtype(tiny_base):
    model = load_causal_lm(ModelConfig(model_name_or_path=str(tiny_base), dtype="bfloat16"))
    assert next(model.parameters()).dtype is torch.bfloat16


@pytest.mark.parametrize(("bits", "layer_cls"), [(8, "Linear8bitLt"), (4, "Linear4bit")])
def test_kbit_base_loads_runs_and_trains_lora_on_cpu(tiny_base, bits, layer_cls):
    cfg = ModelConfig(
        model_name_or_path=str(tiny_base),
        use_peft=True,
        lora_r=4,
        load_in_8bit=bits == 8,
        load_in_4bit=bits == 4,
    )
    model = load_causal_lm(cfg)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer_cls
    full = load_causal_lm(ModelConfig(model_name_or_path=str(tiny_base)))
    ids = torch.tensor([[5, 17, 10, 8, 11, 3, 6]])
    with torch.no_grad():
        quantized_logits, full_logits = model(ids).logits.float(), full(ids).logits
    # quantisation error is small relative to the logits, but the weights really are quantised
    assert 0 < (quantized_logits - full_logits).abs().max() < 0.25 * full_logits.abs().max()
    peft_model = get_peft_model(model, lora_config(cfg))
    loss = peft_model(ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for n, p in peft_model.named_parameters() if "lora_" not in n)


def test_sequence_classifier_is_scalar_and_pools_the_last_real_token(tiny_base):
    tok = load_tokenizer(str(tiny_base))
    model = load_sequence_classifier(
        ModelConfig(model_name_or_path=str(tiny_base)), pad_token_id=tok.pad_token_id
    )
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    tok.padding_side = "right"
    batch = tok(["sort 1 2", "sort 1 2 <pad> <pad>"], return_tensors="pt", padding=True)
    scores = model(**batch).logits
    assert scores.shape == (2, 1)
    # trailing pads do not change the score; the padded row runs other kernel shapes: fp32 rounding only
    torch.testing.assert_close(scores[0], scores[1])


def test_lora_defaults():
    causal = lora_config(ModelConfig(model_name_or_path="x", use_peft=True))
    assert causal.target_modules == "all-linear" and causal.task_type == TaskType.CAUSAL_LM
    seq = lora_config(ModelConfig(model_name_or_path="x", use_peft=True), TaskType.SEQ_CLS)
    assert seq.modules_to_save == ["score"]
    assert lora_config(ModelConfig(model_name_or_path="x", use_peft=False)) is None
