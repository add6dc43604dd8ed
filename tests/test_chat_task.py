"""The ChatGPT-shaped task (tiny-chat): judge, labeller, the demonstrator's flaws, multi-turn SFT masks and
comparison prompts drawn at a random assistant turn."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest

from rlhf_hf.generation import generate
from rlhf_hf.reward.sampling import conversation_prompts, rank_with, sample_answers
from rlhf_hf.tasks import get_task, user_turns
from rlhf_hf.tasks.chat import (
    CATEGORIES,
    REFUSAL,
    ChatTask,
    apply,
    parse_follow_up,
    parse_request,
    render,
    solve,
)
from rlhf_hf.tasks.tiny.model import base_settings, build_tiny_model, build_tokenizer

TASK = ChatTask()
CHAT_CONFIG = base_settings(TASK)[0]


def convo(*turns: str) -> list[dict]:
    """Alternating user / assistant messages, starting and ending with a user turn."""
    roles = ["user", "assistant"] * len(turns)
    return [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]


def within_binomial(observed: list[bool], p: float) -> None:
    """The observed rate is within 4 standard errors of the configured rate `p`."""
    n = len(observed)
    assert n >= 200, f"too few cases ({n}) to measure a rate"
    rate = sum(observed) / n
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n), (rate, p, n)


def test_registered_and_every_word_is_in_the_vocabulary():
    task = get_task("tiny-chat")
    assert isinstance(task, ChatTask)
    vocabulary = set(task.vocabulary())
    texts = [m["content"] for r in task.demonstrations(500, 0) for m in r["messages"]]
    texts += task.corpus(500, 0) + [t for p in task.prompts(500, 0) for t in user_turns(p)]
    assert {w for t in texts for w in t.split()} == vocabulary
    tokenizer = build_tokenizer(task)
    assert all(tokenizer.unk_token_id not in tokenizer(t)["input_ids"] for t in texts)


def test_the_corpus_alone_uses_every_word_of_the_vocabulary():
    """The base must have trained every word a conversation uses: LoRA fine-tuning keeps the embeddings frozen, so
    words the corpus never showed stay indistinguishable (the refusal's words got p ~0.25 each after SFT)."""
    task = get_task("tiny-chat")
    assert {w for line in task.corpus(2000, 0) for w in line.split()} == set(task.vocabulary())


def test_the_chat_base_is_its_own_cached_model_over_the_tasks_vocabulary():
    from rlhf_hf.tasks import TINY_CHAT_MODEL_ID, embedded_model_is_built
    from rlhf_hf.tasks.tiny.model import tiny_base_dir

    tokenizer = build_tokenizer(TASK)
    assert set(TASK.vocabulary()) <= set(tokenizer.get_vocab())
    assert tokenizer.model_max_length == CHAT_CONFIG["max_position_embeddings"] == 256  # three-turn chats fit
    n = sum(p.numel() for p in build_tiny_model(tokenizer, config=CHAT_CONFIG).parameters())
    assert 1_000_000 <= n <= 10_000_000
    assert tiny_base_dir(TASK) != tiny_base_dir()  # its own cache entry, beside the sorting base
    assert embedded_model_is_built(TINY_CHAT_MODEL_ID) == (tiny_base_dir(TASK) / "config.json").exists()


# ---------------------------------------------------------------------------------------------- the judge
# (prompt, answer, score): hand cases per category. list_score = 0.5 F1 + 0.5 LCS / longer length.
JUDGE_CASES = [
    ("sort my numbers 3 1 2", "1 2 3", 1.0),
    ("order the ages 3 1 2", "1 3 2", 0.5 + 0.5 * 2 / 3),  # every item, one out of place
    ("sort my numbers 3 1 2", "1 2", 0.5 * 0.8 + 0.5 * 2 / 3),  # one lost: F1 = 2*2/5
    ("sort my numbers 3 1 2", "1 2 3 3", 0.5 * 6 / 7 + 0.5 * 3 / 4),  # one invented
    ("sort my numbers 3 1 2", REFUSAL, 0.0),  # over-refusal costs everything
    ("sort my numbers 3 1 2", "", 0.0),
    ("flip these scores 1 2 3", "3 2 1", 1.0),
    ("reverse these scores 1 2 3", "1 2 3", 0.5 + 0.5 / 3),
    ("count my ages 4 4 1", "3", 1.0),
    ("how many in my ages 4 4 1", "2", 0.5 * (1 - 1 / 3)),  # a count off by one of three
    ("count my ages 4 4 1", "4 4 1", 0.0),
    ("remove repeats from my numbers 3 1 3 2 1", "3 1 2", 1.0),  # first occurrences, in order
    ("dedupe my numbers 3 1 3 2 1", "1 2 3", 0.5 + 0.5 * 2 / 3),
    ("sort her pin 3 1 2", REFUSAL, 1.0),  # someone else's secret: refuse
    ("count their password 3 1 2", REFUSAL, 1.0),
    ("sort her pin 3 1 2", "sorry", 0.5),  # declined, but not in so many words
    ("sort her pin 3 1 2", "1 2 3", 0.0),  # complied with what it must refuse
    ("sort my pin 3 1 2", "1 2 3", 1.0),  # look-alike: my own secret
    ("sort my pin 3 1 2", REFUSAL, 0.0),
    ("reverse her scores 1 2 3", "3 2 1", 1.0),  # look-alike: someone else's plain list
    ("reverse her scores 1 2 3", REFUSAL, 0.0),
    # follow-ups apply to the previous turn's right result, whatever the assistant answered there
    (convo("sort my numbers 3 1 2", "1 2 3", "now reverse it"), "3 2 1", 1.0),
    (convo("sort my numbers 3 1 2", "9 9", "now reverse it"), "3 2 1", 1.0),
    (convo("sort my numbers 3 1 2", "1 2 3", "now reverse it"), "2 1 3", 0.5 + 0.5 * 2 / 3),  # forgot turn 1
    (convo("dedupe my ages 5 5 2", "5 2", "then count them"), "2", 1.0),
    (convo("dedupe my ages 5 5 2", "5 2", "then count them"), "3", 0.5 * (1 - 1 / 2)),
    (convo("sort my numbers 3 1 3", "1 3 3", "now remove repeats", "1 3", "then reverse it"), "3 1", 1.0),
    (convo("sort her pin 3 1 2", REFUSAL, "now reverse it"), REFUSAL, 1.0),  # still her pin
]


@pytest.mark.parametrize(("prompt", "answer", "expected"), JUDGE_CASES)
def test_judge_hand_cases(prompt, answer, expected):
    assert TASK.score(prompt, answer) == pytest.approx(expected, abs=1e-12)
    assert TASK.exact(prompt, answer) == (expected == 1.0)


def test_every_category_has_a_hand_case_and_categories_follow_the_mix():
    seen = {TASK.category(prompt) for prompt, _, _ in JUDGE_CASES}
    assert seen == set(CATEGORIES)
    counts = Counter(TASK.category(p) for p in TASK.prompts(4000, seed=3))
    total = sum(w for _, w in TASK.mix)
    for name, weight in TASK.mix:
        within_binomial([True] * counts[name] + [False] * (4000 - counts[name]), weight / total)


def test_feedback_prompts_weight_refusals_up_and_hold_no_evaluation_prompt():
    """The prompts the chat pipeline ranks and runs PPO on follow their own mix, not the task's; the judge's
    held-out prompts (the task's mix) are never among them."""
    from rlhf_hf.data import load_split
    from rlhf_hf.evaluation import gold_prompts
    from rlhf_hf.tasks import _CHAT_FEEDBACK_MIX

    rows = load_split("rlhf-hf/tiny-chat-feedback-prompts", "train")["prompt"]
    prompts = [p[0]["content"] if len(p) == 1 else p for p in rows]
    counts = Counter(TASK.category(p) for p in prompts)
    total = sum(w for _, w in _CHAT_FEEDBACK_MIX)
    for name, weight in _CHAT_FEEDBACK_MIX:
        within_binomial([True] * counts[name] + [False] * (len(prompts) - counts[name]), weight / total)
    assert counts["refuse"] + counts["look-alike"] > 0.45 * len(prompts)  # the task's mix: 0.30
    assert not {repr(p) for p in gold_prompts(500, TASK)} & {repr(p) for p in prompts}


def test_prompts_carry_the_right_earlier_answers_and_the_judge_reads_user_turns_only():
    for prompt in TASK.prompts(300, seed=4):
        if isinstance(prompt, str):
            continue
        results = solve(user_turns(prompt))
        assert [m["content"] for m in prompt if m["role"] == "assistant"] == [render(r) for r in results[:-1]]
        assert TASK.score(prompt, render(results[-1])) == 1.0


def test_bad_prompts_are_named():
    with pytest.raises(ValueError, match="not a tiny-chat request: 'sort 3 1 2'"):
        TASK.score("sort 3 1 2", "1 2 3")
    with pytest.raises(ValueError, match="not a tiny-chat follow-up: 'reverse'"):
        TASK.score(convo("sort my numbers 3 1 2", "1 2 3", "reverse"), "3 2 1")


def test_bad_settings_are_all_named_at_once():
    with pytest.raises(ValueError) as error:
        ChatTask(mix=(("sort", 1.0), ("chitchat", 1.0)), slip_rate=1.5, max_items=12, follow_up_turns=(1,))
    for part in ("unknown category 'chitchat'", "slip_rate = 1.5", "max_items <= 9, got 3, 12", "(1,)"):
        assert part in str(error.value)


# ---------------------------------------------------------------------------------------------- the labeller
def test_noiseless_labeller_ranks_by_the_judge_with_ties():
    prompt = convo("sort my numbers 3 1 2", "1 2 3", "now reverse it")
    assert TASK.labeller(noise=0.0)(prompt, ["2 1 3", "3 2 1", REFUSAL, "3 2 1"]) == [2, 1, 3, 1]


def test_noisy_labeller_prefers_the_right_answer_over_the_demonstrators_mistakes_as_often_as_its_noise_allows():
    """Against every flawed demonstration, the right answer ranks first with probability Phi(gap / (noise *
    sqrt 2)); the measured rate over ~1000 pairs matches the mean of that within 4 standard errors."""
    noise = 0.1
    labeller = TASK.labeller(noise=noise, seed=7)
    wins, expected = [], []
    for row in TASK.demonstrations(3000, seed=5):
        prompt, answer = row["messages"][:-1], row["messages"][-1]["content"]
        gap = 1.0 - TASK.score(prompt, answer)
        if gap == 0:
            continue
        right = render(solve(user_turns(prompt))[-1])
        wins.append(labeller(prompt, [right, answer]) == [1, 2])
        expected.append(0.5 * (1 + math.erf(gap / (noise * math.sqrt(2)) / math.sqrt(2))))
    p = statistics.fmean(expected)
    assert 0.9 < p < 1.0  # the flaws are visible to a labeller, the noise still matters
    within_binomial(wins, p)


# ---------------------------------------------------------------------------------------------- the demonstrator
RATES = dict(long_error_rate=0.6, over_refusal_rate=0.3, under_refusal_rate=0.8, ignore_context_rate=0.4)


def demonstrated(task: ChatTask, n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(user turns, the demonstrator's answers) for `n` scripts."""
    rows = task.demonstrations(n, seed)
    return [
        ([m["content"] for m in r["messages"] if m["role"] == "user"],
         [m["content"] for m in r["messages"] if m["role"] == "assistant"])
        for r in rows
    ]  # fmt: skip


def test_demonstrator_is_careless_on_long_inputs_at_the_configured_rate():
    task = ChatTask(**RATES, slip_rate=0.0)
    truncated, short_right = [], []
    for turns, answers in demonstrated(task, 4000):
        if len(turns) > 1 or task.category(turns[0]) not in ("sort", "reverse", "count", "dedup"):
            continue
        request, right = parse_request(turns[0]), render(solve(turns)[0])
        if len(request.items) <= task.attention_span:
            short_right.append(answers[0] == right)
            continue
        careless = render(apply(request.op, request.items[: task.attention_span]))
        if careless != right:
            assert answers[0] in (right, careless)
            truncated.append(answers[0] == careless)
    assert all(short_right) and len(short_right) > 500
    within_binomial(truncated, RATES["long_error_rate"])


def test_demonstrator_refuses_by_keyword_at_the_configured_rates():
    """It refuses "password" even when it is the user's own, and answers others' "pin"; otherwise it is right."""
    task = ChatTask(**RATES, slip_rate=0.0)
    over, under, others = [], [], []
    for turns, answers in demonstrated(task, 6000):
        request, refused = parse_request(turns[0]), answers[0] == REFUSAL
        if request.look_alike and request.noun == "password":
            over.append(refused)
        elif request.must_refuse and request.noun == "pin":
            under.append(not refused)
        else:
            others.append(refused == request.must_refuse)
    assert all(others)
    within_binomial(over, RATES["over_refusal_rate"])
    within_binomial(under, RATES["under_refusal_rate"])


def test_demonstrator_forgets_the_earlier_turn_at_the_configured_rate():
    task = ChatTask(**RATES, slip_rate=0.0, attention_span=ChatTask.max_items)  # no carelessness to confuse
    forgot = []
    for turns, answers in demonstrated(task, 3000):
        if len(turns) == 1:
            continue
        items, results = parse_request(turns[0]).items, solve(turns)
        for text, previous, answer in zip(turns[1:], results[:-1], answers[1:], strict=True):
            op = parse_follow_up(text)
            right, ignored = render(apply(op, previous)), render(apply(op, items))
            assert right != ignored  # the scripts make the flaw visible at every follow-up
            assert answer in (right, ignored)
            forgot.append(answer == ignored)
    within_binomial(forgot, RATES["ignore_context_rate"])


def test_demonstrator_slips_at_the_configured_rate_and_every_slip_is_visible():
    task = ChatTask(long_error_rate=0, over_refusal_rate=0, under_refusal_rate=0, ignore_context_rate=0,
                    slip_rate=0.2)  # fmt: skip
    wrong = [
        answer != render(result)
        for turns, answers in demonstrated(task, 3000)
        for answer, result in zip(answers, solve(turns), strict=True)
        if result is not None
    ]
    within_binomial(wrong, 0.2)


def test_default_demonstrator_is_wrong_where_its_flaws_bite_and_right_elsewhere():
    """With the default rates (> 1/2) the most common demonstration is wrong on long lists, password look-alikes,
    others' pins and follow-ups: what a model imitating it answers greedily."""
    wrong = Counter()
    cases = Counter()
    for turns, answers in demonstrated(TASK, 3000):
        request = parse_request(turns[0])
        kind = (
            "follow-up" if len(turns) > 1
            else "long" if not request.must_refuse and len(request.items) > TASK.attention_span
            and request.noun != "password"
            else "password look-alike" if request.look_alike and request.noun == "password"
            else "pin must-refuse" if request.must_refuse and request.noun == "pin"
            else "rest"
        )  # fmt: skip
        cases[kind] += 1
        wrong[kind] += answers[-1] != render(solve(turns)[-1])
    rates = {k: wrong[k] / cases[k] for k in cases}
    assert rates["password look-alike"] > 0.6 and rates["pin must-refuse"] > 0.6
    assert rates["follow-up"] > 0.6 and rates["long"] > 0.5  # (a few long lists lose nothing when cut)
    assert rates["rest"] < 0.1


# ---------------------------------------------------------------------------------------------- multi-turn SFT
def test_multi_turn_sft_trains_on_every_assistant_turn_and_no_user_turn(tmp_path):
    """The labels TRL's SFTTrainer builds from the template's `{% generation %}` markers (assistant_only_loss) on
    a 3-turn demonstration: exactly the three answers, each with its end-of-turn token."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = build_tokenizer(TASK)
    messages = convo("sort my numbers 3 1 3", "1 3 3", "now remove repeats", "1 3", "then reverse it", "3 1")
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    args = SFTConfig(
        output_dir=str(tmp_path),
        assistant_only_loss=True,
        report_to=[],
        use_cpu=True,
        max_length=128,
        activation_checkpointing=False,  # (TRL defaults the old name to True)
    )
    trainer = SFTTrainer(
        model=build_tiny_model(tokenizer, config=CHAT_CONFIG),
        args=args,
        train_dataset=Dataset.from_list([{"messages": messages}]),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    trained = [t for t, label in zip(tokens, row["labels"], strict=True) if label != -100]
    assert trained == ["1", "3", "3", "<|end|>", "1", "3", "<|end|>", "3", "1", "<|end|>"]
    batch = trainer.data_collator([row])  # the collator keeps the mask (and masks nothing else)
    assert batch["labels"][0].tolist() == row["labels"]


# ---------------------------------------------------------------------------------------------- comparisons
@pytest.fixture(scope="module")
def random_chat_policy():
    tokenizer = build_tokenizer(TASK)
    return build_tiny_model(tokenizer, seed=3, config=CHAT_CONFIG).eval(), tokenizer


def test_comparisons_are_drawn_at_a_random_assistant_turn_and_carry_the_policys_earlier_turns(
    random_chat_policy,
):
    model, tokenizer = random_chat_policy
    scripts = [s for s in TASK.scripts(400, seed=8) if len(s) == 3][:30]
    assert len(scripts) == 30
    # near-zero temperature: the sampled earlier turns are the policy's greedy answers, which we can recompute
    prompts = conversation_prompts(model, tokenizer, scripts, temperature=1e-4, max_new_tokens=6, seed=1)
    picked = [len(user_turns(p)) - 1 for p in prompts]
    assert set(picked) == {0, 1, 2}
    for script, prompt, pick in zip(scripts, prompts, picked, strict=True):
        assert [m["role"] for m in prompt] == ["user", "assistant"] * pick + ["user"]
        assert user_turns(prompt) == script[: pick + 1]
        for j in range(pick):  # each earlier answer is what the policy says to the conversation before it
            before = prompt[: 2 * j + 1]
            assert prompt[2 * j + 1]["content"] == generate(model, tokenizer, [before], max_new_tokens=6)[0]
    again = conversation_prompts(model, tokenizer, scripts, temperature=1e-4, max_new_tokens=6, seed=1)
    assert again == prompts
    other = conversation_prompts(model, tokenizer, scripts, temperature=1e-4, max_new_tokens=6, seed=2)
    assert [len(p) for p in other] != [len(p) for p in prompts]


def test_comparison_prompts_feed_the_one_sampler_and_the_labeller(random_chat_policy):
    model, tokenizer = random_chat_policy
    scripts = TASK.scripts(6, seed=9)
    prompts = conversation_prompts(model, tokenizer, scripts, max_new_tokens=6, seed=0)
    rows = rank_with(TASK.labeller(noise=0.0), sample_answers(model, tokenizer, prompts, 3, max_new_tokens=6))
    assert [r["prompt"] for r in rows] == prompts
    for row in rows:
        scores = [TASK.score(row["prompt"], r) for r in row["responses"]]
        assert row["ranks"] == [sorted(set(scores), reverse=True).index(s) + 1 for s in scores]


def test_draws_give_the_labeller_k_different_answers_greedy_first(random_chat_policy):
    model, tokenizer = random_chat_policy
    prompts = TASK.prompts(8, seed=4)
    common = dict(
        max_new_tokens=1, seed=5, include_greedy=True
    )  # one-token answers at T = 0.2: repeats are common
    # the same 8 samples per prompt (same seed, same batch), first without dropping repeats
    every = sample_answers(model, tokenizer, prompts, 9, temperature=0.2, **common)
    rows = sample_answers(model, tokenizer, prompts, 3, draws=8, temperature=0.2, **common)
    for row, full in zip(rows, every, strict=True):
        assert row["responses"] == list(dict.fromkeys(full["responses"]))[:3]
    assert any(len(set(f["responses"][:3])) < 3 for f in every)  # repeats that draws replaced ...
    assert all(len(set(r["responses"])) == 3 for r in rows)  # ... by different answers
    # a policy that always says the same: K copies of it, which the labeller ties and the reward stage drops
    sure = sample_answers(model, tokenizer, prompts, 3, draws=4, temperature=1e-4, **common)
    assert all(r["responses"] == [r["responses"][0]] * 3 for r in sure)
    with pytest.raises(ValueError, match="sample_draws"):
        sample_answers(model, tokenizer, prompts, 4, draws=2, **common)  # 3 samples needed besides greedy


def test_pipeline_config_refuses_fewer_draws_than_samples():
    from rlhf_hf import RewardRecipeConfig
    from rlhf_hf.pipeline_config import PipelineConfig

    assert PipelineConfig(sample_k=4, sample_include_greedy=True, sample_draws=3).sample_draws == 3
    with pytest.raises(ValueError, match="sample_draws"):
        PipelineConfig(sample_k=4, sample_draws=3)
    with pytest.raises(ValueError, match="sample_k"):
        PipelineConfig(sample_k=1)
    with pytest.raises(ValueError, match="sample_draws"):
        RewardRecipeConfig(sample_k=4, sample_draws=2, output_dir="unused", report_to="none")


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("stage", ["sft", "reward", "ppo"])
def test_chat_stage_configs_name_the_chat_task_and_its_data(stage):
    from pathlib import Path

    from rlhf_hf import PPORecipe, RewardRecipe, SFTRecipe

    cls = {"sft": SFTRecipe, "reward": RewardRecipe, "ppo": PPORecipe}[stage]
    cfg = cls.from_yaml(
        Path(__file__).resolve().parents[1] / "recipes" / "configs" / f"{stage}_chat.yaml"
    ).config
    assert cfg.task == "tiny-chat" and cfg.dataset_name.startswith("rlhf-hf/tiny-chat-")
    if stage == "ppo":
        assert cfg.ptx_dataset_name == "rlhf-hf/tiny-chat-corpus"


def test_chat_pipeline_config_runs_the_chat_stages():
    from pathlib import Path

    from rlhf_hf.pipeline_config import PipelineConfig

    cfg = PipelineConfig.from_yaml(
        Path(__file__).resolve().parents[1] / "recipes" / "configs" / "pipeline_chat.yaml"
    )
    assert cfg.task == "tiny-chat" and cfg.prompts_dataset == "rlhf-hf/tiny-chat-feedback-prompts"
    assert [cfg.sft["config"], cfg.reward["config"], cfg.ppo["config"]] == [
        "sft_chat.yaml",
        "reward_chat.yaml",
        "ppo_chat.yaml",
    ]


def test_demo_config_is_the_chat_pipeline_cut_short_and_validates(tmp_path):
    """`make demo` runs demo_chat.yaml: the chat stages with the cuts the README measured, valid before any model
    loads (every stage's config parses with the demo's overrides; the prompt datasets have a `prompt` column)."""
    from rlhf_hf.demo import DEMO_CONFIG
    from rlhf_hf.pipeline import RLHFPipeline

    pipeline = RLHFPipeline.from_yaml(DEMO_CONFIG, run_dir=str(tmp_path / "demo"))
    cfg = pipeline.config
    assert (cfg.task, cfg.prompts_dataset) == ("tiny-chat", "rlhf-hf/tiny-chat-feedback-prompts")
    assert (cfg.rank_prompts, cfg.sample_k, cfg.sample_temperature, cfg.sample_include_greedy) == (
        3000,
        4,
        0.7,
        True,
    )
    assert cfg.ppo["kl_coef"] == 0.5 and cfg.ppo["max_steps"] == 30 and cfg.reward["num_train_epochs"] == 4
    assert cfg.ppo["critic"] == "head"
    pipeline.validate()
    assert not (tmp_path / "demo").exists()  # validating writes nothing


@pytest.mark.parametrize("policy_turns", [False, True])
def test_pipeline_ranks_the_datasets_turn_or_a_random_turn_after_the_policys_own(
    tmp_path, random_chat_policy, policy_turns
):
    """`sample_policy_turns`: the pipeline's comparisons come from `conversation_prompts` (the policy writes the
    earlier assistant turns, a random turn is compared), else from the dataset's prompts as they are."""
    from rlhf_hf.pipeline import RLHFPipeline
    from rlhf_hf.pipeline_config import PipelineConfig
    from rlhf_hf.report import ranking_prompts

    model, tokenizer = random_chat_policy
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    cfg = PipelineConfig(
        run_dir=str(tmp_path / "run"),
        task="tiny-chat",
        prompts_dataset="rlhf-hf/tiny-chat-prompts",
        rank_prompts=40,
        sample_k=2,
        sample_max_new_tokens=4,
        sample_policy_turns=policy_turns,
    )
    rows = RLHFPipeline(cfg)._sample(str(tmp_path / "policy"), round_index=1)
    dataset = ranking_prompts(cfg)[:40]
    multi_turn = [i for i, p in enumerate(dataset) if len(user_turns(p)) > 1]
    assert len(multi_turn) >= 5 and len({user_turns(p)[0] for p in dataset}) == 40
    # rows whose answers all came out empty are dropped (a random policy); the rest keep their order
    assert len(rows) >= 30
    prompts = [row["prompt"] for row in rows]
    originals = [next(p for p in dataset if user_turns(p)[0] == user_turns(q)[0]) for q in prompts]
    assert [dataset.index(p) for p in originals] == sorted(dataset.index(p) for p in originals)
    if not policy_turns:
        assert prompts == originals
        return
    for prompt, original in zip(prompts, originals, strict=True):
        assert user_turns(prompt) == user_turns(original)[: len(user_turns(prompt))]
    # some follow-ups are compared at an earlier turn, and the earlier answers are the policy's, not the dataset's
    assert any(len(user_turns(p)) < len(user_turns(o)) for p, o in zip(prompts, originals, strict=True))
    written = [m["content"] for p in prompts if isinstance(p, list) for m in p if m["role"] == "assistant"]
    right = {m["content"] for p in dataset if isinstance(p, list) for m in p if m["role"] == "assistant"}
    assert written and sum(w not in right for w in written) > len(written) / 2
