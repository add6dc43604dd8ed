"""Readers of public preference datasets, as published, into canonical ranked rows (see ``data.py``).

Each ``from_*`` loader takes the rows of the public dataset as published (a ``datasets.Dataset`` or any
iterable of dicts) and returns a ``list`` of canonical rows: loaders regroup rows (oasst1 trees, SHP posts),
so the output is not row-aligned with the input. Every bad source row is listed in one error naming the
source row and its own field (e.g. ``completions[1].response``). Run ``data.validate_ranked`` before training.

``dataset_format`` (the RM and SFT stages' config key) picks a reader by name; ``detect_format`` names the
format a table's columns identify. ``oasst1_best_paths`` turns oasst1 trees into SFT conversations.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from datasets import Dataset

from rlhf_hf.reward.data import Message, to_ranked
from rlhf_hf.validation import BadRows, DataError, RowError, check_text

__all__ = [
    "RANKED_FORMATS",
    "detect_format",
    "from_hh_rlhf",
    "from_oasst1",
    "from_shp",
    "from_ultrafeedback",
    "oasst1_best_paths",
    "oasst1_sft_rows",
    "ranked_source_rows",
]

Row = Mapping[str, Any]
Rows = Sequence[Row] | Dataset  # indexable: oasst1 looks up ancestors by row
Sourced = list[tuple[int, dict]]  # (source row, canonical row)


def _get(row: Row, key: str) -> Any:
    """A required field of a source row."""
    if not isinstance(row, Mapping):
        raise RowError(None, f"must be a JSON object (dict), got {type(row).__name__}")
    if key not in row:
        raise RowError(key, f"is missing; the row has fields {sorted(row)}")
    return row[key]


def _checked(row: Row, key: str) -> Any:
    """A required text field (non-blank string or messages) of a source row."""
    value = _get(row, key)
    check_text(value, key)
    return value


def _loaded(reader: Any, rows: Iterable[Row], source: str, **kwargs: Any) -> list[dict]:
    bad = BadRows(source)
    out = reader(rows if isinstance(rows, Dataset) else list(rows), bad, **kwargs)
    bad.raise_if_any()
    return [row for _, row in out]


# --- OpenAssistant/oasst1 -------------------------------------------------------------------------

_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


class _Oasst1Table:
    """The message table: row index and message by id, and live (not deleted) children by parent id."""

    def __init__(self, rows: Rows, bad: BadRows) -> None:
        self.rows, self.bad = rows, bad
        self.index: dict[str, int] = {}
        self.children: dict[str | None, list[int]] = defaultdict(list)
        for i, m in enumerate(rows):
            with bad.row(i):
                message_id, role, parent = _get(m, "message_id"), _get(m, "role"), _get(m, "parent_id")
                _get(m, "text")
                if role not in _OASST_ROLES:
                    raise RowError("role", f"is {role!r}, expected one of {sorted(_OASST_ROLES)}")
                self.index[message_id] = i
                if not m.get("deleted"):
                    self.children[parent].append(i)

    def message(self, i: int) -> Message | None:
        """Row `i` as a chat message, or None (recorded as a bad row) if its text is empty."""
        with self.bad.row(i):
            check_text(self.rows[i]["text"], "text")
            return {"role": _OASST_ROLES[self.rows[i]["role"]], "content": self.rows[i]["text"]}
        return None

    def path(self, message_id: str, child: int) -> list[Message] | None:
        """The conversation from the tree root down to `message_id`, or None if a message is missing or empty."""
        path: list[Message | None] = []
        while message_id is not None:
            if message_id not in self.index:
                with self.bad.row(child):
                    raise RowError(None, f"has ancestor message '{message_id}', which is not in the table")
                return None
            i = self.index[message_id]
            path.append(self.message(i))
            message_id = self.rows[i]["parent_id"]
        return None if None in path else path[::-1]


def _oasst1(rows: Rows, bad: BadRows, *, lang: str | None = None) -> Sourced:
    table = _Oasst1Table(rows, bad)
    groups: dict[str, list[int]] = defaultdict(list)
    for parent, kids in table.children.items():
        for i in kids:
            m = rows[i]
            if (
                m["role"] == "assistant"
                and m.get("rank") is not None
                and (lang is None or m.get("lang") == lang)
            ):
                groups[parent].append(i)
    out = []
    for parent, replies in groups.items():
        if len(replies) < 2 or parent is None:
            continue
        prompt = table.path(parent, replies[0])
        answers = [table.message(i) for i in replies]
        if prompt is None or None in answers:
            continue
        with bad.row(replies[0]):
            ranked = {"prompt": prompt, "responses": [a["content"] for a in answers]}
            ranked["ranks"] = [rows[i]["rank"] for i in replies]
            out.append((replies[0], to_ranked(ranked, replies[0])))
    return out


def from_oasst1(rows: Iterable[Row], *, lang: str | None = None) -> list[dict]:
    """Sibling assistant replies carrying a ``rank`` (0 = best) become one ranked row.

    The prompt is the whole conversation from the root to the replies' parent (prompter -> user).
    Deleted messages and groups with fewer than 2 ranked replies are skipped; ranked prompter
    siblings are ignored (the reward model scores assistant turns). ``lang`` keeps one language.
    Pass the whole table: ancestors are needed to rebuild the prompt.
    """
    return _loaded(_oasst1, rows, "oasst1", lang=lang)


def _oasst1_paths(rows: Rows, bad: BadRows, *, lang: str | None = None) -> Sourced:
    table = _Oasst1Table(rows, bad)
    out = []
    for root in table.children[None]:
        if lang is not None and rows[root].get("lang") != lang:
            continue
        path, i = [root], root
        while kids := table.children[rows[i]["message_id"]]:
            i = min(kids, key=lambda k: (math.inf if rows[k].get("rank") is None else rows[k]["rank"], k))
            path.append(i)
        while path and rows[path[-1]]["role"] != "assistant":
            path.pop()
        messages = [table.message(i) for i in path]
        if path and None not in messages:
            out.append((root, {"messages": messages}))
    return out


def oasst1_best_paths(rows: Iterable[Row], *, lang: str | None = None) -> list[dict]:
    """One SFT conversation (``{"messages": [...]}``) per oasst1 tree: from the root, the best-ranked reply at
    every turn (rank 0; unranked replies after ranked ones, then in table order), ending at an assistant turn.

    Deleted messages are skipped, as are trees without an assistant reply. ``lang`` keeps one language.
    """
    return _loaded(_oasst1_paths, rows, "oasst1", lang=lang)


# --- openbmb/UltraFeedback ------------------------------------------------------------------------


def _ultrafeedback(rows: Rows, bad: BadRows, *, score: str = "overall_score") -> Sourced:
    out = []
    for index, row in enumerate(rows):
        with bad.row(index):
            completions = _get(row, "completions")
            if not isinstance(completions, list):
                raise RowError("completions", f"must be a list, got {type(completions).__name__}")
            if len(completions) < 2:
                continue
            prompt = _checked(row, "instruction")
            responses, scores = [], []
            for j, completion in enumerate(completions):
                try:
                    responses.append(_checked(completion, "response"))
                    scores.append(_get(completion, score))
                except RowError as err:
                    raise RowError(f"completions[{j}].{err.field_name}", err.problem) from None
            out.append(
                (index, to_ranked({"prompt": prompt, "responses": responses, "scores": scores}, index))
            )
    return out


def from_ultrafeedback(
    rows: Iterable[Row], *, score: Literal["overall_score", "fine-grained_score"] = "overall_score"
) -> list[dict]:
    """One row per instruction over its completions, ranked by ``score`` (kept as ``scores``).

    ``overall_score`` (GPT-4's 1-10 critique score) is the default; ``fine-grained_score`` is the
    mean of the four 1-5 aspect ratings. Equal scores tie. Instructions with < 2 completions are
    skipped.
    """
    return _loaded(_ultrafeedback, rows, "ultrafeedback", score=score)


# --- Anthropic/hh-rlhf ----------------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_messages(transcript: Any, field_name: str) -> list[Message]:
    """Split a ``\\n\\nHuman: ...\\n\\nAssistant: ...`` transcript into chat messages."""
    parts = _HH_TURN.split(transcript) if isinstance(transcript, str) else [transcript]
    roles, contents = parts[1::2], parts[2::2]
    if parts[0].strip() or not roles or roles[0] != "Human" or roles[-1] != "Assistant":
        raise RowError(
            field_name,
            "is not a '\\n\\nHuman: ...\\n\\nAssistant: ...' transcript ending with an Assistant turn",
        )
    messages = [{"role": _HH_ROLES[r], "content": c.strip()} for r, c in zip(roles, contents, strict=True)]
    if not messages[-1]["content"]:
        raise RowError(field_name, "ends with an empty Assistant turn")
    return messages


def _hh_rlhf(rows: Rows, bad: BadRows) -> Sourced:
    out = []
    for index, row in enumerate(rows):
        with bad.row(index):
            chosen = _hh_messages(_get(row, "chosen"), "chosen")
            rejected = _hh_messages(_get(row, "rejected"), "rejected")
            if chosen[:-1] != rejected[:-1]:
                raise RowError(None, "'chosen' and 'rejected' differ before the final assistant reply")
            pair = {
                "prompt": chosen[:-1],
                "chosen": chosen[-1]["content"],
                "rejected": rejected[-1]["content"],
            }
            out.append((index, to_ranked(pair, index)))
    return out


def from_hh_rlhf(rows: Iterable[Row]) -> list[dict]:
    """K=2 rows: prompt = the shared turns before the final assistant reply (as messages).

    A transcript that does not parse, or chosen and rejected conversations that differ before the
    final reply, make a bad row.
    """
    return _loaded(_hh_rlhf, rows, "hh-rlhf")


# --- stanfordnlp/SHP -----------------------------------------------------------------------------


def _shp_pair(row: Row, index: int) -> dict:
    """One comparison as K=2; scores are kept only when they agree with the label."""
    a_wins = _get(row, "labels") == 1
    scores = [_get(row, "score_A"), _get(row, "score_B")]
    pair = {
        "prompt": _checked(row, "history"),
        "responses": [_checked(row, "human_ref_A"), _checked(row, "human_ref_B")],
        "ranks": [1, 2] if a_wins else [2, 1],
        "scores": scores if (scores[0] > scores[1]) == a_wins else None,
    }
    return to_ranked(pair, index)


def _shp_post(items: list[tuple[int, Row]]) -> dict | None:
    """All distinct comments of one post ranked by score, or None if the rows disagree."""
    comments: dict[str, tuple[str, float]] = {}
    history = items[0][1]["history"]
    for _, row in items:
        if row["history"] != history or (row["score_A"] > row["score_B"]) != (row["labels"] == 1):
            return None
        for side in ("A", "B"):
            text, score = row[f"human_ref_{side}"], row[f"score_{side}"]
            comment_id = row.get(f"c_root_id_{side}") or text
            if comments.setdefault(comment_id, (text, score)) != (text, score):
                return None
    texts, scores = zip(*comments.values(), strict=True)
    return to_ranked({"prompt": history, "responses": list(texts), "scores": list(scores)}, items[0][0])


def _shp(rows: Rows, bad: BadRows, *, group_by_post: bool = True) -> Sourced:
    pairs: dict[int, dict] = {}
    posts: dict[str, list[tuple[int, Row]]] = defaultdict(list)
    for index, row in enumerate(rows):
        with bad.row(index):
            pairs[index] = _shp_pair(row, index)  # also checks the required fields
            posts[_get(row, "post_id")].append((index, row))
    if not group_by_post:
        return list(pairs.items())
    out: Sourced = []
    for items in posts.values():
        grouped = _shp_post(items)
        out.extend([(items[0][0], grouped)] if grouped else [(i, pairs[i]) for i, _ in items])
    return out


def from_shp(rows: Iterable[Row], *, group_by_post: bool = True) -> list[dict]:
    """SHP comparisons; by default one ranked row per ``post_id`` over all its distinct comments.

    SHP scores are per comment (net upvotes) and its labels are ``score_A > score_B``, so the
    comments of a post can be ranked by score in one row: every comment is forwarded once and the
    ranking agrees with every published label. The ranking also implies pairs SHP chose not to
    publish (e.g. an older comment beating a newer one, which may only reflect visibility); use
    ``group_by_post=False`` for exactly the published comparisons, one K=2 row each. A post whose
    rows disagree (different history, a comment with two scores, a label contradicting the scores)
    falls back to one K=2 row per comparison, ranked by its label. Scores are kept for margins.
    """
    return _loaded(_shp, rows, "shp", group_by_post=group_by_post)


# --- dataset_format: by name or detected from the columns ----------------------------------------


def _as_is(rows: Rows, bad: BadRows) -> Sourced:
    """`ranked` and `pairwise` rows are already in a format `to_ranked` reads: validated by the caller."""
    return list(enumerate(rows))


# format -> (reader, columns that identify it)
_READERS = {
    "ranked": (_as_is, ("prompt", "responses")),
    "pairwise": (_as_is, ("chosen", "rejected")),
    "oasst1": (_oasst1, ("message_id", "parent_id", "role", "text")),
    "ultrafeedback": (_ultrafeedback, ("instruction", "completions")),
    "hh-rlhf": (_hh_rlhf, ("chosen", "rejected")),
    "shp": (_shp, ("post_id", "history", "human_ref_A", "human_ref_B", "labels")),
}
RANKED_FORMATS = tuple(_READERS)


def _is_hh_transcript(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip(" ").startswith("\n\nHuman:")


def detect_format(columns: list[str], first_row: Row | None, source: str) -> str:
    """The ranked format whose columns the table has (hh-rlhf: chosen/rejected transcripts without a prompt)."""
    found = [name for name, (_, needed) in _READERS.items() if set(needed) <= set(columns)]
    if "hh-rlhf" in found:
        hh = "prompt" not in columns and first_row is not None and _is_hh_transcript(first_row.get("chosen"))
        found.remove("pairwise" if hh else "hh-rlhf")
    if len(found) == 1:
        return found[0]
    formats = "; ".join(f"{name}: {', '.join(needed)}" for name, (_, needed) in _READERS.items())
    problem = f"matches formats {found}" if found else "matches no known format"
    raise DataError(
        f"{source}: its columns {sorted(columns)} {problem}; set `dataset_format` to one of "
        f"{list(RANKED_FORMATS)} (columns each needs: {formats})"
    )


def ranked_source_rows(rows: Any, dataset_format: str | None, source: str) -> tuple[list[dict], list[int]]:
    """Rows of a ranked/pairwise/public preference table -> (rows `to_ranked` reads, their source row numbers).

    Converted rows keep the number of the source row they came from (oasst1: the first reply; SHP: the post's
    first comparison), so later errors point into the user's file. `dataset_format=None` detects the format.
    """
    columns = (
        list(rows.column_names) if hasattr(rows, "column_names") else sorted({k for r in rows for k in r})
    )
    if dataset_format is None:
        dataset_format = detect_format(columns, rows[0] if len(rows) else None, source)
    if dataset_format not in _READERS:
        raise DataError(
            f"{source}: unknown dataset_format {dataset_format!r}; use one of {list(RANKED_FORMATS)}"
        )
    reader, needed = _READERS[dataset_format]
    if missing := [c for c in needed if c not in columns]:
        raise DataError(
            f"{source}: dataset_format {dataset_format!r} needs column(s) {missing}; found columns {columns}"
        )
    bad = BadRows(source)
    out = reader(rows if isinstance(rows, Dataset) else list(rows), bad)  # a Dataset: row by row, not all
    bad.raise_if_any()
    return [row for _, row in out], [index for index, _ in out]


def oasst1_sft_rows(rows: Any, source: str) -> tuple[list[dict], list[int]]:
    """`oasst1_best_paths` for the SFT stage: (conversations, the source row number of each tree's root)."""
    bad = BadRows(source)
    out = _oasst1_paths(rows if isinstance(rows, Dataset) else list(rows), bad)
    bad.raise_if_any()
    if not out:
        raise DataError(f"{source}: no oasst1 tree has an assistant reply to learn from: nothing to train on")
    return [row for _, row in out], [index for index, _ in out]
