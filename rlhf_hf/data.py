"""Dataset loading (Hub id, local file/dir, embedded task) and up-front validation of SFT data.

Validation runs before any model is loaded, so a bad row costs seconds, not a failed training run, and every
error names the row index and the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import PreTrainedTokenizerBase

from .modeling import is_missing_local_path
from .tiny.task import DEFAULT_TASK

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

# Embedded datasets of the tiny sorting task: name -> (builder, rows per split). Seeds differ per split, so the
# test split holds prompts never seen in training.
EMBEDDED = {
    "rlhf-hf/tiny-sort-sft": ("sft", {"train": 2000, "test": 200}),
    "rlhf-hf/tiny-sort-prompts": ("prompts", {"train": 2000, "test": 200}),
    "rlhf-hf/tiny-sort-corpus": ("corpus", {"train": 5000, "test": 200}),
}
SPLIT_SEEDS = {"train": 1, "test": 2}


def embedded_dataset(name: str, split: str) -> Dataset:
    kind, sizes = EMBEDDED[name]
    n, seed = sizes[split], SPLIT_SEEDS[split] + 100 * list(EMBEDDED).index(name)
    if kind == "sft":
        return Dataset.from_list(DEFAULT_TASK.sft_rows(n, seed))
    if kind == "prompts":
        return Dataset.from_dict(
            {"prompt": [[{"role": "user", "content": p}] for p in DEFAULT_TASK.prompts(n, seed)]}
        )
    return Dataset.from_dict({"text": DEFAULT_TASK.corpus(n, seed)})


def load_split(name: str, split: str, config: str | None = None) -> Dataset | None:
    """One split of a dataset; `None` if the dataset has no such split (the caller may then hold data out)."""
    if name in EMBEDDED:
        return embedded_dataset(name, split) if split in EMBEDDED[name][1] else None
    if is_missing_local_path(name):
        raise FileNotFoundError(f"Dataset {name} does not exist (no such local file or directory)")
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix not in FILE_BUILDERS:
            raise ValueError(f"Unsupported data file {path}: use one of {sorted(FILE_BUILDERS)}")
        data = load_dataset(FILE_BUILDERS[path.suffix], data_files={"train": str(path)})
    elif path.is_dir() and (path / "dataset_dict.json").exists():
        data = load_from_disk(str(path))
    elif path.is_dir() and (path / "dataset_info.json").exists():
        data = DatasetDict({"train": load_from_disk(str(path))})
    else:  # a dir of data files, or a Hub id
        data = load_dataset(name, config)
    return data.get(split)


def train_eval_splits(
    name: str, config: str | None, train_split: str, test_split: str | None, eval_fraction: float, seed: int
) -> tuple[Dataset, Dataset | None]:
    """Train and eval sets; holds out `eval_fraction` of train when the dataset has no test split."""
    train = load_split(name, train_split, config)
    if train is None:
        raise ValueError(f"Dataset {name!r} has no split {train_split!r}")
    evaluation = load_split(name, test_split, config) if test_split else None
    if evaluation is None and eval_fraction > 0 and len(train) > 1:
        parts = train.train_test_split(test_size=eval_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


# ---------------------------------------------------------------------------------------------- SFT validation
SFTFormat = Literal["messages", "prompt_completion", "text"]


@dataclass
class ValidationReport:
    format: str
    n_rows: int
    dropped_too_long: list[int] = field(default_factory=list)


def sft_format(columns: list[str], where: str = "dataset") -> SFTFormat:
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    raise ValueError(
        f"{where}: missing column: SFT data needs `messages`, `prompt` + `completion`, or `text`; "
        f"found columns {columns}"
    )


def _check_messages(messages: object, row: int, name: str, *, need_assistant: bool) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"row {row}: field `{name}` must be a non-empty list of messages")
    for j, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"row {row}: field `{name}[{j}]` must be a dict with `role` and `content`")
        content = message["content"]
        if not isinstance(content, str):
            raise ValueError(
                f"row {row}: field `{name}[{j}].content` is {type(content).__name__}, expected a string"
            )
        if message["role"] == "assistant" and not content.strip():
            raise ValueError(f"row {row}: field `{name}[{j}].content` is an empty assistant turn")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"row {row}: field `{name}` has no assistant turn to learn from")


def _check_text(value: object, row: int, name: str) -> None:
    if not isinstance(value, str):
        raise ValueError(
            f"row {row}: field `{name}` is {type(value).__name__}, expected a string or messages"
        )
    if not value.strip():
        raise ValueError(f"row {row}: field `{name}` is empty")


def _row_length(example: dict, fmt: SFTFormat, tokenizer: PreTrainedTokenizerBase) -> int:
    if fmt == "text":
        return len(tokenizer(example["text"])["input_ids"])
    if fmt == "messages":
        return len(
            tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=True)["input_ids"]
        )
    prompt, completion = example["prompt"], example["completion"]
    if isinstance(prompt, list):
        return len(
            tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        )
    return len(tokenizer(prompt + completion)["input_ids"])


def validate_sft_dataset(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    drop_long_rows: bool = False,
    where: str = "train",
) -> tuple[Dataset, ValidationReport]:
    """Check every row's schema and length; returns the (possibly filtered) dataset and a report.

    Rows longer than `max_length` would be silently truncated by the trainer, cutting off the very answer being
    learned, so they are an error unless the user opted into dropping them.
    """
    fmt = sft_format(dataset.column_names, where)
    too_long: list[int] = []
    for i, example in enumerate(dataset):
        if fmt == "messages":
            _check_messages(example["messages"], i, "messages", need_assistant=True)
        elif fmt == "prompt_completion":
            for name in ("prompt", "completion"):
                value = example[name]
                if isinstance(value, list):
                    _check_messages(value, i, name, need_assistant=name == "completion")
                else:
                    _check_text(value, i, name)
        else:
            _check_text(example["text"], i, "text")
        if max_length is not None and (n := _row_length(example, fmt, tokenizer)) > max_length:
            if not drop_long_rows:
                raise ValueError(
                    f"{where} row {i}: field `{'messages' if fmt == 'messages' else fmt}` is {n} tokens, longer "
                    f"than max_length={max_length}; raise max_length or set `drop_long_rows: true`"
                )
            too_long.append(i)
    if too_long:
        logger.warning(
            "%s: dropping %d rows longer than max_length=%s: %s",
            where,
            len(too_long),
            max_length,
            too_long[:20],
        )
        keep = sorted(set(range(len(dataset))) - set(too_long))
        dataset = dataset.select(keep)
    return dataset, ValidationReport(fmt, len(dataset), too_long)
