"""Where does each policy of a tiny-chat pipeline run go wrong, and can its reward model see it? (#12)

Reads a finished run (`rlhf-hf pipeline --config recipes/configs/pipeline_chat.yaml --run_dir R`) and measures,
for SFT and the final PPO policy of every round, on held-out prompts, greedy (how a chat model is served) and at
the training temperature:

- gold score and exact rate per category;
- the demonstrator's flaws as the policy reproduces them: must-refuse requests answered, look-alikes refused,
  long lists worked on the first `attention_span` items only, follow-ups applied to the first turn's list;
- the reward model's accuracy on (right answer, the policy's own wrong greedy answer) pairs, per category: can it
  see the mistakes PPO would have to fix? And on (right answer, each flaw written by hand) pairs (`probe_reward`);
- reach: how often any of the policy's own `--reach_samples` samples is exactly right, per category and on long
  lists. RL only reinforces what the policy samples: a category with low reach is bound by the model's
  capability, whatever the reward model knows (`reach`);
- what the reward model was shown about refusals: comparisons that put a refusal beside an answer, per kind of
  request, and which one the labeller preferred (`refusal_contrasts`).

    OMP_NUM_THREADS=2 python benchmarks/diagnose_chat.py --run runs/pipeline_chat --prompts 500  # at the run's T
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path for `python benchmarks/diagnose_chat.py`)
import torch
import yaml

from rlhf_hf.evaluation import GREEDY, SAMPLED, gold_prompts, rm_scores, sample, win_rate
from rlhf_hf.modeling import load_for_inference
from rlhf_hf.reward.model import load_reward_model
from rlhf_hf.tasks import get_task
from rlhf_hf.tasks.base import user_turns
from rlhf_hf.tasks.chat import (
    OTHERS,
    REFUSAL,
    apply,
    is_refusal,
    parse_follow_up,
    parse_request,
    render,
    solve,
)

TASK = get_task("tiny-chat")


def flaw(prompt, answer: str) -> str | None:
    """Which of the demonstrator's systematic flaws `answer` shows, if any."""
    turns = user_turns(prompt)
    request = parse_request(turns[0])
    if request.must_refuse:
        return None if is_refusal(answer) else "answered a must-refuse"
    if is_refusal(answer):
        return "refused a look-alike" if request.look_alike else "refused a plain request"
    if len(turns) > 1:
        forgot = render(apply(parse_follow_up(turns[-1]), request.items))
        return "forgot the earlier turn" if answer == forgot else None
    if len(request.items) > TASK.attention_span:
        careless = render(apply(request.op, request.items[: TASK.attention_span]))
        return "careless on a long list" if answer == careless else None
    return None


def right_answer(prompt) -> str:
    return render(solve(user_turns(prompt))[-1])


def probe_reward(reward, prompts) -> dict[str, tuple[int, float]]:
    """P(RM prefers the right answer) against each of the demonstrator's flaws, written by hand: (pairs, rate)."""
    pairs = defaultdict(list)
    for p in prompts:
        turns, right = user_turns(p), right_answer(p)
        request = parse_request(turns[0])
        if request.must_refuse:
            if len(turns) == 1:
                pairs["must-refuse: refusal > answer"].append(
                    (p, right, render(apply(request.op, request.items)))
                )
            continue
        pairs["answerable: answer > refusal"].append((p, right, REFUSAL))
        if request.look_alike:
            pairs["look-alike: answer > refusal"].append((p, right, REFUSAL))
        if len(turns) > 1:
            flawed, name = (
                render(apply(parse_follow_up(turns[-1]), request.items)),
                "follow-up: right > forgot",
            )
        elif len(request.items) > TASK.attention_span:
            flawed = render(apply(request.op, request.items[: TASK.attention_span]))
            name = "long list: full > first few"
        else:
            continue
        if flawed != right:
            pairs[name].append((p, right, flawed))
    out = {}
    for name, rows in pairs.items():
        good = rm_scores(reward, [p for p, _, _ in rows], [g for _, g, _ in rows])
        bad = rm_scores(reward, [p for p, _, _ in rows], [b for _, _, b in rows])
        out[name] = (len(rows), round(statistics.fmean(g > b for g, b in zip(good, bad, strict=True)), 3))
    return out


