"""Data from config and CLI: `dataset_format` for every public preference format and oasst1 SFT, and the one
validator: errors that name the user's file, its own rows and fields, every bad row in one error, before any
split and before any model loads; data that leaves nothing to train on fails up front, saying why."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset

from rlhf_hf.cli import main
from rlhf_hf.reward.loaders import detect_format, oasst1_best_paths, ranked_source_rows
from rlhf_hf.tasks.tiny.model import build_tokenizer
from rlhf_hf.validation import (
    MAX_LISTED,
    DataError,
    RowError,
    check_sft_row,
    sft_length,
    validate_sft_dataset,
)

FIXTURES = Path(__file__).parent / "fixtures" / "reward"
SFT_TINY_YAML = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "sft_tiny.yaml"
GOOD = {"prompt": "sort 2 1", "responses": ["1 2", "2 1"], "ranks": [1, 2]}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _fixture(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()]


def _reward_cli(tmp_path: Path, model: Path | str, data: Path, *flags: str) -> int:
    return main(
        ["reward", "--model_name_or_path", str(model), "--dataset_name", str(data)]
        + ["--output_dir", str(tmp_path / "rm"), "--max_length", "64", "--report_to", "none", *flags]
    )


# ---------------------------------------------------------------------------------------------- one error
def test_four_bad_rows_one_error_naming_the_files_rows_before_the_split(
    tmp_path, tokenizer_dir, no_model_load
):
    """Issue #13's file: row 1 one answer, row 2 an empty answer, row 3 ranks of the wrong length, row 4 an empty
    prompt; with `eval_fraction: 0.2` the error still names the file's own rows (0-based) and lines (1-based)."""
    rows = [
        GOOD,
        {"prompt": "sort 1 2", "responses": ["1 2"], "ranks": [1]},
        {"prompt": "sort 1 2", "responses": ["1 2", ""], "ranks": [1, 2]},
        {"prompt": "sort 1 2", "responses": ["1 2", "2 1"], "ranks": [1, 2, 3]},
        {"prompt": " ", "responses": ["1 2", "2 1"], "ranks": [1, 2]},
    ] + [GOOD] * 5
    data = _jsonl(tmp_path / "ranked.jsonl", rows)
    with pytest.raises(DataError) as err:
        _reward_cli(tmp_path, tokenizer_dir, data, "--eval_fraction", "0.2")
    assert str(err.value) == (
        f"{data}: 4 bad rows (rows numbered from 0 in file order, lines from 1):\n"
        "  row 1 (line 2): field 'responses' needs at least 2 answers to compare, got 1\n"
        "  row 2 (line 3): field 'responses[1]' is empty or whitespace-only\n"
        "  row 3 (line 4): field 'ranks' has 3 entries for 2 responses\n"
        "  row 4 (line 5): field 'prompt' is empty or whitespace-only"
    )
    assert not (tmp_path / "rm").exists()


def test_blank_lines_shift_line_numbers_not_row_numbers(tmp_path, tokenizer_dir, no_model_load):
    data = tmp_path / "ranked.jsonl"
    data.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "ranks": [1]}) + "\n")
    with pytest.raises(
        DataError, match=r"\n  row 1 \(line 3\): field 'ranks' has 1 entries for 2 responses$"
    ):
        _reward_cli(tmp_path, tokenizer_dir, data)


def test_first_twenty_bad_rows_listed_then_counted(tmp_path, tokenizer_dir, no_model_load):
    rows = [GOOD] + [{**GOOD, "responses": ["1 2", ""]}] * 25
    with pytest.raises(DataError) as err:
        _reward_cli(tmp_path, tokenizer_dir, _jsonl(tmp_path / "ranked.jsonl", rows))
    message = str(err.value)
    assert ": 25 bad rows " in message and message.endswith("\n  ... and 5 more")
    listed = re.findall(r"\n  row (\d+) \(line (\d+)\): field 'responses\[1\]' is empty", message)
    assert listed == [(str(i), str(i + 1)) for i in range(1, MAX_LISTED + 1)]


