"""Dataset loading (Hub id, local file/dir, embedded task) and the train/eval split.

Each split is converted and validated whole (`validation`) before it is split, so errors name the user's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from .tiny.task import DEFAULT_TASK
from .validation import describe_source

Prepared = TypeVar("Prepared")

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
    path = Path(name)
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
    name: str,
    config: str | None,
    train_split: str,
    test_split: str | None,
    eval_fraction: float,
    seed: int,
    prepare: Callable[[Dataset, str], Prepared],
) -> tuple[Prepared, Prepared | None]:
    """Train and eval sets; holds out `eval_fraction` of train when the dataset has no test split.

    `prepare(split, source)` converts and validates a whole split (see `validation`) before it is split or
    shuffled, so its errors name the user's own rows; it returns anything with `len` and `select`.
    """
    train = load_split(name, train_split, config)
    if train is None:
        raise ValueError(f"Dataset {name!r} has no split {train_split!r}")
    train = prepare(train, describe_source(name, train_split))
    test = load_split(name, test_split, config) if test_split else None
    if test is not None:
        return train, prepare(test, describe_source(name, test_split))
    if eval_fraction > 0 and len(train) > 1:
        parts = Dataset.from_dict({"row": range(len(train))}).train_test_split(
            test_size=eval_fraction, seed=seed
        )
        return train.select(parts["train"]["row"]), train.select(parts["test"]["row"])
    return train, None
