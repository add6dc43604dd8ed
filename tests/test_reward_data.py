"""Model-free parts of reward modelling: data format, loaders, ranked loss, metrics, ranking round trip."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from rlhf_hf.reward.collect import export_for_ranking, import_ranked
from rlhf_hf.reward.data import pairs_from_ranks, to_ranked, validate_ranked
from rlhf_hf.reward.loaders import from_hh_rlhf, from_oasst1, from_shp, from_ultrafeedback
from rlhf_hf.reward.loss import _pair_indices, ranked_loss
from rlhf_hf.reward.metrics import load_metric

FIXTURES = Path(__file__).parent / "fixtures" / "reward"

# -log(sigmoid(x)) == log(1 + exp(-x)), written out by hand
# Losses below are float32 means of a few log-sigmoids (|loss| < 1): within a few ulps (~1e-7) of the exact
# values, so abs=1e-6 leaves 8x headroom and still catches any wrong pair or weight.
NLL_1_0 = math.log(1 + math.exp(-1.0))  # 0.31326...
NLL_0_5 = math.log(1 + math.exp(-0.5))  # 0.47407...
NLL_M3_0 = math.log(1 + math.exp(3.0))  # 3.04858...


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --- ranked_loss ----------------------------------------------------------------------------------


def test_ranked_loss_hand_value_with_tie() -> None:
    # ranks [1, 2, 2]: pairs (0, 1) and (0, 2); the tie (1, 2) gives no pair
    loss, stats = ranked_loss(torch.tensor([2.0, 1.0, 1.5]), [3], torch.tensor([1, 2, 2]))
    assert loss.item() == pytest.approx((NLL_1_0 + NLL_0_5) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.3936693, abs=1e-6)
    assert stats == {"pairs": 2, "accuracy": 1.0, "margin_mean": pytest.approx(0.75)}


def test_ranked_loss_averages_per_prompt_with_different_k() -> None:
    rewards = torch.tensor([2.0, 1.0, 1.5, 0.0, 3.0, 5.0, 5.0])
    ranks = torch.tensor([1, 2, 2, 1, 2, 1, 1])  # K=3 with a tie, K=2 wrong way, K=2 all tied
    loss, stats = ranked_loss(rewards, [3, 2, 2], ranks)
    # mean over the two prompts with pairs, not over the three pairs (which would give 1.2786...)
    assert loss.item() == pytest.approx(((NLL_1_0 + NLL_0_5) / 2 + NLL_M3_0) / 2, abs=1e-6)
    assert stats["pairs"] == 3
    assert stats["accuracy"] == pytest.approx(2 / 3)
    same, _ = ranked_loss(rewards[:5], torch.tensor([3, 2]), ranks[:5])
    assert same.item() == pytest.approx(loss.item())


def test_ranked_loss_margin_from_scores() -> None:
    rewards, ranks = torch.tensor([1.0, 0.0]), torch.tensor([1, 2])
    loss, _ = ranked_loss(rewards, [2], ranks, torch.tensor([3.0, 1.0]), margin_scale=0.25)
    assert loss.item() == pytest.approx(NLL_0_5, abs=1e-6)  # -log sigmoid(1 - 0.25 * 2)
    unknown, _ = ranked_loss(rewards, [2], ranks, torch.tensor([float("nan"), 1.0]), margin_scale=0.25)
    assert unknown.item() == pytest.approx(NLL_1_0, abs=1e-6)  # NaN score -> no margin
    unscaled, _ = ranked_loss(rewards, [2], ranks, torch.tensor([3.0, 1.0]))
    assert unscaled.item() == pytest.approx(NLL_1_0, abs=1e-6)  # margin_scale 0 -> no margin


def test_ranked_loss_centring_term() -> None:
    rewards, ranks = torch.tensor([2.0, 1.0, 1.5]), torch.tensor([1, 2, 2])
    loss, _ = ranked_loss(rewards, [3], ranks, center_coef=0.01)
    assert loss.item() == pytest.approx((NLL_1_0 + NLL_0_5) / 2 + 0.01 * (4.0 + 1.0 + 2.25) / 3, abs=1e-6)


def test_ranked_loss_gradients_flow() -> None:
    rewards = torch.tensor([[1.0], [0.0]], requires_grad=True)  # [N, 1] like a num_labels=1 head
    loss, _ = ranked_loss(rewards, [2], torch.tensor([1, 2]))
    loss.backward()
    s = torch.sigmoid(torch.tensor(-1.0)).item()  # d/dd of -log sigmoid(d) is -sigmoid(-d)
    assert rewards.grad.squeeze(-1).tolist() == pytest.approx([-s, s])

    head = torch.nn.Linear(4, 1)
    loss, _ = ranked_loss(head(torch.randn(5, 4)).squeeze(-1), [3, 2], torch.tensor([1, 3, 2, 2, 1]))
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_ranked_loss_without_pairs_and_bad_shapes() -> None:
    rewards = torch.tensor([1.0, 2.0], requires_grad=True)
    loss, stats = ranked_loss(rewards, [2], torch.tensor([1, 1]))
    loss.backward()
    assert loss.item() == 0.0 and rewards.grad.abs().sum() == 0
    assert stats["pairs"] == 0 and math.isnan(stats["accuracy"])
    with pytest.raises(ValueError, match="group_sizes"):
        ranked_loss(torch.zeros(3), [2], torch.tensor([1, 2, 3]))


def test_pairs_from_ranks_and_loss_pairs_agree() -> None:
    assert pairs_from_ranks([1, 2, 2]) == [(0, 1), (0, 2)]
    assert pairs_from_ranks(torch.tensor([2, 1, 3])) == [(0, 2), (1, 0), (1, 2)]
    assert pairs_from_ranks([1, 1]) == []
    ranks = torch.randint(1, 4, (6,), generator=torch.Generator().manual_seed(0))
    winner, loser = _pair_indices(torch.zeros(6, dtype=torch.long), torch.tensor([6]), ranks)
    assert list(zip(winner.tolist(), loser.tolist(), strict=True)) == pairs_from_ranks(ranks)
    # prompts of K = 3, 2, 4 side by side: pairs stay inside each prompt, offset to its rows
    sizes, ranks = torch.tensor([3, 2, 4]), torch.tensor([2, 1, 3, 1, 1, 4, 1, 2, 2])
    group = torch.repeat_interleave(torch.arange(3), sizes)
    winner, loser = _pair_indices(group, sizes, ranks)
    expected = [
        (w + o, lo + o)
        for o, r in ((0, ranks[:3]), (3, ranks[3:5]), (5, ranks[5:]))
        for w, lo in pairs_from_ranks(r)
    ]
    assert list(zip(winner.tolist(), loser.tolist(), strict=True)) == expected


# --- to_ranked ------------------------------------------------------------------------------------


def test_to_ranked_ranks_are_made_dense() -> None:
    row = to_ranked({"prompt": "p", "responses": ["a", "b", "c", "d"], "ranks": [0, 2, 2, 1]}, 0)
    assert row == {"prompt": "p", "responses": ["a", "b", "c", "d"], "ranks": [1, 3, 3, 2], "scores": None}


def test_to_ranked_scores_give_ranks_with_ties() -> None:
    row = to_ranked({"prompt": "p", "responses": ["a", "b", "c"], "scores": [0.5, 2.0, 0.5]}, 0)
    assert row["ranks"] == [2, 1, 2] and row["scores"] == [0.5, 2.0, 0.5]


def test_to_ranked_responses_listed_best_first() -> None:
    assert to_ranked({"prompt": "p", "responses": ["a", "b", "c"]}, 0)["ranks"] == [1, 2, 3]


def test_to_ranked_pairwise_with_margin_or_scores() -> None:
    plain = to_ranked({"prompt": "p", "chosen": "good", "rejected": "bad"}, 0)
    assert plain == {"prompt": "p", "responses": ["good", "bad"], "ranks": [1, 2], "scores": None}
    assert to_ranked({"prompt": "p", "chosen": "g", "rejected": "b", "margin": 1.5}, 0)["scores"] == [
        1.5,
        0.0,
    ]
    scored = {"prompt": "p", "chosen": "g", "rejected": "b", "score_chosen": 8, "score_rejected": 3}
    assert to_ranked(scored, 0)["scores"] == [8.0, 3.0]


def test_to_ranked_implicit_prompt_is_shared_message_prefix() -> None:
    history = [_user("Hi"), _assistant("Hello!"), _user("2+2?")]
    row = to_ranked({"chosen": [*history, _assistant("4")], "rejected": [*history, _assistant("5")]}, 0)
    assert row["prompt"] == history
    assert row["responses"] == [[_assistant("4")], [_assistant("5")]]
    assert row["ranks"] == [1, 2]


def test_to_ranked_implicit_prompt_needs_messages() -> None:
    with pytest.raises(ValueError, match=r"row 4: missing column 'prompt'.*dataset_format: hh-rlhf"):
        to_ranked({"chosen": "Human: a Assistant: b", "rejected": "Human: a Assistant: c"}, 4)


# --- validate_ranked ------------------------------------------------------------------------------

GOOD = {"prompt": "Say hi.", "responses": ["Hi!", "Go away."], "ranks": [1, 2]}
NAN = float("nan")


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ({"prompt": "p", "answers": ["a", "b"]}, "missing column 'responses'"),
        ({"responses": ["a", "b"]}, "missing column 'prompt'"),
        ({"prompt": "p", "responses": ["only one"]}, "'responses'"),
        ({"prompt": "p", "responses": "not a list"}, "'responses'"),
        ({"prompt": "p", "responses": ["ok", "   "]}, "'responses[1]'"),
        ({"prompt": "p", "responses": ["ok", 5]}, "'responses[1]'"),
        (
            {"prompt": "p", "responses": ["ok", [{"role": "assistant", "content": None}]]},
            "'responses[1][0].content'",
        ),
        ({"prompt": [{"role": "user", "content": 3}], "responses": ["a", "b"]}, "'prompt[0].content'"),
        ({"prompt": " \n", "responses": ["a", "b"]}, "'prompt'"),
        ({"prompt": [], "responses": ["a", "b"]}, "'prompt'"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 2, 3]}, "'ranks'"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": ["1", 2]}, "'ranks'"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [NAN, 1]}, "'ranks'"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": [1.0, NAN]}, "'scores'"),
        ({"prompt": "p", "responses": ["a", "b"], "scores": [1.0]}, "'scores'"),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}, "'margin'"),
    ],
)
def test_validate_ranked_errors_name_row_and_field(bad_row: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_ranked([GOOD, GOOD, bad_row])
    assert "row 2" in str(err.value) and field in str(err.value)


def test_validate_missing_column_lists_existing_columns() -> None:
    with pytest.raises(ValueError, match=r"row 0: .*\['answers', 'prompt'\]"):
        validate_ranked([{"prompt": "p", "answers": ["a", "b"]}])


def test_validate_all_tied_dropped_and_reported() -> None:
    tied = {"prompt": "p", "responses": ["a", "b", "c"], "scores": [2.0, 2.0, 2.0]}
    three = {"prompt": "q", "responses": ["a", "b", "c"], "ranks": [1, 1, 2]}
    rows, report = validate_ranked([GOOD, tied, three])
    assert [r["prompt"] for r in rows] == ["Say hi.", "q"]
    assert (report.n_rows, report.n_dropped_all_tied, report.n_kept) == (3, 1, 2)
    assert report.k_histogram == {2: 1, 3: 1}


def test_validate_all_tied_error_policy() -> None:
    tied = {"prompt": "p", "responses": ["a", "b"], "ranks": [1, 1]}
    with pytest.raises(ValueError, match=r"row 1: field 'ranks'.*tied"):
        validate_ranked([GOOD, tied], ties="error")
    with pytest.raises(ValueError, match="ties"):
        validate_ranked([GOOD], ties="keep")


def test_validate_dataset_in_dataset_out() -> None:
    ds = Dataset.from_list(
        [
            {"prompt": "p", "responses": ["a", "b"], "ranks": None, "scores": [0.0, 1.0]},
            {"prompt": "q", "responses": ["c", "d"], "ranks": [1, 2], "scores": None},
        ]
    )
    out, report = validate_ranked(ds)
    assert isinstance(out, Dataset) and report.n_kept == 2
    assert out.column_names == ["prompt", "responses", "ranks", "scores"]
    assert out["ranks"] == [[2, 1], [1, 2]]


# --- loaders --------------------------------------------------------------------------------------


def test_from_oasst1_groups_ranked_assistant_siblings() -> None:
    rows = from_oasst1(_jsonl("oasst1.jsonl"))
    france = _user("What is the capital of France?")
    assert rows[0]["prompt"] == [france]
    assert rows[0]["responses"] == ["Lyon.", "Paris.", "It is Paris, on the Seine."]
    assert rows[0]["ranks"] == [3, 1, 2]
    # full path to the parent; the deleted reply is gone; ranked prompter siblings are not a group
    assert rows[1]["prompt"] == [france, _assistant("Paris."), _user("And of Germany?")]
    assert rows[1]["responses"] == ["Munich.", "Berlin."] and rows[1]["ranks"] == [2, 1]
    assert rows[2]["prompt"] == [_user("Wie spät ist es?")] and rows[2]["ranks"] == [1, 2]
    assert len(rows) == 3
    assert len(from_oasst1(_jsonl("oasst1.jsonl"), lang="en")) == 2
    assert validate_ranked(rows)[1].n_kept == 3


def test_from_oasst1_missing_ancestor() -> None:
    with pytest.raises(ValueError, match="6ab24d72-0181-4594-a9cd-deaf170242fb"):
        from_oasst1(_jsonl("oasst1.jsonl")[1:])


def test_from_ultrafeedback_scores_and_ties() -> None:
    rows = from_ultrafeedback(_jsonl("ultrafeedback.jsonl"))
    assert len(rows) == 1  # the single-completion instruction is skipped
    assert rows[0]["prompt"] == "Name a prime number between 5 and 10."
    assert rows[0]["responses"] == ["7 is the only prime between 5 and 10.", "9.", "7.", "Seven (7)."]
    assert rows[0]["scores"] == [8.5, 2.0, 8.5, 7.0] and rows[0]["ranks"] == [1, 3, 1, 2]
    fine = from_ultrafeedback(_jsonl("ultrafeedback.jsonl"), score="fine-grained_score")
    assert fine[0]["scores"] == [4.75, 1.25, 4.5, 4.75] and fine[0]["ranks"] == [1, 3, 2, 1]


def test_from_ultrafeedback_missing_field_names_row() -> None:
    rows = _jsonl("ultrafeedback.jsonl")
    del rows[0]["completions"][1]["overall_score"]
    with pytest.raises(
        ValueError,
        match=r"ultrafeedback: 1 bad row .*\n  row 0: field 'completions\[1\]\.overall_score' is missing",
    ):
        from_ultrafeedback(rows)


def test_from_hh_rlhf_splits_shared_turns() -> None:
    rows = from_hh_rlhf(_jsonl("hh_rlhf.jsonl"))
    assert rows[0] == {
        "prompt": [_user("What is a good name for a cat?")],
        "responses": ["Whiskers is a classic choice.", "Cats do not need names."],
        "ranks": [1, 2],
        "scores": None,
    }
    assert rows[1]["prompt"] == [
        _user("How do I boil an egg?"),
        _assistant("Put it in boiling water for about 9 minutes."),
        _user("And for a soft one?"),
    ]
    assert rows[1]["responses"] == ["About 6 minutes, then cool it in cold water.", "Eggs cannot be soft."]


@pytest.mark.parametrize(
    ("chosen", "rejected", "message"),
    [
        ("Human: hi\n\nAssistant: yo", "\n\nHuman: hi\n\nAssistant: no", "row 1: field 'chosen'"),
        (
            "\n\nHuman: hi\n\nAssistant: yo",
            "\n\nHuman: hi\n\nAssistant: no\n\nHuman: ?",
            "row 1: field 'rejected'",
        ),
        (
            "\n\nHuman: hi\n\nAssistant: yo",
            "\n\nHuman: hey\n\nAssistant: no",
            "row 1: 'chosen' and 'rejected' differ",
        ),
    ],
)
def test_from_hh_rlhf_malformed_names_row(chosen: str, rejected: str, message: str) -> None:
    rows = [_jsonl("hh_rlhf.jsonl")[0], {"chosen": chosen, "rejected": rejected}]
    with pytest.raises(ValueError, match=message):
        from_hh_rlhf(rows)


def test_from_shp_groups_consistent_posts() -> None:
    rows = from_shp(_jsonl("shp.jsonl"))
    sky = "Sunlight scatters off air; blue scatters most."
    assert rows[0]["prompt"] == "Why is the sky blue? Explain like I'm five."
    assert rows[0]["responses"] == [sky, "Because of the ocean.", "Magic."]
    assert rows[0]["ranks"] == [1, 2, 3] and rows[0]["scores"] == [40, 10, 3]
    assert rows[1]["responses"] == ["Yes, always.", "Raw flour and eggs can carry bacteria, so no."]
    assert rows[1]["ranks"] == [2, 1]
    # post s9t8u7 gives comment m1 two scores: one K=2 row per comparison instead
    assert [r["responses"] for r in rows[2:]] == [
        ["Work many problems.", "Watch lectures."],
        ["Memorise formulas.", "Work many problems."],
    ]
    assert [r["ranks"] for r in rows[2:]] == [[1, 2], [2, 1]]
    assert len(rows) == 4


def test_from_shp_one_row_per_comparison() -> None:
    source = _jsonl("shp.jsonl")
    source[3]["labels"] = 1  # label contradicts the scores: keep the label, drop the scores
    rows = from_shp(source, group_by_post=False)
    assert len(rows) == 6 and all(len(r["responses"]) == 2 for r in rows)
    assert rows[1]["ranks"] == [2, 1] and rows[1]["scores"] == [3, 40]
    assert rows[3]["ranks"] == [1, 2] and rows[3]["scores"] is None


# --- evaluate metrics -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics() -> dict:
    return {name: load_metric(name) for name in ("pairwise_accuracy", "kendall_tau")}


def test_metrics_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    metric = load_metric("kendall_tau")
    assert metric.compute(predictions=[[1.0, 0.0]], references=[[1, 2]])["kendall_tau"] == 1.0
    with pytest.raises(ValueError, match="available"):
        load_metric("bleu")


def test_pairwise_accuracy_hand_examples(metrics: dict) -> None:
    acc = metrics["pairwise_accuracy"]
    assert acc.compute(predictions=[[3.0, 2.0, 1.0]], references=[[1, 2, 3]])["pairwise_accuracy"] == 1.0
    assert acc.compute(predictions=[[1.0, 2.0, 3.0]], references=[[1, 2, 3]])["pairwise_accuracy"] == 0.0
    # pooled over pairs: 3 right + (0.5 tie, 0, 0) = 3.5 of 6
    out = acc.compute(predictions=[[3.0, 2.0, 1.0], [1.0, 1.0, 3.0]], references=[[1, 2, 3], [1, 2, 3]])
    assert out == {"pairwise_accuracy": pytest.approx(3.5 / 6), "pairs": 6}
    # gold tie (0, 1) is not a pair: (0, 2) wrong, (1, 2) right
    assert acc.compute(predictions=[[0.0, 5.0, 1.0]], references=[[1, 1, 2]]) == {
        "pairwise_accuracy": 0.5,
        "pairs": 2,
    }


def test_kendall_tau_hand_examples(metrics: dict) -> None:
    tau = metrics["kendall_tau"]
    assert tau.compute(predictions=[[3.0, 2.0, 1.0]], references=[[1, 2, 3]])["kendall_tau"] == pytest.approx(
        1.0
    )
    assert tau.compute(predictions=[[1.0, 2.0, 3.0]], references=[[1, 2, 3]])["kendall_tau"] == pytest.approx(
        -1.0
    )
    # one tied prediction pair: C - D = -5 over sqrt(5 untied predicted pairs * 6 gold pairs)
    tied = tau.compute(predictions=[[1.0, 2.0, 2.0, 3.0]], references=[[1, 2, 3, 4]])
    assert tied["kendall_tau"] == pytest.approx(-5 / math.sqrt(30))
    # gold all tied: skipped; constant prediction: 0; mean over the rest
    out = tau.compute(
        predictions=[[3.0, 2.0, 1.0], [1.0, 2.0], [4.0, 4.0, 4.0]], references=[[1, 2, 3], [1, 1], [1, 2, 3]]
    )
    assert out == {"kendall_tau": pytest.approx(0.5), "prompts": 2}


# --- human ranking round trip ---------------------------------------------------------------------


def _fill_ranks(path: Path, ranks_by_id: dict[str, dict[str, int]]) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in records:
        record["ranks"] = ranks_by_id.get(record["id"], record["ranks"])
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_export_import_round_trip(tmp_path: Path) -> None:
    chat = [_user("Hi"), _assistant("Hello"), _user("Tell a joke")]
    rows = [
        {"prompt": "Capital of Peru?", "responses": ["Lima.", "Cusco.", "Lima, Peru."]},
        {"id": "x7", "prompt": chat, "responses": ["Knock knock.", "No."]},
    ]
    path = export_for_ranking(rows, tmp_path / "to_rank.jsonl", seed=3)
    exported = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in exported] == ["0", "x7"]
    assert all(r["ranks"] == {} and r["_comment"] for r in exported)
    # ids are original positions, whatever the display order
    assert {r["id"]: r["response"] for r in exported[0]["responses"]} == {
        "r0": "Lima.",
        "r1": "Cusco.",
        "r2": "Lima, Peru.",
    }

    _fill_ranks(path, {"0": {"r2": 1, "r0": 1, "r1": 2}, "x7": {"r0": 1, "r1": 2}})
    assert import_ranked(path) == [
        {
            "prompt": "Capital of Peru?",
            "responses": ["Lima.", "Cusco.", "Lima, Peru."],
            "ranks": [1, 2, 1],
            "scores": None,
        },
        {"prompt": chat, "responses": ["Knock knock.", "No."], "ranks": [1, 2], "scores": None},
    ]


def test_import_lists_every_unranked_item_in_one_error(tmp_path: Path) -> None:
    path = export_for_ranking([{"prompt": "a", "responses": ["x", "y"]}] * 3, tmp_path / "r.jsonl")
    _fill_ranks(path, {"1": {"r0": 1, "r1": 2}})
    with pytest.raises(ValueError) as err:
        import_ranked(path)
    assert str(err.value) == (
        f"{path}: 2 bad rows (rows numbered from 0 in file order, lines from 1):\n"
        "  row 0 (line 1): field 'ranks' is {}: this item was not ranked (item id='0')\n"
        "  row 2 (line 3): field 'ranks' is {}: this item was not ranked (item id='2')"
    )


def test_import_rejects_partial_or_bad_ranks(tmp_path: Path) -> None:
    path = export_for_ranking([{"prompt": "a", "responses": ["x", "y", "z"]}], tmp_path / "r.jsonl")
    _fill_ranks(path, {"0": {"r0": 1, "r1": 2}})
    with pytest.raises(
        ValueError, match=r"\n  row 0 \(line 1\): field 'ranks' must rank each response id once"
    ):
        import_ranked(path)
    _fill_ranks(path, {"0": {"r0": 1, "r1": 2, "r2": "best"}})
    with pytest.raises(
        ValueError,
        match=r"\n  row 0 \(line 1\): field 'ranks' entry 2 is not a number: 'best' \(item id='0'\)",
    ):
        import_ranked(path)


def test_import_rejects_invalid_json_with_line_number(tmp_path: Path) -> None:
    path = export_for_ranking([{"prompt": "a", "responses": ["x", "y"]}], tmp_path / "r.jsonl")
    _fill_ranks(path, {"0": {"r0": 1, "r1": 2}})
    path.write_text(path.read_text(encoding="utf-8") + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"r\.jsonl: 1 bad row .*\n  row 1 \(line 3\): invalid JSON"):
        import_ranked(path)


def test_export_rejects_invalid_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"row 1: field 'responses\[0\]'"):
        export_for_ranking([GOOD, {"prompt": "p", "responses": ["", "b"]}], tmp_path / "r.jsonl")
