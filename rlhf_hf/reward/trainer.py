"""TRL's `RewardTrainer`, taught InstructGPT's ranked loss: one batch element = one prompt with all K answers.

Why a subclass of `trl.RewardTrainer` (not `transformers.Trainer`): everything except the data layout and the
loss is what we want from it: model/PEFT wrapping (LoRA, k-bit bases, gradient checkpointing), pad-token
wiring for sequence classifiers, metric logging, checkpoints and model cards. Only three hooks change:

- `_prepare_dataset`: ranked rows -> `answer_ids` (K token lists per prompt) instead of chosen/rejected ids;
- the collator flattens each prompt's K answers into consecutive rows, right-padded, so every answer is
  forwarded exactly once (TRL's pairwise layout forwards an answer once per pair it is in: K-1 times), and an
  answer sampled twice for the same prompt once: a confident policy's K samples are often identical (half of
  the demo's), and identical token sequences get identical rewards;
- `compute_loss` reads one reward per answer and applies `ranked_loss` over all C(K, 2) pairs per prompt.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import RewardConfig, RewardTrainer

from ..outputs import AtomicCheckpoints
from ..validation import BadRows, DataError, RowError
from .data import RankedReport, check_ranked
from .loss import ranked_loss
from .model import encode, pad_right

COLUMNS = ["answer_ids", "ranks", "scores", "length"]


# ---------------------------------------------------------------------------------------------- data
@dataclass
class PreparedRanked:
    """Tokenised rows for the trainer, the canonical rows they came from, and what was dropped.

    `report` and `dropped_too_long` (source row numbers) describe the whole source, also after `select`.
    """

    dataset: Dataset
    rows: list[dict]
    report: RankedReport
    dropped_too_long: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, indices: Sequence[int]) -> PreparedRanked:
        indices = list(indices)
        return PreparedRanked(
            self.dataset.select(indices), [self.rows[i] for i in indices], self.report, self.dropped_too_long
        )


def prepare_ranked(
    rows: Iterable[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None,
    drop_long_rows: bool = False,
    ties: str = "drop",
    source: str = "train",
    source_rows: Sequence[int] | None = None,
) -> PreparedRanked:
    """Validate (`check_ranked`), tokenise every (prompt, answer) and check lengths, before any model loads.

    One `DataError` lists every bad row of `source` by its source row number (`source_rows[i]` for `rows[i]`;
    default: its position). A too-long answer would be truncated, losing the end of the answer where the reward
    is read, so it is a bad row unless `drop_long_rows` (then the whole prompt is dropped and counted). A source
    left with no prompt to learn from (every row tied or too long) is an error saying so.
    """
    rows = list(rows)
    source_rows = list(range(len(rows)) if source_rows is None else source_rows)
    bad, report, too_long = BadRows(source), RankedReport(n_rows=len(rows)), []
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    out_rows = []
    for index, raw in zip(source_rows, rows, strict=True):
        with bad.row(index):
            row = check_ranked(raw, index, ties)
            if row is None:
                report.n_dropped_all_tied += 1
                continue
            ids = [encode(tokenizer, row["prompt"], response) for response in row["responses"]]
            longest = max(range(len(ids)), key=lambda j: len(ids[j]))
            if max_length is not None and len(ids[longest]) > max_length:
                if not drop_long_rows:
                    raise RowError(
                        f"responses[{longest}]",
                        f"is {len(ids[longest])} tokens with its prompt, longer than max_length={max_length}",
                        hint="Raise max_length, or set `drop_long_rows: true` to leave such prompts out.",
                    )
                too_long.append(index)
                continue
            columns["answer_ids"].append(ids)
            columns["ranks"].append(row["ranks"])
            columns["scores"].append(row["scores"] or [math.nan] * len(ids))
            columns["length"].append(len(ids[longest]))  # a batch costs its longest row: group_by_length
            out_rows.append(row)
    bad.raise_if_any()
    if not out_rows:
        raise DataError(_nothing_to_learn(source, report, too_long, max_length))
    report.k_histogram = dict(sorted(Counter(len(r["responses"]) for r in out_rows).items()))
    return PreparedRanked(Dataset.from_dict(columns), out_rows, report, too_long)


def _nothing_to_learn(source: str, report: RankedReport, too_long: list[int], max_length: int | None) -> str:
    if report.n_rows == 0:
        return f"{source}: holds no rows, nothing to train a reward model on"
    reasons = []
    if report.n_dropped_all_tied:
        reasons.append(
            f"{report.n_dropped_all_tied} had all their answers tied (equal ranks or scores give no pair to learn "
            "from)"
        )
    if too_long:
        reasons.append(
            f"{len(too_long)} had an answer longer than max_length={max_length} (`drop_long_rows`)"
        )
    return (
        f"{source}: all {report.n_rows} rows were dropped, nothing is left to train a reward model on: "
        + " and ".join(reasons)
        + "."
    )


@dataclass
class RankedCollator:
    """Each prompt's distinct answers as rows (right-padded) + per answer `answer_rows`, `ranks`, `margin_scores`,
    and per prompt `group_sizes` (its K).

    Answer j of the flattened batch (prompt after prompt) is scored by row `answer_rows[j]`: an answer that
    repeats one of the same prompt shares its row, so it is forwarded once and the loss is unchanged. Prompts
    with different K batch together: `group_sizes` says which answers belong to which prompt.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows: list[Sequence[int]] = []
        answer_rows: list[int] = []
        for ex in examples:
            first: dict[tuple[int, ...], int] = {}  # this prompt's distinct answers -> their row
            for ids in ex["answer_ids"]:
                key = tuple(ids)
                if key not in first:
                    first[key] = len(rows)
                    rows.append(ids)
                answer_rows.append(first[key])
        batch = pad_right(rows, self.pad_token_id, self.pad_to_multiple_of)
        batch["answer_rows"] = torch.tensor(answer_rows, dtype=torch.long)
        batch["group_sizes"] = torch.tensor([len(ex["answer_ids"]) for ex in examples], dtype=torch.long)
        batch["ranks"] = torch.tensor([r for ex in examples for r in ex["ranks"]], dtype=torch.long)
        batch["margin_scores"] = torch.tensor(
            [math.nan if s is None else s for ex in examples for s in ex["scores"]], dtype=torch.float32
        )
        return batch


