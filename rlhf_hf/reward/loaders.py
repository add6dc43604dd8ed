"""Loaders from public preference datasets to canonical ranked rows (see ``data.py``).

Each loader takes the rows of the public dataset as published (a ``datasets.Dataset`` or any
iterable of dicts) and always returns a ``list`` of canonical rows: loaders regroup rows (oasst1
trees, SHP posts), so the output is not row-aligned with the input. Wrap it in
``Dataset.from_list`` if needed. Loaders convert; run ``data.validate_ranked`` before training,
which rejects e.g. empty replies with the row index.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from rlhf_hf.reward.data import Message, to_ranked

__all__ = ["from_hh_rlhf", "from_oasst1", "from_shp", "from_ultrafeedback"]

Row = Mapping[str, Any]


def _get(row: Row, key: str, where: str) -> Any:
    """A required field of a source row, with an error naming the source row."""
    if key not in row:
        raise ValueError(f"{where}: missing field '{key}'; the row has fields {sorted(row)}")
    return row[key]


# --- OpenAssistant/oasst1 -------------------------------------------------------------------------

_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oasst_path(messages: Mapping[str, Row], message_id: str) -> list[Message]:
    """The conversation from the tree root down to ``message_id``, as chat messages."""
    path = []
    while message_id is not None:
        if message_id not in messages:
            raise ValueError(f"oasst1: message '{message_id}' is referenced as a parent but not in the table")
        message = messages[message_id]
        path.append({"role": _OASST_ROLES[message["role"]], "content": message["text"]})
        message_id = message["parent_id"]
    return path[::-1]


def from_oasst1(rows: Iterable[Row], *, lang: str | None = None) -> list[dict]:
    """Sibling assistant replies carrying a ``rank`` (0 = best) become one ranked row.

    The prompt is the whole conversation from the root to the replies' parent (prompter -> user).
    Deleted messages and groups with fewer than 2 ranked replies are skipped; ranked prompter
    siblings are ignored (the reward model scores assistant turns). ``lang`` keeps one language.
    Pass the whole table: ancestors are needed to rebuild the prompt.
    """
    messages = {_get(m, "message_id", f"oasst1 row {i}"): m for i, m in enumerate(rows)}
    groups: dict[str, list[Row]] = defaultdict(list)
    for m in messages.values():
        where = f"oasst1 message '{m['message_id']}'"
        ranked = _get(m, "role", where) == "assistant" and m.get("rank") is not None and not m.get("deleted")
        if ranked and (lang is None or m.get("lang") == lang):
            groups[_get(m, "parent_id", where)].append(m)
    ranked_groups = [(parent, replies) for parent, replies in groups.items() if len(replies) >= 2]
    return [
        to_ranked(
            {
                "prompt": _oasst_path(messages, parent),
                "responses": [r["text"] for r in replies],
                "ranks": [r["rank"] for r in replies],
            },
            index,
        )
        for index, (parent, replies) in enumerate(ranked_groups)
    ]


# --- openbmb/UltraFeedback ------------------------------------------------------------------------


def from_ultrafeedback(
    rows: Iterable[Row], *, score: Literal["overall_score", "fine-grained_score"] = "overall_score"
) -> list[dict]:
    """One row per instruction over its completions, ranked by ``score`` (kept as ``scores``).

    ``overall_score`` (GPT-4's 1-10 critique score) is the default; ``fine-grained_score`` is the
    mean of the four 1-5 aspect ratings. Equal scores tie. Instructions with < 2 completions are
    skipped.
    """
    out = []
    for index, row in enumerate(rows):
        where = f"ultrafeedback row {index}"
        completions = _get(row, "completions", where)
        if len(completions) < 2:
            continue
        ranked = {
            "prompt": _get(row, "instruction", where),
            "responses": [_get(c, "response", where) for c in completions],
            "scores": [_get(c, score, where) for c in completions],
        }
        out.append(to_ranked(ranked, index))
    return out


# --- Anthropic/hh-rlhf ----------------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_messages(transcript: Any, where: str) -> list[Message]:
    """Split a ``\\n\\nHuman: ...\\n\\nAssistant: ...`` transcript into chat messages."""
    parts = _HH_TURN.split(transcript) if isinstance(transcript, str) else [transcript]
    roles, contents = parts[1::2], parts[2::2]
    if parts[0].strip() or not roles or roles[0] != "Human" or roles[-1] != "Assistant":
        raise ValueError(
            f"{where} is not a '\\n\\nHuman: ...\\n\\nAssistant: ...' transcript ending with an Assistant turn"
        )
    return [{"role": _HH_ROLES[r], "content": c.strip()} for r, c in zip(roles, contents, strict=True)]


def from_hh_rlhf(rows: Iterable[Row]) -> list[dict]:
    """K=2 rows: prompt = the shared turns before the final assistant reply (as messages).

    Raises ``ValueError`` naming the row for a transcript that does not parse or whose chosen and
    rejected conversations differ before the final reply.
    """
    out = []
    for index, row in enumerate(rows):
        where = f"hh-rlhf row {index}"
        chosen = _hh_messages(_get(row, "chosen", where), f"{where}: field 'chosen'")
        rejected = _hh_messages(_get(row, "rejected", where), f"{where}: field 'rejected'")
        if chosen[:-1] != rejected[:-1]:
            raise ValueError(f"{where}: 'chosen' and 'rejected' differ before the final assistant reply")
        pair = {"prompt": chosen[:-1], "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"]}
        out.append(to_ranked(pair, index))
    return out


# --- stanfordnlp/SHP -----------------------------------------------------------------------------


def _shp_pair(row: Row, index: int) -> dict:
    """One comparison as K=2; scores are kept only when they agree with the label."""
    where = f"shp row {index}"
    a_wins = _get(row, "labels", where) == 1
    scores = [_get(row, "score_A", where), _get(row, "score_B", where)]
    pair = {
        "prompt": _get(row, "history", where),
        "responses": [_get(row, "human_ref_A", where), _get(row, "human_ref_B", where)],
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
    rows = list(rows)
    if not group_by_post:
        return [_shp_pair(row, index) for index, row in enumerate(rows)]
    posts: dict[str, list[tuple[int, Row]]] = defaultdict(list)
    for index, row in enumerate(rows):
        posts[_get(row, "post_id", f"shp row {index}")].append((index, row))
    out = []
    for items in posts.values():
        pairs = [_shp_pair(row, index) for index, row in items]  # also checks the required fields
        grouped = _shp_post(items)
        out.extend([grouped] if grouped else pairs)
    return out