def test_sft_rows_of_every_kind_in_one_error(tmp_path, no_model_load):
    ok = {"prompt": "sort 2 1", "completion": "1 2"}
    rows = [
        ok,
        {"prompt": "sort 2 1", "completion": [{"role": "assistant", "content": "1 2"}]},  # mixed kinds
        {"prompt": "", "completion": "1 2"},
        {"prompt": "sort " + " ".join(["1"] * 70), "completion": "done"},  # too long
        ok,
    ]
    data = _jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(DataError) as err:
        main(
            [
                "sft",
                "--config",
                str(SFT_TINY_YAML),
                "--dataset_name",
                str(data),
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    lines = str(err.value).splitlines()
    assert lines[0] == f"{data}: 3 bad rows (rows numbered from 0 in file order, lines from 1):"
    assert lines[1] == (
        "  row 1 (line 2): field 'completion' is messages but 'prompt' is not: use strings for both or message "
        "lists for both"
    )
    assert lines[2] == "  row 2 (line 3): field 'prompt' is empty or whitespace-only"
    assert re.fullmatch(
        r"  row 3 \(line 4\): field 'completion' makes 7\d tokens, longer than max_length=64", lines[3]
    )
    assert lines[4] == "Raise max_length, or set `drop_long_rows: true` to leave such rows out."


# ---------------------------------------------------------------------------------------------- nothing left
def test_all_tied_ranked_data_fails_before_a_model_loads(tmp_path, tokenizer_dir, no_model_load):
    rows = [{"prompt": f"sort {i} 1", "responses": ["1 2", "2 1"], "scores": [0.5, 0.5]} for i in range(4)]
    data = _jsonl(tmp_path / "tied.jsonl", rows)
    with pytest.raises(DataError) as err:
        _reward_cli(tmp_path, tokenizer_dir, data, "--eval_fraction", "0.25")
    assert str(err.value) == (
        f"{data}: all 4 rows were dropped, nothing is left to train a reward model on: 4 had all their answers "
        "tied (equal ranks or scores give no pair to learn from)."
    )
    assert not (tmp_path / "rm").exists()


def test_all_tied_or_too_long_says_both(tmp_path, tokenizer_dir, no_model_load):
    rows = [{**GOOD, "ranks": [1, 1]}, {**GOOD, "responses": ["1 2", " ".join(["1"] * 80)]}]
    with pytest.raises(
        DataError, match=r"all 2 rows were dropped.*: 1 had all .* and 1 had an answer longer"
    ):
        _reward_cli(tmp_path, tokenizer_dir, _jsonl(tmp_path / "d.jsonl", rows), "--drop_long_rows", "true")


def test_sft_all_rows_too_long_fails_before_a_model_loads(tmp_path, no_model_load):
    rows = [{"prompt": "sort " + " ".join(["2"] * 70), "completion": "2"}] * 3
    data = _jsonl(tmp_path / "long.jsonl", rows)
    with pytest.raises(DataError) as err:
        main(
            ["sft", "--config", str(SFT_TINY_YAML), "--dataset_name", str(data), "--drop_long_rows", "true"]
            + ["--output_dir", str(tmp_path / "o")]
        )
    assert str(err.value) == (
        f"{data}: all 3 rows are longer than max_length=64 tokens (chat template and eos included) and "
        "`drop_long_rows: true` dropped them: nothing is left to train on; raise max_length"
    )
    assert not (tmp_path / "o").exists()


def test_sft_length_counts_what_trl_trains_on():
    """TRL appends eos to string data that lacks it; messages are measured through the chat template."""
    tok = build_tokenizer()
    eos = tok.eos_token
    plain = len(tok("sort 2 1 : 1 2")["input_ids"])
    assert sft_length({"text": "sort 2 1 : 1 2"}, "text", tok) == plain + 1
    assert sft_length({"text": "sort 2 1 : 1 2 " + eos}, "text", tok) == plain + 1
    assert sft_length({"prompt": "sort 2 1 :", "completion": " 1 2"}, "prompt_completion", tok) == plain + 1
    conversation = [{"role": "user", "content": "sort 2 1"}, {"role": "assistant", "content": "1 2"}]
    rendered = len(tok.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])
    assert sft_length({"messages": conversation}, "messages", tok) == rendered
    split = {"prompt": conversation[:1], "completion": conversation[1:]}
    assert sft_length(split, "prompt_completion", tok) == rendered
    with pytest.raises(RowError, match="'completion' is a string but 'prompt' is not"):
        check_sft_row({"prompt": conversation[:1], "completion": "1 2"}, "prompt_completion")


def test_sft_validator_numbers_converted_rows_by_their_source_row():
    data = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}] * 2)
    with pytest.raises(DataError, match=r"\n  row 7: field 'messages' has no assistant.*\n  row 9: "):
        validate_sft_dataset(data, build_tokenizer(), max_length=None, source="t", source_rows=[7, 9])


# ---------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("oasst1.jsonl", "oasst1"),
        ("ultrafeedback.jsonl", "ultrafeedback"),
        ("hh_rlhf.jsonl", "hh-rlhf"),
        ("shp.jsonl", "shp"),
    ],
)
def test_public_formats_are_detected_from_their_columns(name, fmt):
    rows = _fixture(name)
    columns = sorted({k for row in rows for k in row})
    assert detect_format(columns, rows[0], name) == fmt


def test_ranked_and_pairwise_detected_and_unknown_columns_refused():
    assert detect_format(["prompt", "responses", "ranks"], GOOD, "d") == "ranked"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert (
        detect_format(["chosen", "rejected"], {"chosen": messages, "rejected": messages}, "d") == "pairwise"
    )
    assert detect_format(["prompt", "chosen", "rejected"], {"prompt": "p", "chosen": "a"}, "d") == "pairwise"
    with pytest.raises(
        DataError, match=r"^d: its columns \['answer', 'question'\] matches no known format; set "
    ):
        detect_format(["question", "answer"], {"question": "q", "answer": "a"}, "d")


