"""Human ranking round trip: export prompts with K answers to JSONL, import the filled-in ranks.

One JSON object per line::

    {"id": "7", "_comment": "<how to rank>", "prompt": ...,
     "responses": [{"id": "r0", "response": ...}, ...], "ranks": {}}

Labellers fill ``ranks`` as ``{"r0": 2, "r1": 1, ...}``. Response ids ``r0..rK-1`` are the answers'
original positions and never change, so the display order may be shuffled (``seed``) to avoid
position bias without losing track of which answer is which.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rlhf_hf.reward.data import validate_row
from rlhf_hf.validation import BadRows, RowError

__all__ = ["INSTRUCTIONS", "export_for_ranking", "import_ranked"]

INSTRUCTIONS = (
    'Fill "ranks" with one entry per response id, e.g. {"r0": 2, "r1": 1, "r2": 2}: '
    "1 = best, larger = worse, equal numbers = equally good. Rank every response; edit nothing else."
)
_RESPONSE_ID = re.compile(r"r(\d+)")


def export_for_ranking(
    rows: Iterable[Mapping[str, Any]], path: str | Path, *, seed: int | None = None
) -> Path:
    """Write one line per prompt with empty ``ranks``; rows need ``prompt`` and ``responses``.

    Rows are validated first (``data.validate_row``) so labellers never see a broken item. The row's
    own ``id`` is kept when present, else its index. ``seed`` shuffles the display order per row.
    """
    rng = random.Random(seed)
    lines = []
    for index, row in enumerate(rows):
        checked = validate_row({"prompt": row.get("prompt"), "responses": row.get("responses")}, index)
        responses = [{"id": f"r{j}", "response": r} for j, r in enumerate(checked["responses"])]
        if seed is not None:
            rng.shuffle(responses)
        record = {
            "id": str(row.get("id", index)),
            "_comment": INSTRUCTIONS,
            "prompt": checked["prompt"],
            "responses": responses,
            "ranks": {},
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    path = Path(path)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _ranked_row(record: Any, index: int) -> dict:
    """One filled-in record back to a canonical row, answers in their original order."""
    if not isinstance(record, dict):
        raise RowError(None, f"must be a JSON object, got {type(record).__name__}")
    responses = {r.get("id"): r.get("response") for r in record.get("responses") or [] if isinstance(r, dict)}
    ranks = record.get("ranks")
    if not ranks or not isinstance(ranks, dict):
        raise RowError("ranks", f"is {ranks!r}: this item was not ranked")
    if set(ranks) != set(responses) or not all(_RESPONSE_ID.fullmatch(str(rid)) for rid in responses):
        raise RowError(
            "ranks",
            f"must rank each response id once: ranked {sorted(ranks)}, responses {sorted(map(str, responses))}",
        )
    ids = sorted(responses, key=lambda rid: int(rid[1:]))
    row = {
        "prompt": record.get("prompt"),
        "responses": [responses[i] for i in ids],
        "ranks": [ranks[i] for i in ids],
    }
    return validate_row(row, index)


def import_ranked(path: str | Path) -> list[dict]:
    """Read a ranked export back as canonical rows (blank lines ignored).

    Raises one ``DataError`` listing every bad item by line number and id: invalid JSON, an unranked
    item, ranks that miss or invent a response id, a repeated id, and any ``data.validate_row``
    failure. All-tied items are returned as is: apply the ``validate_ranked`` tie policy when building
    the training set.
    """
    numbered = [
        (n, line)
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]
    bad = BadRows(str(path), lines=[n for n, _ in numbered])
    rows: list[dict] = []
    seen: set[str] = set()
    for index, (_, line) in enumerate(numbered):
        with bad.row(index):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RowError(None, f"invalid JSON ({err.msg})") from None
            item_id = record.get("id") if isinstance(record, dict) else None
            if item_id is not None and item_id in seen:
                raise RowError("id", f"{item_id!r} repeats an earlier item's id")
            seen.add(item_id)
            try:
                rows.append(_ranked_row(record, index))
            except RowError as err:
                raise RowError(err.field_name, f"{err.problem} (item id={item_id!r})") from None
    bad.raise_if_any()
    return rows
