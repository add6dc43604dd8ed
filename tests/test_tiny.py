"""The embedded default: tokenizer, task, gold judge, simulated labeller and the pretrained tiny base."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_hf.tasks import SimulatedLabeller
from rlhf_hf.tasks.tiny.model import (
    PackedLinesCollator,
    build_tiny_model,
    build_tokenizer,
    get_tiny_base,
    pack_lines,
)
from rlhf_hf.tasks.tiny_sort import DEFAULT_TASK, SortTask


def test_tokenizer_is_rebuilt_identically_and_round_trips_the_chat_template():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    msgs = [{"role": "user", "content": "sort 3 1 4"}, {"role": "assistant", "content": "1 3 4"}]
    out = a.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    tokens = a.convert_ids_to_tokens(out["input_ids"])
    assert tokens == ["<|user|>", "sort", "3", "1", "4", "<|end|>", "<|assistant|>", "1", "3", "4", "<|end|>"]
    # the assistant mask covers exactly the answer and its end-of-turn token (what SFT learns)
    assert [t for t, m in zip(tokens, out["assistant_masks"], strict=True) if m] == ["1", "3", "4", "<|end|>"]
    assert a.pad_token != a.eos_token and a.padding_side == "left"


def test_tiny_model_size_is_in_the_advertised_range():
    n = sum(p.numel() for p in build_tiny_model().parameters())
    assert 1_000_000 <= n <= 5_000_000


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1 2 3", 1.0),
        ("1 3 2", 0.5 * 1.0 + 0.5 * 0.5),  # all digits kept, one of two neighbour pairs out of order
        ("1 2", 0.5 * 0.8 + 0.5 * 1.0),  # precision 1, recall 2/3 -> F1 0.8
        ("1 2 3 3", 0.5 * (2 * 0.75 * 1.0 / 1.75) + 0.5 * 1.0),  # an invented extra 3
        ("1 2 3 x", 0.5 * (2 * 0.75 / 1.75) + 0.5 * (2 / 3)),  # non-digit breaks the order check too
        ("", 0.0),
        ("7 8", 0.0 * 0.5 + 0.5 * 1.0),  # nothing in common with the input, but "in order"
    ],
)
def test_gold_judge_values(answer, expected):
    assert DEFAULT_TASK.score("sort 3 1 2", answer) == pytest.approx(expected)


def test_judge_reads_chat_prompts():
    msgs = [{"role": "user", "content": "order 9 0"}]
    assert DEFAULT_TASK.score(msgs, "0 9") == 1.0


def test_demonstrations_are_sloppy_at_the_configured_rate_and_mistakes_always_cost_score():
    task = SortTask(demo_error_rate=0.3)
    rows = task.demonstrations(2000, seed=0)
    scores = [task.score(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]
    wrong = sum(s < 1.0 for s in scores) / len(scores)
    assert 0.26 < wrong < 0.34
    rng = random.Random(0)
    for _ in range(500):
        digits = task.sample_digits(rng)
        bad = task.corrupt(sorted(digits), rng)
        assert task.score(f"sort {' '.join(digits)}", " ".join(bad)) < 1.0


def test_noiseless_labeller_ranks_by_gold_score_with_ties():
    labeller = SimulatedLabeller(DEFAULT_TASK.score, noise=0.0)
    assert labeller("sort 3 1 2", ["1 3 2", "1 2 3", "", "1 2 3"]) == [2, 1, 3, 1]


def test_noisy_labeller_is_seeded_and_mostly_right():
    a = SimulatedLabeller(DEFAULT_TASK.score, noise=0.05, seed=1)
    b = SimulatedLabeller(DEFAULT_TASK.score, noise=0.05, seed=1)
    responses = ["1 3 2", "1 2 3", "2 1 3", "1 2"]
    assert a("sort 3 1 2", responses) == b("sort 3 1 2", responses)
    # the best answer (1.0) beats the runner-up "1 2" (0.9) unless noise flips a 0.1 gap: P ~ Phi(0.1 / 0.0707)
    top = [a("sort 3 1 2", responses)[1] == 1 for _ in range(400)]
    assert 0.8 < sum(top) / len(top) < 0.99


def test_noisy_labeller_ties_answers_of_equal_quality_and_ranks_the_rest_by_noisy_quality():
    """One noise draw per quality level: identical (or equally good) answers always tie, so no training pair is
    a coin flip between equals; different answers are still reordered by noise."""
    labeller = SimulatedLabeller(DEFAULT_TASK.score, noise=0.5, seed=3)
    responses = ["1 2", "1 3 2", "1 2", "1 2 3", "1 3 2"]
    ranks = [labeller("sort 3 1 2", responses) for _ in range(300)]
    assert all(r[0] == r[2] and r[1] == r[4] for r in ranks)
    assert len({tuple(r) for r in ranks}) > 3  # noise 0.5 does reorder the three quality levels


def test_pretrained_base_is_cached_and_has_learned_the_corpus(tiny_base, monkeypatch):
    def no_pretraining(*args, **kwargs):
        raise AssertionError("the cached base was trained again")

    monkeypatch.setattr("rlhf_hf.tasks.tiny.model.pretrain_tiny_base", no_pretraining)
    assert get_tiny_base() == tiny_base  # second call hits the cache
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tok = AutoTokenizer.from_pretrained(tiny_base)
    lines = DEFAULT_TASK.corpus(100, seed=777)
    heads = [line.split(" sorted")[0] + " sorted :" for line in lines]
    enc = tok(["<bos> " + h for h in heads], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    answers = [
        a.split(".")[0] for a in tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    ]
    exact = [
        DEFAULT_TASK.score("sort " + h.split("numbers ")[1].split(" sorted")[0], a) == 1
        for h, a in zip(heads, answers, strict=True)
    ]
    assert sum(exact) / len(exact) >= 0.9


def test_the_cached_base_moves_when_its_corpus_generator_changes(monkeypatch):
    """A changed corpus means other pretrained weights: the cache dir must change with it, not serve the stale base."""
    from rlhf_hf.tasks.tiny.model import tiny_base_dir

    before = tiny_base_dir(DEFAULT_TASK)
    assert tiny_base_dir(DEFAULT_TASK) == before  # a pure function of the settings
    original = SortTask.corpus
    monkeypatch.setattr(
        SortTask, "corpus", lambda self, n, seed: [line + " ." for line in original(self, n, seed)]
    )
    assert tiny_base_dir(DEFAULT_TASK) != before


def test_packed_pretraining_rows_attend_within_a_line_only():
    """Packing corpus lines (a base pretraining option) must train each line as if it were alone: same logits as
    the line's own forward pass, the padding unlabelled."""
    tok = build_tokenizer()
    lines = [tok(f"<bos> {t} <|end|>")["input_ids"] for t in DEFAULT_TASK.corpus(30, seed=1)]
    rows = pack_lines(lines, 40)
    assert [x for r in rows for x in r["input_ids"]] == [x for line in lines for x in line]  # all, in order
    assert [n for r in rows for n in r["seq_lengths"]] == [len(line) for line in lines]
    assert len(rows) < len(lines) and all(len(r["input_ids"]) <= 40 for r in rows)
    with pytest.raises(ValueError, match="pack_length=4"):
        pack_lines(lines, 4)
    rows.sort(key=lambda r: len(r["input_ids"]))
    batch = PackedLinesCollator(tok.pad_token_id)([rows[0], rows[-1]])  # the shortest row gets padding
    # no attention mask: the position ids, restarting at every line, set the attention blocks
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    k = len(rows[0]["input_ids"])
    assert k < batch["input_ids"].shape[1] and (batch["labels"][0, k:] == -100).all()
    assert (batch["labels"][0, :k] == batch["input_ids"][0, :k]).all()

    model = build_tiny_model(tok)
    model.config.use_cache = False  # as pretraining sets it
    model.train()  # the mode the packing is used in (no dropout in Llama: train and eval logits agree)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for n in rows[0]["seq_lengths"]:
            alone = model(input_ids=batch["input_ids"][:1, start : start + n]).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, rtol=1e-4, atol=1e-5)
            start += n
    assert start == k and len(rows[0]["seq_lengths"]) > 1


def test_packed_pretraining_trains_with_block_diagonal_attention(tmp_path, monkeypatch):
    import transformers.masking_utils as masking

    from rlhf_hf.tasks.tiny import model as tiny

    seen = []
    find = masking.find_packed_sequence_indices
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda pos: seen.append(pos) or find(pos))
    settings = {**tiny.PRETRAIN_SETTINGS, "n_lines": 64, "steps": 2, "batch_size": 2, "pack_length": 64}
    monkeypatch.setattr(tiny, "base_settings", lambda task: (tiny.TINY_CONFIG, settings))
    tiny.pretrain_tiny_base(tmp_path, DEFAULT_TASK)
    # every training step restarted the positions at a line inside a row (a 0 followed by a 1; the padding at a
    # row's end is all 0s), which is what splits the attention into one block per line
    assert len(seen) == 2
    for pos in seen:
        restarts = ((pos[:, 1:-1] == 0) & (pos[:, 2:] == 1)).sum(-1)
        assert restarts.sum() >= 1, pos
