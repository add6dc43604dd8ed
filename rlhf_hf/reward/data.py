"""Ranked-comparison rows for reward-model training (InstructGPT step 2).

Labellers rank K answers to one prompt and the reward model learns from all C(K, 2) pairs, so the
unit of data is one prompt with all of its ranked answers, not a single pair. Every input format is
converted to one canonical row::

    {"prompt": str | list[message], "responses": list[str | list[message]],
     "ranks": list[int], "scores": list[float] | None}

``ranks`` are dense (1 = best, equal ranks = tie, no gaps). ``scores`` (higher = better) are kept
when the source has them, so that the loss can derive a margin; ``None`` otherwise. The key is
always present so that rows from one source form a uniform ``datasets.Dataset`` schema.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datasets import Dataset
from trl.data_utils import common_prefix_length

from ..validation import BadRows, RowError, check_text, is_messages

Message = dict[str, Any]
Text = str | list[Message]

__all__ = [
    "RankedReport",
    "check_ranked",
    "pairs_from_ranks",
    "to_ranked",
    "validate_ranked",
    "validate_row",
]


def _row_error(index: int | None, field_name: str, problem: str) -> RowError:
    return RowError(field_name, problem, row=index)


def _missing(index: int | None, column: str, row: Mapping[str, Any], hint: str = "") -> RowError:
    present = sorted(k for k, v in row.items() if v is not None)
    return RowError(None, f"missing column {column}; the row has columns {present}{hint}", row=index)


def _numbers(values: Any, index: int, field_name: str) -> list[float]:
    """Check that ``values`` is a list of finite real numbers (rank/score columns)."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise _row_error(index, field_name, f"must be a list of numbers, got {type(values).__name__}")
    values = list(values)
    for j, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _row_error(index, field_name, f"entry {j} is not a number: {value!r}")
        if not math.isfinite(value):
            raise _row_error(index, field_name, f"entry {j} is not finite: {value!r}")
    return [float(v) for v in values]


def _dense_ranks(keys: Sequence[float]) -> list[int]:
    """Rank 1 for the smallest key; equal keys share a rank and ranks have no gaps."""
    rank_of = {key: rank for rank, key in enumerate(sorted(set(keys)), start=1)}
    return [rank_of[key] for key in keys]


def _canonical(prompt: Text, responses: list[Text], ranks: list[int], scores: list[float] | None) -> dict:
    return {"prompt": prompt, "responses": list(responses), "ranks": ranks, "scores": scores}


def _from_listwise(row: Mapping[str, Any], index: int) -> dict:
    responses = row["responses"]
    if not isinstance(responses, list):
        raise _row_error(index, "responses", f"must be a list, got {type(responses).__name__}")
    scores = None if row.get("scores") is None else _numbers(row["scores"], index, "scores")
    if row.get("ranks") is not None:
        ranks = _dense_ranks(_numbers(row["ranks"], index, "ranks"))
    elif scores is not None:
        ranks = _dense_ranks([-s for s in scores])
    else:  # format (c): answers listed best first
        ranks = list(range(1, len(responses) + 1))
    return _canonical(row["prompt"], responses, ranks, scores)


def _pair_scores(row: Mapping[str, Any], index: int) -> list[float] | None:
    """Keep a pairwise margin as scores ``[margin, 0]`` so that score_w - score_l == margin."""
    if row.get("margin") is not None:
        return [_numbers([row["margin"]], index, "margin")[0], 0.0]
    if row.get("score_chosen") is not None and row.get("score_rejected") is not None:
        return _numbers([row["score_chosen"], row["score_rejected"]], index, "score_chosen/score_rejected")
    return None


def _from_pairwise(row: Mapping[str, Any], index: int) -> dict:
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if prompt is None:  # format (e): TRL's implicit prompt = shared message prefix
        if not (is_messages(chosen) and is_messages(rejected)):
            hint = "; an implicit prompt is only split off message lists (raw hh-rlhf: `dataset_format: hh-rlhf`)"
            raise _missing(index, "'prompt'", row, hint)
        n = common_prefix_length(chosen, rejected)
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    return _canonical(prompt, [chosen, rejected], [1, 2], _pair_scores(row, index))


