"""Step 1: SFT on the tiny default learns, merges faithfully, and refuses bad input before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from paths import SFT_TINY_YAML
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rlhf_hf import SFTRecipe
from rlhf_hf.data import load_split
from rlhf_hf.evaluation import gold_eval, gold_prompts
from rlhf_hf.generation import encode_prompts
from rlhf_hf.modeling import load_tokenizer
from rlhf_hf.tasks import get_task

TINY_SORT = get_task("tiny-sort")


def test_sft_lowers_eval_loss_and_beats_the_base_on_held_out_prompts(sft_run, tiny_base):
    result, merged = sft_run
    m = result.metrics
    assert m["eval_loss"] < 0.5 * m["eval_loss_before"]
    base_gold = gold_eval(
        AutoModelForCausalLM.from_pretrained(tiny_base), load_tokenizer(str(tiny_base)), 100, task=TINY_SORT
    )
    assert m["gold_score"] > base_gold["score"] + 0.3
    assert m["gold_score"] > 0.85  # it learned the format and mostly sorts
    assert json.loads((merged.parent / "metrics.json").read_text())["gold_score"] == m["gold_score"]


def test_outputs_are_safetensors_adapter_and_merged_model(sft_run):
    _, merged = sft_run
    out = merged.parent
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert (merged / "model.safetensors").exists() and (merged / "tokenizer.json").exists()
    weights = [p.name for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pth") and "model" in p.name]
    assert not weights  # weights only as safetensors (training_args.bin is Trainer's own, never loaded by us)


def test_merged_model_generates_exactly_like_adapter_on_base(sft_run, tiny_base):
    _, merged_dir = sft_run
    tok = load_tokenizer(str(merged_dir))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base), str(merged_dir.parent)
    )
    batch = encode_prompts(tok, gold_prompts(32, TINY_SORT))
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        a = merged.generate(**batch, **kwargs)
        b = adapted.generate(**batch, **kwargs)
        logits_a, logits_b = merged(**batch).logits, adapted(**batch).logits
    assert torch.equal(a, b)
    # merged weights (W + BA rounded once) vs the adapter added at run time: fp32 rounding summed over the
    # network, ~1e-5 at |logit| ~ 10; greedy answers (above) must match exactly.
    torch.testing.assert_close(logits_a, logits_b, atol=1e-4, rtol=1.3e-6)


# ------------------------------------------------------------------------------------------------ bad input
def _rows(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _recipe(tmp_path, data_path, **overrides):
    overrides = {"dataset_test_split": "none", "eval_fraction": 0.0, **overrides}
    return SFTRecipe.from_yaml(
        SFT_TINY_YAML, dataset_name=str(data_path), output_dir=str(tmp_path / "out"), **overrides
    )


def _ok(content="1 2 3"):
    return {
        "messages": [{"role": "user", "content": "sort 3 2 1"}, {"role": "assistant", "content": content}]
    }


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"prompt_text": "sort 1", "answer": "1"}, "missing column"),
        (_ok(content="  "), r"row 2 \(line 3\): field 'messages\[1\].content' is an empty assistant turn"),
        (
            {"messages": [{"role": "user", "content": "sort 1"}, {"role": "assistant", "content": 7}]},
            r"row 2 \(line 3\): field 'messages\[1\].content' must be a string, got int",
        ),
        (
            {"messages": [{"role": "user", "content": "sort 1"}]},
            r"row 2 \(line 3\): field 'messages' has no assistant turn",
        ),
        (
            _ok(content=" ".join(["1"] * 80)),
            r"data.jsonl: 1 bad row .*\n  row 2 \(line 3\): field 'messages' makes \d+ tokens, longer than max_length",
        ),
    ],
)
def test_bad_rows_are_reported_with_row_and_field_before_training(tmp_path, no_model_load, bad_row, message):
    rows = [_ok(), _ok()] + [bad_row]
    if "missing column" in message:
        rows = [bad_row]
    with pytest.raises(ValueError, match=message):
        _recipe(tmp_path, _rows(tmp_path, rows)).run()
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_prompt_completion_errors_name_the_field(tmp_path, no_model_load):
    rows = [{"prompt": "sort 2 1", "completion": "1 2"}, {"prompt": "sort 2 1", "completion": ""}]
    with pytest.raises(ValueError, match="row 1 \\(line 2\\): field 'completion' is empty"):
        _recipe(tmp_path, _rows(tmp_path, rows)).run()


def test_long_rows_are_dropped_only_when_asked(tmp_path):
    rows = [_ok()] * 6 + [_ok(content=" ".join(["1"] * 80))]
    result = _recipe(tmp_path, _rows(tmp_path, rows), drop_long_rows=True, max_steps=1, merge=False).run()
    assert result.metrics["dropped_too_long"] == 1 and result.metrics["train_rows"] == 6


def test_existing_output_dir_is_not_overwritten_without_the_flag(tmp_path, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        _recipe(tmp_path, _rows(tmp_path, [_ok()] * 4), overwrite_output_dir=False).run()
    assert (out / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("rows", "suffix"),
    [
        ([{"prompt": "sort 2 1", "completion": "1 2"}] * 8, ".jsonl"),
        (
            [
                {
                    "prompt": [{"role": "user", "content": "sort 2 1"}],
                    "completion": [{"role": "assistant", "content": "1 2"}],
                }
            ]
            * 8,
            ".json",
        ),
        ([{"text": "numbers 2 1 sorted : 1 2 ."}] * 8, ".jsonl"),
    ],
    ids=["prompt-completion", "conversational-prompt-completion", "text"],
)
def test_other_formats_train(tmp_path, rows, suffix):
    data = tmp_path / f"data{suffix}"
    data.write_text(json.dumps(rows) if suffix == ".json" else "\n".join(json.dumps(r) for r in rows))
    result = _recipe(tmp_path, data, max_steps=2, merge=False, eval_fraction=0.25).run()
    assert result.metrics["train_rows"] == 6 and result.metrics["eval_loss"] > 0


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_local_files_load_through_datasets(tmp_path, suffix):
    from datasets import Dataset

    ds = Dataset.from_dict({"prompt": ["a", "b"], "completion": ["c", "d"]})
    path = tmp_path / f"d{suffix}"
    {".parquet": ds.to_parquet, ".csv": ds.to_csv, ".jsonl": ds.to_json}[suffix](str(path))
    assert load_split(str(path), "train")["completion"] == ["c", "d"]
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_split(str(tmp_path / "saved"), "train")["prompt"] == ["a", "b"]


@pytest.mark.parametrize("bits", [8, 4])
def test_memory_path_kbit_base_paged_adamw_and_checkpointing(tmp_path, tiny_base, monkeypatch, bits):
    """The consumer-GPU settings (k-bit base + LoRA + gradient checkpointing + paged 8-bit AdamW) train on CPU."""
    from trl import SFTTrainer

    data = _rows(tmp_path, [_ok("1 2 3")] * 16)
    overrides = {"gradient_checkpointing": True, "optim": "paged_adamw_8bit", f"load_in_{bits}bit": True}
    recipe = _recipe(tmp_path, data, max_steps=2, merge=False, **overrides)
    seen = {}
    create_optimizer = SFTTrainer.create_optimizer

    def spy(self, *args, **kwargs):
        optimizer = create_optimizer(self, *args, **kwargs)
        seen["optimizer"] = (type(optimizer).__module__, optimizer.args.optim_bits, optimizer.is_paged)
        seen["quantized"] = sum(
            type(m).__name__ in ("Linear8bitLt", "Linear4bit") for m in self.model.modules()
        )
        return self.optimizer

    monkeypatch.setattr(SFTTrainer, "create_optimizer", spy)
    result = recipe.run()
    assert seen["optimizer"] == ("bitsandbytes.optim.adamw", 8, True) and seen["quantized"] > 0
    adapter = load_file(str(Path(result.output_dir) / "adapter_model.safetensors"))
    assert max(v.abs().max().item() for k, v in adapter.items() if "lora_B" in k) > 0  # it trained
