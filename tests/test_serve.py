"""Using the result: chat REPL driven through stdin, generation from a file, export reloadable by plain HF."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_hf.evaluation import gold_prompts
from rlhf_hf.generation import encode_prompts, generate
from rlhf_hf.serve import chat, export, generate_file, load_for_inference
from rlhf_hf.tasks import get_task


def test_chat_repl_multi_turn_reset_and_exit(sft_run):
    _, merged = sft_run
    model, tok = load_for_inference(str(merged))
    stdin = io.StringIO("sort 3 1 2\norder 9 8\n/reset\nsort 5 4\n/exit\nsort 1 1\n")
    stdout = io.StringIO()
    history = chat(model, tok, max_new_tokens=10, stdin=stdin, stdout=stdout)
    text = stdout.getvalue()
    assert "(conversation reset)" in text and text.count(">>> ") == 5  # stopped at /exit, last line unread
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "sort 5 4"
    ]  # reset forgot the first two
    # what was streamed is the reply the model gives to that conversation
    expected = generate(model, tok, [[{"role": "user", "content": "sort 5 4"}]], max_new_tokens=10)[0]
    assert history[-1] == {"role": "assistant", "content": expected} and expected in text


def test_chat_cli_through_a_pipe(sft_run):
    _, merged = sft_run
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_hf.cli", "chat", "--model", str(merged), "--max_new_tokens", "8"],
        input="sort 2 1\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(">>> ") == 2  # prompt, answer, prompt, EOF


def test_generate_file(sft_run, tmp_path):
    _, merged = sft_run
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ["sort 2 1", "sort 3 1 2"]))
    out = tmp_path / "a.jsonl"
    assert generate_file(str(merged), str(prompts), str(out), max_new_tokens=8) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["sort 2 1", "sort 3 1 2"] and all(r["answer"] for r in rows)


def test_export_reloads_with_plain_transformers_and_gives_the_same_greedy_output(sft_run, tmp_path):
    result, merged = sft_run
    adapter_dir = merged.parent  # export merges the adapter itself
    out = export(str(adapter_dir), str(tmp_path / "export"), run_dir=str(adapter_dir))
    plain = AutoModelForCausalLM.from_pretrained(out)
    plain_tok = AutoTokenizer.from_pretrained(out)
    assert plain_tok.chat_template and (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "gold_score" in card and "reward model" in card
    prompts = gold_prompts(16, get_task("tiny-sort"))
    ref_model, ref_tok = load_for_inference(str(merged))
    with torch.no_grad():
        assert generate(plain, plain_tok, prompts) == generate(ref_model, ref_tok, prompts)


def test_export_replaces_only_an_earlier_export_of_ours(sft_run, tmp_path):
    _, merged = sft_run
    out = tmp_path / "export"
    export(str(merged), str(out))
    export(str(merged), str(out))  # an earlier export: replaced
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write: notes.txt"):
        export(str(merged), str(out))
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").exists()


def test_chat_commands_interrupts_and_a_conversation_longer_than_the_context(sft_run, monkeypatch):
    _, merged = sft_run
    model, tok = load_for_inference(str(merged))
    stdout = io.StringIO()
    history = chat(model, tok, max_new_tokens=6, stdin=io.StringIO("/help\n/what\nsort 2 1\n"), stdout=stdout)
    text = stdout.getvalue()
    assert [m["content"] for m in history if m["role"] == "user"] == ["sort 2 1"]  # commands never reach it
    assert "(commands: /help" in text and "(unknown command /what; commands: /help" in text

    class CtrlC(io.StringIO):
        def readline(self, *_):
            raise KeyboardInterrupt

    assert chat(model, tok, stdin=CtrlC(), stdout=io.StringIO()) == []  # returns quietly, no traceback

    # a context with room for one user turn and the reply: every new turn pushes the previous exchange out
    def prompt_tokens(messages):
        return len(encode_prompts(tok, [messages])["input_ids"][0])

    one_turn = prompt_tokens([{"role": "user", "content": "sort 3 1 2"}])
    monkeypatch.setattr(model.config, "max_position_embeddings", one_turn + 2 + 6)
    stdout = io.StringIO()
    lines = "sort 3 1 2\nsort 4 2\nsort 9 8 7 6 5 4 3 2 1 0 9 8 7 6 5 4 3 2 1\n"
    history = chat(model, tok, max_new_tokens=6, stdin=io.StringIO(lines), stdout=stdout)
    text = stdout.getvalue()
    assert "(context full: the oldest 2 message(s) were left out)" in text
    assert f"(message too long: it does not fit the model's {one_turn + 8}-token context" in text
    assert [m["content"] for m in history if m["role"] == "user"] == ["sort 4 2"]
    expected = generate(model, tok, [[{"role": "user", "content": "sort 4 2"}]], max_new_tokens=6)[0]
    assert history[-1] == {"role": "assistant", "content": expected}


def test_chat_accepts_every_model_dir_we_write(sft_run):
    """The SFT output dir is an adapter dir (its base resolved from adapter_config.json), `merged/` a model."""
    result, merged = sft_run
    prompts = ["sort 3 1 2", "order 5 4"]
    answers = {}
    for path in (merged, merged.parent):
        model, tok = load_for_inference(str(path))
        answers[path] = generate(model, tok, prompts, max_new_tokens=6)
    assert answers[merged] == answers[merged.parent]
