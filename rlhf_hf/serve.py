"""Using a trained model: an interactive chat REPL, batch generation from a file, and export as a plain HF dir."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer

from .generation import encode_prompts, generate, generate_ids, sampling_config
from .modeling import load_for_inference

HELP = "commands: /reset (forget the conversation), /exit (quit)"


def chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    system: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> list[dict]:
    """Multi-turn chat on stdin/stdout, the reply streamed token by token. Returns the last conversation."""
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    start = len(history)
    print(f"rlhf-hf chat. {HELP}", file=stdout, flush=True)
    streamer = _Streamer(tokenizer, stdout)
    while True:
        print(">>> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line or line.strip() == "/exit":  # EOF or explicit exit
            print("", file=stdout)
            return history
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            del history[start:]
            print("(conversation reset)", file=stdout, flush=True)
            continue
        history.append({"role": "user", "content": line})
        batch = encode_prompts(tokenizer, [history]).to(model.device)
        config = sampling_config(
            tokenizer, max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature
        )
        out = generate_ids(model, batch["input_ids"], batch["attention_mask"], config, streamer=streamer)
        reply = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        history.append({"role": "assistant", "content": reply})


class _Streamer(TextStreamer):
    """`TextStreamer` that writes to a given stream (the REPL is tested through pipes)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stream: TextIO) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        print(text, end="\n" if stream_end else "", file=self.stream, flush=True)


def read_prompts(path: str | Path) -> list[str | list[dict]]:
    """Prompts from a .txt (one per line) or .jsonl (a `prompt` field: string or messages) file."""
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    prompts = []
    for i, line in enumerate(lines):
        row = json.loads(line)
        if "prompt" not in row:
            raise ValueError(f"{path} line {i + 1}: missing field `prompt`")
        prompts.append(row["prompt"])
    return prompts


def generate_file(model_path: str, prompts_path: str, output: str, **kwargs) -> int:
    model, tokenizer = load_for_inference(model_path)
    prompts = read_prompts(prompts_path)
    answers = generate(model, tokenizer, prompts, progress=True, **kwargs)
    with open(output, "w") as f:
        for prompt, answer in zip(prompts, answers, strict=True):
            f.write(json.dumps({"prompt": prompt, "answer": answer}) + "\n")
    return len(answers)


def export(model_path: str, output_dir: str, *, run_dir: str | None = None) -> Path:
    """A standalone dir loadable with plain `AutoModelForCausalLM.from_pretrained`: merged weights, tokenizer
    with its chat template, and a model card listing the stages, data and metrics of the run."""
    model, tokenizer = load_for_inference(model_path)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out = Path(output_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(model_card(model_path, run_dir))
    return out


def _stage_lines(run_dir: Path) -> Iterable[str]:
    for metrics_file in sorted(run_dir.rglob("metrics.json")):
        stage = metrics_file.parent.relative_to(run_dir)
        metrics = json.loads(metrics_file.read_text())
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))
        yield f"| `{stage}` | {shown} |"


def model_card(model_path: str, run_dir: str | None) -> str:
    lines = [
        "---",
        "library_name: transformers",
        "tags: [rlhf, ppo, rlhf_hf]",
        "---",
        "# RLHF policy trained with rlhf_hf",
        "",
        "InstructGPT's three steps: supervised fine-tuning on demonstrations, a reward model trained on ranked",
        "comparisons (K answers per prompt), and PPO against that reward model with a KL penalty to the SFT model.",
        "",
        f"Exported from `{model_path}`. Load it with `AutoModelForCausalLM.from_pretrained` and chat through the",
        "tokenizer's chat template.",
    ]
    if run_dir and Path(run_dir).is_dir():
        run = Path(run_dir)
        lines += ["", "## Stages and metrics", "", "| stage | metrics |", "|---|---|", *_stage_lines(run)]
        config = run / "pipeline.yaml"
        if config.exists():
            lines += [
                "",
                "## Configuration (models and data)",
                "",
                "```yaml",
                config.read_text().strip(),
                "```",
            ]
    return "\n".join(lines) + "\n"