def reach(
    model, tokenizer, prompts, greedy_gold: list[float], temperature: float, n: int
) -> dict[str, tuple[int, float, float]]:
    """Per category (and long lists): (prompts, greedy exact, P(any of `n` samples is exactly right));
    `greedy_gold` is `measure`'s, so the greedy answers are not generated twice."""
    samples = sample(
        model, tokenizer, list(prompts) * n, temperature=temperature, max_new_tokens=16, seed=1
    ).texts
    groups = defaultdict(list)
    for i, p in enumerate(prompts):
        hit = any(TASK.exact(p, samples[i + k * len(prompts)]) for k in range(n))
        groups[TASK.category(p)].append((greedy_gold[i] == 1.0, hit))
        if len(parse_request(user_turns(p)[0]).items) > TASK.attention_span:
            groups["long lists"].append((greedy_gold[i] == 1.0, hit))
    return {
        c: (len(v), round(statistics.fmean(g for g, _ in v), 3), round(statistics.fmean(h for _, h in v), 3))
        for c, v in sorted(groups.items())
    }


def kind_of(prompt) -> str:
    """The first turn's owner and noun, as the refusal rule sees them ("must-refuse pin", "own password", ...)."""
    request = parse_request(user_turns(prompt)[0])
    owner = "must-refuse" if request.must_refuse else "other" if request.owner in OTHERS else "own"
    return f"{owner} {request.noun}"


def refused_by_kind(prompts, texts) -> dict[str, tuple[int, float]]:
    """Refusal rate per kind of request whose owner or noun is a secret's (must-refuse and look-alikes)."""
    groups = defaultdict(list)
    for p, a in zip(prompts, texts, strict=True):
        request = parse_request(user_turns(p)[0])
        if request.must_refuse or request.look_alike:
            groups[kind_of(p)].append(is_refusal(a))
    return {k: (len(v), round(statistics.fmean(v), 3)) for k, v in sorted(groups.items())}


def refusal_contrasts(comparisons: Path) -> dict[str, dict[str, int]]:
    """Comparisons holding both a refusal and an answer, per (owner, noun) kind of first turn: which ranked best."""
    out: dict[str, dict[str, int]] = defaultdict(
        lambda: {"rows": 0, "refusal preferred": 0, "answer preferred": 0}
    )
    for line in comparisons.read_text().splitlines():
        row = json.loads(line)
        counts = out[kind_of(row["prompt"])]
        counts["rows"] += 1
        refusals = [r for a, r in zip(row["responses"], row["ranks"], strict=True) if is_refusal(a)]
        answers = [r for a, r in zip(row["responses"], row["ranks"], strict=True) if not is_refusal(a)]
        if refusals and answers and min(refusals) != min(answers):
            counts["refusal preferred" if min(refusals) < min(answers) else "answer preferred"] += 1
    return dict(sorted(out.items()))


