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
from .outputs import MARKER, clear_output_dir, finish_output_dir, read_marker, start_output_dir

HELP = "commands: /help, /reset (forget the conversation), /exit (quit; or Ctrl-D, Ctrl-C)"


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
    """Multi-turn chat on stdin/stdout, the reply streamed token by token. Returns the last conversation.

    Lines starting with `/` are commands (`/help`, `/reset`, `/exit`), never sent to the model. EOF or Ctrl-C at
    the prompt ends the chat; Ctrl-C during a reply drops that turn. When the conversation no longer fits the
    model's context (with room for `max_new_tokens`), the oldest turns are left out, with a notice.
    """
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    start = len(history)
    context = _context_length(model)
    print(f"rlhf-hf chat. {HELP}", file=stdout, flush=True)
    streamer = _Streamer(tokenizer, stdout)
    while True:
        print(">>> ", end="", file=stdout, flush=True)
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            line = ""
        line = line.strip() if line else None
        if line is None or line == "/exit":  # EOF, Ctrl-C or an explicit exit
            print("", file=stdout)
            return history
        if not line:
            continue
        if line.startswith("/"):
            if line == "/reset":
                del history[start:]
                print("(conversation reset)", file=stdout, flush=True)
            else:
                unknown = "" if line == "/help" else f"unknown command {line}; "
                print(f"({unknown}{HELP})", file=stdout, flush=True)
            continue
        history.append({"role": "user", "content": line})
        dropped = _fit_context(tokenizer, history, start, context - max_new_tokens)
        if dropped < 0:
            history.pop()
            print(
                f"(message too long: it does not fit the model's {context}-token context with "
                f"{max_new_tokens} tokens for the reply; not sent)",
                file=stdout,
                flush=True,
            )
            continue
        if dropped:
            print(f"(context full: the oldest {dropped} message(s) were left out)", file=stdout, flush=True)
        batch = encode_prompts(tokenizer, [history]).to(model.device)
        config = sampling_config(
            tokenizer, max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature
        )
        try:
            out = generate_ids(model, batch["input_ids"], batch["attention_mask"], config, streamer=streamer)
        except KeyboardInterrupt:
            history.pop()
            streamer.end()
            print("(reply interrupted; turn dropped)", file=stdout, flush=True)
            continue
        reply = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        history.append({"role": "assistant", "content": reply})


def _context_length(model: PreTrainedModel) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def _fit_context(tokenizer: PreTrainedTokenizerBase, history: list[dict], start: int, budget: int) -> int:
    """Drop the oldest turns after `history[:start]` (the system prompt) until the templated prompt has at most
    `budget` tokens; returns how many messages were dropped, or -1 (history unchanged) if the last message
    alone does not fit."""
    kept = list(history)
    while len(encode_prompts(tokenizer, [kept])["input_ids"][0]) > budget:
        if len(kept) - start <= 1:
            return -1
        # a user turn and the reply to it go together, so the conversation still starts with a user turn
        n = 2 if len(kept) - start > 2 and kept[start + 1]["role"] == "assistant" else 1
        del kept[start : start + n]
    dropped = len(history) - len(kept)
    history[:] = kept
    return dropped


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
    with its chat template, and a model card listing the stages, data and metrics of the run.

    A non-empty `output_dir` is refused unless it is an earlier export (then what that export wrote is replaced).
    """
    out = Path(output_dir)
    if out.is_dir() and any(p.name != MARKER for p in out.iterdir()):
        if (read_marker(out) or {}).get("stage") != "export":
            raise FileExistsError(
                f"Refusing to export into {out}: it is not empty and not an earlier export of rlhf-hf. "
                "Choose a new or empty directory."
            )
        clear_output_dir(out, "export dir")  # refuses files the earlier export did not write
    model, tokenizer = load_for_inference(model_path)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    start_output_dir(out, "export")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(model_card(model_path, run_dir))
    finish_output_dir(out)
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
