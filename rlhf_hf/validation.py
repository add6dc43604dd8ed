"""One validator for every stage's data: field checks for text and chat messages, and `BadRows`, which collects
every bad row of a source into one error before any model is loaded.

Row numbers are the source's own: rows are numbered from 0 in the order the file holds them, before any split or
shuffle, and a JSONL file's rows also give their line number (from 1, as an editor shows it), e.g.
"row 1 (line 2): field 'responses' needs at least 2 answers to compare, got 1".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MAX_LISTED = 20  # bad rows listed in one error; the rest are counted


class RowError(ValueError):
    """One problem with one field of one row. `BadRows` supplies the source and the row number."""

    def __init__(self, field_name: str | None, problem: str, row: int | None = None, hint: str | None = None):
        self.field_name, self.problem, self.row, self.hint = field_name, problem, row, hint
        self.what = f"field '{field_name}' {problem}" if field_name else problem
        super().__init__(self.what if row is None else f"row {row}: {self.what}")


class DataError(ValueError):
    """Bad input data, raised before any model loads; the message names the source, its rows and their fields."""


class BadRows:
    """Collects the `RowError`s of one source; `raise_if_any` raises them all as one `DataError`.

    `with bad.row(i): ...` records a `RowError` raised inside under row `i` and carries on with the next row.
    """

    def __init__(self, source: str, lines: list[int] | None = None) -> None:
        self.source, self.lines = source, lines  # lines: each row's line number, when not a JSONL file's own
        self.errors: list[tuple[int, RowError]] = []

    @contextlib.contextmanager
    def row(self, index: int) -> Iterator[None]:
        try:
            yield
        except RowError as err:
            self.errors.append((index, err))

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        unique = {(index, err.what): err for index, err in self.errors}  # shared oasst1 ancestors repeat
        errors = sorted(((index, err) for (index, _), err in unique.items()), key=lambda e: e[0])
        lines = self.lines or jsonl_line_numbers(self.source)
        rows = {index for index, _ in errors}
        listed = [
            f"  row {index}{f' (line {lines[index]})' if lines and index < len(lines) else ''}: {err.what}"
            for index, err in errors[:MAX_LISTED]
        ]
        if len(errors) > MAX_LISTED:
            listed.append(f"  ... and {len(errors) - MAX_LISTED} more")
        hints = list(dict.fromkeys(err.hint for _, err in errors if err.hint))
        order = "file" if self.lines or Path(self.source).is_file() else "dataset"
        numbering = f"rows numbered from 0 in {order} order" + (", lines from 1" if lines else "")
        message = f"{self.source}: {len(rows)} bad row{'s' * (len(rows) > 1)} ({numbering}):\n" + "\n".join(
            listed
        )
        raise DataError(message + "".join(f"\n{hint}" for hint in hints))


def jsonl_line_numbers(source: str) -> list[int] | None:
    """Line number (from 1) of each row of a JSONL file, skipping blank lines as `datasets` does; else None."""
    path = Path(source)
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        return [n for n, line in enumerate(f, start=1) if line.strip()]


def describe_source(name: str, split: str) -> str:
    """How error messages name a split: a local file by its path (its rows are the file's), else name + split."""
    return name if Path(name).is_file() else f"{name} (split '{split}')"


# ---------------------------------------------------------------------------------------------- field checks
def is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def check_messages(value: Any, name: str, *, need_assistant: bool = False) -> None:
    """A non-empty list of `{role, content}` dicts with string values, no empty assistant turn, some text."""
    if not isinstance(value, list) or not value:
        raise RowError(name, f"must be a non-empty list of messages, got {_kind(value)}")
    for j, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError(f"{name}[{j}]", f"must be a dict with 'role' and 'content', got {_kind(message)}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise RowError(f"{name}[{j}].{key}", f"must be a string, got {_kind(message.get(key))}")
        if message["role"] == "assistant" and not message["content"].strip():
            raise RowError(f"{name}[{j}].content", "is an empty assistant turn")
    if not any(m["content"].strip() for m in value):
        raise RowError(name, "is empty or whitespace-only")
    if need_assistant and not any(m["role"] == "assistant" for m in value):
        raise RowError(name, "has no assistant turn to learn from")


def check_text(value: Any, name: str, *, need_assistant: bool = False) -> None:
    """A non-blank string or a list of chat messages (`check_messages`)."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(name, "is empty or whitespace-only")
    elif isinstance(value, list):
        check_messages(value, name, need_assistant=need_assistant)
    else:
        raise RowError(name, f"must be a non-empty string or a list of messages, got {_kind(value)}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def token_count(tokenizer: PreTrainedTokenizerBase, value: str | list, **template_kwargs: Any) -> int:
    """Tokens of a string, or of messages rendered by the chat template (as TRL tokenises them)."""
    if isinstance(value, list):
        ids = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **template_kwargs)
        return len(ids["input_ids"])
    return len(tokenizer(value)["input_ids"])


# ---------------------------------------------------------------------------------------------- SFT data
SFTFormat = Literal["messages", "prompt_completion", "text"]


@dataclass
class ValidationReport:
    format: str
    n_rows: int
    dropped_too_long: list[int] = field(default_factory=list)


SFT_COLUMNS = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"), "text": ("text",)}


def sft_format(columns: list[str], source: str = "dataset", wanted: str | None = None) -> SFTFormat:
    """The SFT format named by `wanted` (its columns must be there), else the one the columns identify."""
    if wanted is not None:
        if missing := [c for c in SFT_COLUMNS[wanted] if c not in columns]:
            raise DataError(
                f"{source}: dataset_format {wanted!r} needs column(s) {missing}; found columns {columns}"
            )
        return wanted
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    raise DataError(
        f"{source}: missing column: SFT data needs `messages`, `prompt` + `completion`, or `text` (or set "
        f"`dataset_format: oasst1` for an oasst1 message table); found columns {columns}"
    )


def check_sft_row(example: dict, fmt: SFTFormat) -> None:
    if fmt == "messages":
        check_messages(example["messages"], "messages", need_assistant=True)
    elif fmt == "prompt_completion":
        prompt, completion = example["prompt"], example["completion"]
        check_text(prompt, "prompt")
        check_text(completion, "completion", need_assistant=True)
        if isinstance(prompt, str) != isinstance(completion, str):
            raise RowError(
                "completion",
                f"is {'a string' if isinstance(completion, str) else 'messages'} but 'prompt' is not: use strings "
                "for both or message lists for both",
            )
    elif not isinstance(example["text"], str):
        raise RowError("text", f"must be a string, got {_kind(example['text'])}")
    else:
        check_text(example["text"], "text")


def sft_length(example: dict, fmt: SFTFormat, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens of the sequence TRL's SFTTrainer builds from the row: the chat template for messages; for strings the
    text (prompt + completion) with the eos that TRL appends when it is not there yet."""
    if fmt == "messages":
        return token_count(tokenizer, example["messages"])
    text = example["text"] if fmt == "text" else example["prompt"] + example["completion"]
    if isinstance(text, list):
        return token_count(tokenizer, text)
    eos = tokenizer.eos_token or ""
    return token_count(tokenizer, text if text.endswith(eos) else text + eos)


def validate_sft_dataset(
    dataset: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    drop_long_rows: bool = False,
    source: str = "train",
    dataset_format: str | None = None,
    source_rows: list[int] | None = None,
) -> tuple[Any, ValidationReport]:
    """Check every row's schema and length; returns the (possibly filtered) dataset and a report.

    Rows longer than `max_length` would be silently truncated by the trainer, cutting off the very answer being
    learned, so they are bad rows unless the user opted into dropping them. A source with nothing left to train
    on is an error that says why. `source_rows[i]` is row i's number in the source (default: i), for data
    converted from another layout (oasst1 trees).
    """
    fmt = sft_format(dataset.column_names, source, dataset_format)
    number = source_rows or list(range(len(dataset)))
    bad, too_long = BadRows(source), []
    column = "messages" if fmt == "messages" else "text" if fmt == "text" else "completion"
    for i, example in enumerate(dataset):
        with bad.row(number[i]):
            check_sft_row(example, fmt)
            if max_length is not None and (n := sft_length(example, fmt, tokenizer)) > max_length:
                if not drop_long_rows:
                    raise RowError(
                        column,
                        f"makes {n} tokens, longer than max_length={max_length}",
                        hint="Raise max_length, or set `drop_long_rows: true` to leave such rows out.",
                    )
                too_long.append(i)
    bad.raise_if_any()
    if len(dataset) == 0:
        raise DataError(f"{source}: holds no rows, nothing to train on")
    if len(too_long) == len(dataset):
        raise DataError(
            f"{source}: all {len(dataset)} rows are longer than max_length={max_length} tokens (chat template and "
            "eos included) and `drop_long_rows: true` dropped them: nothing is left to train on; raise max_length"
        )
    if too_long:
        logger.warning(
            "%s: dropping %d rows longer than max_length=%s: rows %s",
            source,
            len(too_long),
            max_length,
            [number[i] for i in too_long[:20]],
        )
        dataset = dataset.select(sorted(set(range(len(dataset))) - set(too_long)))
    return dataset, ValidationReport(fmt, len(dataset), too_long)


# ---------------------------------------------------------------------------------------------- prompts (PPO)
def validate_prompts(
    dataset: Any,
    tokenizer: PreTrainedTokenizerBase | None,
    max_prompt_length: int | None,
    source: str = "train",
) -> None:
    """Every row has a non-empty `prompt` (string or chat messages) of at most `max_prompt_length` tokens with the
    chat template's generation prompt. Runs before any model is loaded."""
    if "prompt" not in dataset.column_names:
        raise DataError(f"{source}: missing column 'prompt'; found columns {dataset.column_names}")
    bad = BadRows(source)
    for i, prompt in enumerate(dataset["prompt"]):
        with bad.row(i):
            check_text(prompt, "prompt")
            if tokenizer is None or max_prompt_length is None:
                continue
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            if (n := token_count(tokenizer, messages, add_generation_prompt=True)) > max_prompt_length:
                raise RowError("prompt", f"is {n} tokens, longer than max_prompt_length={max_prompt_length}")
    bad.raise_if_any()
    if len(dataset) == 0:
        raise DataError(f"{source}: holds no prompts")