def to_ranked(row: Mapping[str, Any], index: int) -> dict:
    """Convert one row of any supported format to the canonical ranked row.

    Formats: (a) ``prompt/responses/ranks``; (b) ``prompt/responses/scores`` (higher = better, equal
    scores tie); (c) ``prompt/responses`` listed best first; (d) ``prompt/chosen/rejected``; (e)
    ``chosen/rejected`` message lists whose shared prefix is the prompt (TRL's implicit prompt). A
    pairwise ``margin`` (or ``score_chosen``/``score_rejected``) is kept as ``scores``. Columns whose
    value is ``None`` count as absent, because a ``datasets.Dataset`` fills missing keys with None.
    ``index`` only serves error messages.
    """
    if not isinstance(row, Mapping):
        raise RowError(None, f"must be a JSON object (dict), got {type(row).__name__}", row=index)
    if row.get("responses") is not None:
        if row.get("prompt") is None:
            raise _missing(index, "'prompt'", row)
        return _from_listwise(row, index)
    if row.get("chosen") is not None and row.get("rejected") is not None:
        return _from_pairwise(row, index)
    raise _missing(index, "'responses' (or 'chosen' and 'rejected')", row)


def validate_row(row: Mapping[str, Any], index: int) -> dict:
    """``to_ranked`` plus the content checks that must pass before a row reaches the trainer."""
    ranked = to_ranked(row, index)
    try:
        check_text(ranked["prompt"], "prompt")
        k = len(ranked["responses"])
        if k < 2:
            raise RowError("responses", f"needs at least 2 answers to compare, got {k}")
        for j, response in enumerate(ranked["responses"]):
            check_text(response, f"responses[{j}]")
        for name in ("scores", "ranks"):  # scores first: ranks may have been derived from them
            if ranked[name] is not None and len(ranked[name]) != k:
                raise RowError(name, f"has {len(ranked[name])} entries for {k} responses")
    except RowError as err:
        raise RowError(err.field_name, err.problem, row=index) from None
    return ranked


def pairs_from_ranks(ranks: Sequence[float] | Any) -> list[tuple[int, int]]:
    """All ``(winner, loser)`` index pairs with ``ranks[winner] < ranks[loser]``; ties give no pair."""
    values = ranks.tolist() if hasattr(ranks, "tolist") else list(ranks)
    return [(w, lo) for w, rw in enumerate(values) for lo, rl in enumerate(values) if rw < rl]


@dataclass
class RankedReport:
    """What ``validate_ranked`` saw: rows read, all-tied rows dropped, and K -> count of kept rows."""

    n_rows: int = 0
    n_dropped_all_tied: int = 0
    k_histogram: dict[int, int] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return self.n_rows - self.n_dropped_all_tied


def check_ranked(row: Mapping[str, Any], index: int, ties: Literal["drop", "error"] = "drop") -> dict | None:
    """`validate_row` plus the tie policy: None for a row whose answers all tie (with `ties="drop"`)."""
    ranked = validate_row(row, index)
    if pairs_from_ranks(ranked["ranks"]):
        return ranked
    if ties == "error":
        problem = f"has all {len(ranked['ranks'])} answers tied: no pair to learn from (ties='error')"
        raise _row_error(index, "ranks", problem)
    return None


def validate_ranked(
    dataset_or_rows: Dataset | Iterable[Mapping[str, Any]],
    *,
    ties: Literal["drop", "error"] = "drop",
    source: str = "ranked data",
) -> tuple[list[dict] | Dataset, RankedReport]:
    """Convert every row to the canonical format and fail fast, before any training, on bad data.

    Raises one ``DataError`` naming ``source`` and listing every bad row with its field: a missing column
    (listing the columns the row has), fewer than 2 responses, an empty or non-string prompt/response,
    ``ranks`` or ``scores`` of the wrong length, non-numeric or NaN.

    A prompt whose answers are all tied contributes no pair, hence no gradient, yet would still cost a
    forward pass of K answers. ``ties="drop"`` (default) drops such rows and counts them in
    ``report.n_dropped_all_tied`` because they are legitimate labels ("all equally good") that are
    merely uninformative; ``ties="error"`` makes them bad rows, for sources where ties signal a bug.

    Accepts a ``datasets.Dataset`` or a list of dicts and returns the same kind, with canonical
    columns only (``prompt``, ``responses``, ``ranks``, ``scores``).
    """
    if ties not in ("drop", "error"):
        raise ValueError(f"ties must be 'drop' or 'error', got {ties!r}")
    report, kept, bad = RankedReport(), [], BadRows(source)
    for index, row in enumerate(dataset_or_rows):
        report.n_rows += 1
        with bad.row(index):
            ranked = check_ranked(row, index, ties)
            if ranked is None:
                report.n_dropped_all_tied += 1
            else:
                kept.append(ranked)
    bad.raise_if_any()
    report.k_histogram = dict(sorted(Counter(len(r["responses"]) for r in kept).items()))
    return (Dataset.from_list(kept) if isinstance(dataset_or_rows, Dataset) else kept), report