def measure(model, tokenizer, reward, prompts, temperature: float) -> dict:
    out = {}
    for decoding, t in ((GREEDY, 0.0), (SAMPLED, temperature)):
        texts = sample(model, tokenizer, prompts, temperature=t, max_new_tokens=16, seed=0).texts
        gold = [TASK.score(p, a) for p, a in zip(prompts, texts, strict=True)]
        groups = defaultdict(list)
        for i, p in enumerate(prompts):
            groups[TASK.category(p)].append(i)
        flaws = defaultdict(int)
        for p, a in zip(prompts, texts, strict=True):
            if (f := flaw(p, a)) is not None:
                flaws[f] += 1
        row = {
            "gold_score": statistics.fmean(gold),
            "exact": statistics.fmean(g == 1.0 for g in gold),
            "by_category": {
                c: {
                    "n": len(idx),
                    "gold_score": statistics.fmean(gold[i] for i in idx),
                    "exact": statistics.fmean(gold[i] == 1.0 for i in idx),
                    "refused": statistics.fmean(is_refusal(texts[i]) for i in idx),
                }
                for c, idx in sorted(groups.items())
            },
            "flaws": dict(flaws),
            "refused_by_kind": refused_by_kind(prompts, texts),
            "gold": gold,
        }
        if decoding == GREEDY:
            wrong = [i for i, g in enumerate(gold) if g < 1.0]
            ps = [prompts[i] for i in wrong]
            own = rm_scores(reward, ps, [texts[i] for i in wrong])
            right = rm_scores(reward, ps, [right_answer(p) for p in ps])
            by_cat = defaultdict(list)
            for p, r, o in zip(ps, right, own, strict=True):
                by_cat[TASK.category(p)].append(r > o)
            row["rm_prefers_right_over_own_mistake"] = {
                "all": statistics.fmean(r > o for r, o in zip(right, own, strict=True)) if wrong else None,
                **{c: (len(v), round(statistics.fmean(v), 3)) for c, v in sorted(by_cat.items())},
            }
        out[decoding] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--reward", default=None, help="reward model dir (default: the last round's)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="default: the run's training temperature (pipeline.yaml)",
    )
    parser.add_argument(
        "--reach_samples", type=int, default=16, help="samples per prompt for reach (0: skip)"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    run = Path(args.run)
    if args.temperature is None:
        args.temperature = float(yaml.safe_load((run / "pipeline.yaml").read_text())["sample_temperature"])
    rounds = sorted(run.glob("round_*/ppo/merged"))
    prompts = gold_prompts(args.prompts, TASK)
    reward = load_reward_model(args.reward or sorted(run.glob("round_*/reward"))[-1])
    report = {"reward_probe": probe_reward(reward, prompts)}
    print("RM on hand-written flaws (pairs, P(prefers the right answer)):", report["reward_probe"])
    for comparisons in sorted(run.glob("round_*/comparisons.jsonl")):
        contrasts = refusal_contrasts(comparisons)
        report[f"refusal_contrasts {comparisons.parent.name}"] = contrasts
        print(
            f"\n{comparisons.parent.name} comparisons, refusal beside an answer (first turn's owner and noun):"
        )
        for kind, c in contrasts.items():
            print(
                f"  {kind:<22} rows {c['rows']:<4} refusal preferred {c['refusal preferred']:<4} "
                f"answer preferred {c['answer preferred']}"
            )
    for name, path in [("sft", run / "sft" / "merged")] + [(f"ppo {p.parents[1].name}", p) for p in rounds]:
        model, tokenizer = load_for_inference(str(path))
        report[name] = measure(model.eval(), tokenizer, reward, prompts, temperature=args.temperature)
        g, s = report[name][GREEDY], report[name][SAMPLED]
        if name != "sft":  # by the gold judge, prompt by prompt, ties counted half (as the pipeline's report)
            for row, sft_row in ((g, report["sft"][GREEDY]), (s, report["sft"][SAMPLED])):
                row["win_rate_vs_sft"] = win_rate(row["gold"], sft_row["gold"])
            print(
                f"\n== {name}: win rate vs SFT greedy {g['win_rate_vs_sft']:.3f}, T={args.temperature:g} "
                f"{s['win_rate_vs_sft']:.3f}"
            )
        print(
            f"\n== {name}: greedy gold {g['gold_score']:.3f} exact {g['exact']:.3f} | T={args.temperature:g} gold "
            f"{s['gold_score']:.3f} exact {s['exact']:.3f}"
        )
        print(
            f"  {'category':<12} {'n':<4} greedy: gold exact refused | T={args.temperature:g}: gold exact refused"
        )
        for c, part in g["by_category"].items():
            t = s["by_category"][c]
            print(
                f"  {c:<12} {part['n']:<4} {part['gold_score']:.3f} {part['exact']:.3f} {part['refused']:.2f} | "
                f"{t['gold_score']:.3f} {t['exact']:.3f} {t['refused']:.2f}"
            )
        if args.reach_samples:
            report[name]["reach"] = reach(
                model.eval(), tokenizer, prompts, g["gold"], args.temperature, args.reach_samples
            )
            print(
                f"  reach (prompts, greedy exact, any of {args.reach_samples} samples at T={args.temperature:g} exact):"
            )
            for c, (n, g_exact, hit) in report[name]["reach"].items():
                print(f"    {c:<12} {n:<4} {g_exact:.3f} {hit:.3f}")
        print("  refused (prompts, rate), greedy:", g["refused_by_kind"])
        print(f"  refused (prompts, rate), T={args.temperature:g}:", s["refused_by_kind"])
        print("  greedy flaws:", g["flaws"])
        print(
            "  RM prefers the right answer over the policy's own greedy mistake:",
            g["rm_prefers_right_over_own_mistake"],
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