def test_loader_errors_name_source_rows_and_their_own_fields():
    rows = _fixture("ultrafeedback.jsonl")
    rows[0]["completions"][2]["response"] = "  "
    rows.append({"instruction": "", "completions": rows[0]["completions"]})
    with pytest.raises(DataError) as err:
        ranked_source_rows(rows, "ultrafeedback", "uf.jsonl")
    assert str(err.value).splitlines()[1:] == [
        "  row 0: field 'completions[2].response' is empty or whitespace-only",
        "  row 2: field 'instruction' is empty or whitespace-only",
    ]


def test_explicit_format_needs_its_columns():
    with pytest.raises(DataError, match=r"dataset_format 'shp' needs column\(s\) \['post_id'"):
        ranked_source_rows([GOOD], "shp", "d.jsonl")


def test_oasst1_best_ranked_path_per_tree():
    rows = oasst1_best_paths(_fixture("oasst1.jsonl"))
    assert [[(m["role"], m["content"]) for m in row["messages"]] for row in rows] == [
        [
            ("user", "What is the capital of France?"),
            ("assistant", "Paris."),
            ("user", "And of Germany?"),
            ("assistant", "Berlin."),
        ],
        [("user", "Wie spät ist es?"), ("assistant", "Ich kenne die Uhrzeit nicht.")],
    ]
    assert len(oasst1_best_paths(_fixture("oasst1.jsonl"), lang="de")) == 1


# ---------------------------------------------------------------------------------------------- CLI, training
@pytest.mark.parametrize(
    ("name", "fmt", "prompts"),
    [
        ("oasst1.jsonl", "oasst1", 3),
        ("ultrafeedback.jsonl", "ultrafeedback", 1),
        ("hh_rlhf.jsonl", "hh-rlhf", 2),
        ("shp.jsonl", "shp", 4),
        ("ranked.jsonl", "ranked", 3),
        ("pairwise.jsonl", "pairwise", 2),
    ],
)
def test_reward_cli_trains_on_each_format(tmp_path, name, fmt, prompts):
    data = FIXTURES / name
    if fmt == "ranked":
        data = _jsonl(
            tmp_path / name,
            [
                GOOD,  # ranks
                {"prompt": "sort 3 1", "responses": ["3 1", "1 3"], "scores": [0.2, 0.9]},  # scores
                {"prompt": "sort 2 1", "responses": ["1 2", "2 1", "1"]},  # best first
            ],
        )
    elif fmt == "pairwise":
        messages = [{"role": "user", "content": "sort 2 1"}]
        pair = {"chosen": messages + [{"role": "assistant", "content": "1 2"}]}
        pair["rejected"] = messages + [{"role": "assistant", "content": "2 1"}]
        data = _jsonl(
            tmp_path / name, [pair, {"prompt": "sort 3 1", "chosen": "1 3", "rejected": "3 1", "margin": 2}]
        )
    code = _reward_cli(
        tmp_path, "rlhf-hf/tiny", data, "--dataset_format", fmt, "--eval_fraction", "0", "--max_steps", "1"
    )
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert code == 0 and metrics["train_prompts"] == prompts and metrics["train_loss"] > 0


def test_sft_cli_trains_on_oasst1_trees(tmp_path):
    out = tmp_path / "sft"
    code = main(
        ["sft", "--config", str(SFT_TINY_YAML), "--dataset_name", str(FIXTURES / "oasst1.jsonl")]
        + ["--dataset_format", "oasst1", "--output_dir", str(out), "--max_steps", "1", "--merge", "false"]
        + ["--eval_fraction", "0"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0 and metrics["train_rows"] == 2 and metrics["train_loss"] > 0


def test_unknown_format_is_refused_when_the_config_is_read():
    with pytest.raises(ValueError, match=r"dataset_format must be one of \['ranked', 'pairwise', 'oasst1'"):
        main(["reward", "--dataset_format", "csv"])
    with pytest.raises(ValueError, match=r"dataset_format must be one of \['messages', 'prompt_completion'"):
        main(["sft", "--dataset_format", "ultrafeedback"])


def test_dataset_format_over_a_labelling_config_needs_labeller_none():
    from rlhf_hf import RewardRecipe

    reward_yaml = str(SFT_TINY_YAML.parent / "reward_tiny.yaml")
    with pytest.raises(ValueError, match=r"`labeller: simulated` samples .*--labeller none"):
        RewardRecipe.parse_args(["--config", reward_yaml, "--dataset_format", "shp"])
    config = RewardRecipe.parse_args(
        ["--config", reward_yaml, "--dataset_format", "shp", "--labeller", "none"]
    )
    assert (config.labeller, config.dataset_format) == (None, "shp")