# ---------------------------------------------------------------------------------------------- trainer
class RankedRewardTrainer(AtomicCheckpoints, RewardTrainer):
    """`trl.RewardTrainer` on ranked rows (see module docstring); accepts a tokenised or a raw ranked dataset.

    `margin_scale` turns score differences into a loss margin (0 = off); `args.center_rewards_coefficient`
    keeps rewards near zero as in TRL.
    """

    def __init__(self, *args: Any, margin_scale: float = 0.0, **kwargs: Any) -> None:
        self.margin_scale = margin_scale
        default_collator = kwargs.get("data_collator") is None
        super().__init__(*args, **kwargs)
        if default_collator:  # ours replaces TRL's pairwise one, once the parent has settled the pad token
            self.data_collator = RankedCollator(
                self.processing_class.pad_token_id, self.args.pad_to_multiple_of
            )

    def _prepare_dataset(
        self,
        dataset: Dataset,
        processing_class: PreTrainedTokenizerBase,
        args: RewardConfig,
        dataset_name: str,
    ) -> Dataset:
        if "answer_ids" in dataset.column_names:
            if "length" not in dataset.column_names:  # tokenised elsewhere: what group_by_length sorts by
                dataset = dataset.add_column("length", [max(map(len, ids)) for ids in dataset["answer_ids"]])
            return dataset
        return prepare_ranked(
            dataset, processing_class, max_length=args.max_length, source=dataset_name
        ).dataset

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> torch.utils.data.Sampler | None:
        """transformers groups lengths per *device* batch; grouped per global batch instead, the order of prompts
        and so the run does not depend on how many processes share a batch (2 x 8 trains as 1 x 16)."""
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset  # `length`: _prepare_dataset
        global_batch = (
            self.args.per_device_train_batch_size
            * self.args.gradient_accumulation_steps
            * self.accelerator.num_processes
        )
        return LengthGroupedSampler(global_batch, lengths=dataset["length"])

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = list(COLUMNS)

    def compute_loss(
        self,
        model: PreTrainedModel,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        mode = "train" if self.model.training else "eval"
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        )
        rewards = outputs.logits[inputs["answer_rows"]] if "answer_rows" in inputs else outputs.logits
        loss, stats = ranked_loss(
            rewards,
            inputs["group_sizes"],
            inputs["ranks"],
            inputs.get("margin_scores"),
            margin_scale=self.margin_scale,
            center_coef=self.args.center_rewards_coefficient,
        )
        self._log_batch(mode, inputs, rewards, stats)
        return (loss, outputs) if return_outputs else loss

    def _log_batch(
        self, mode: str, inputs: dict[str, torch.Tensor], rewards: torch.Tensor, stats: dict[str, float]
    ) -> None:
        """The same metrics TRL's RewardTrainer logs, so dashboards compare like for like."""
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics = self._metrics[mode]
        metrics["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            # Reduced per process first: processes hold different numbers of answers (K varies per prompt), and
            # gathering tensors of unequal length hangs or fails.
            r = rewards.detach().float()
            local = torch.stack([r.min(), r.max(), r.sum(), torch.tensor(float(r.numel()), device=r.device)])
            mins, maxs, sums, counts = self.accelerator.gather(local[None]).unbind(-1)
            metrics["min_reward"].append(mins.min().item())
            metrics["mean_reward"].append((sums.sum() / counts.sum()).item())
            metrics["max_reward"].append(maxs.max().item())
            for key, name in (("accuracy", "accuracy"), ("margin_mean", "margin")):
                value = torch.tensor(stats[key], device=rewards.device)
                value = self.accelerator.gather_for_metrics(value).nanmean().item()
                if not math.isnan(value):
                    metrics[name].append(value)
