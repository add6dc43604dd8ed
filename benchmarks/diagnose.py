"""Why does PPO degrade greedy answers on the sort task? Numbers for `benchmarks/DIAGNOSIS.md` (#12).

Reads a finished pipeline run (`rlhf-hf pipeline --config recipes/configs/pipeline_tiny.yaml --run_dir R`, PPO
checkpoints every 10 updates) and measures, for SFT and every PPO checkpoint of round 1, on held-out prompts:

- greedy and sampled (T = training temperature) gold score, exact rate, RM score; KL to SFT on sampled answers;
- the kinds of mistakes in greedy answers: counting (a digit dropped, duplicated or invented: the multiset
  differs from the input's) vs ordering only (the right digits, out of order);
- the RM's accuracy on pairs (correct answer, one corrupted copy) by kind of corruption, and on the policy's
  own wrong greedy answers against the correct one, split by counting / ordering mistakes.

    OMP_NUM_THREADS=2 python benchmarks/diagnose.py --run runs/diag --prompts 500 --out runs/diag/diagnosis.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from rlhf_hf.evaluation import (  # noqa: E402
    GREEDY,
    SAMPLED,
    gold_prompts,
    kl_to_reference,
    rm_scores,
    sample,
)
from rlhf_hf.modeling import load_tokenizer  # noqa: E402
from rlhf_hf.reward.model import load_reward_model  # noqa: E402
from rlhf_hf.tasks import get_task  # noqa: E402
from rlhf_hf.tasks.tiny_sort import DIGITS  # noqa: E402

TASK = get_task("tiny-sort")
COUNTING_KINDS = ("drop", "duplicate", "replace")


def mistake(prompt: str, answer: str) -> str:
    """'correct', 'ordering' (right multiset, wrong order) or 'counting' (a digit dropped, duplicated, invented)."""
    want, got = sorted(TASK.digits_of(prompt)), answer.split()
    if got == want:
        return "correct"
    return "ordering" if sorted(got) == want else "counting"


def counting_detail(prompt: str, answer: str) -> str:
    want, got = Counter(TASK.digits_of(prompt)), Counter(answer.split())
    if sum(got.values()) < sum(want.values()):
        return "shorter"
    if sum(got.values()) > sum(want.values()):
        return "longer"
    return "same length, wrong digits"


def corrupt_as(digits: list[str], kind: str, rng: random.Random) -> list[str] | None:
    """The correct answer with one mistake of `kind`; None when that kind cannot apply."""
    out = sorted(digits)
    i = rng.randrange(len(out))
    if kind == "swap":
        pairs = [j for j in range(len(out) - 1) if out[j] != out[j + 1]]
        if not pairs:
            return None
        j = rng.choice(pairs)
        out[j], out[j + 1] = out[j + 1], out[j]
    elif kind == "drop":
        del out[i]
    elif kind == "duplicate":
        out.insert(i, out[i])
    elif kind == "replace":  # keep it sorted, so only the count is wrong
        out[i] = rng.choice([d for d in DIGITS if d != out[i]])
        out.sort()
    return out


def rm_accuracy_by_corruption(reward, prompts: list[str], seed: int = 0) -> dict[str, dict]:
    """P(RM scores the correct answer above a one-mistake copy), per kind of mistake."""
    rng = random.Random(seed)
    result = {}
    for kind in ("swap", *COUNTING_KINDS):
        pairs = []
        for p in prompts:
            digits = TASK.digits_of(p)
            bad = corrupt_as(digits, kind, rng)
            if bad is not None and bad != sorted(digits):
                pairs.append((p, " ".join(sorted(digits)), " ".join(bad)))
        good = rm_scores(reward, [p for p, _, _ in pairs], [g for _, g, _ in pairs])
        bad = rm_scores(reward, [p for p, _, _ in pairs], [b for _, _, b in pairs])
        result[kind] = {
            "pairs": len(pairs),
            "rm_accuracy": statistics.fmean(g > b for g, b in zip(good, bad, strict=True)),
            "rm_margin": statistics.fmean(g - b for g, b in zip(good, bad, strict=True)),
            "gold_margin": statistics.fmean(1.0 - TASK.score(p, b) for p, _, b in pairs),
        }
    return result


def rm_accuracy_on_own_mistakes(reward, prompts: list[str], answers: list[str]) -> dict[str, dict]:
    """P(RM prefers the correct answer over the policy's own wrong greedy answer), by kind of mistake."""
    result = {}
    for kind in ("counting", "ordering"):
        idx = [i for i, (p, a) in enumerate(zip(prompts, answers, strict=True)) if mistake(p, a) == kind]
        if not idx:
            result[kind] = {"pairs": 0}
            continue
        ps = [prompts[i] for i in idx]
        own = rm_scores(reward, ps, [answers[i] for i in idx])
        right = rm_scores(reward, ps, [TASK.correct_answer(TASK.digits_of(p)) for p in ps])
        result[kind] = {
            "pairs": len(idx),
            "rm_accuracy": statistics.fmean(r > o for r, o in zip(right, own, strict=True)),
            "rm_margin": statistics.fmean(r - o for r, o in zip(right, own, strict=True)),
        }
    return result


def evaluate(name, model, sft, tokenizer, reward, prompts, temperature, max_new_tokens, seed) -> dict:
    row: dict = {"policy": name}
    for decoding, t in ((GREEDY, 0.0), (SAMPLED, temperature)):
        s = sample(model, tokenizer, prompts, temperature=t, max_new_tokens=max_new_tokens, seed=seed)
        gold = [TASK.score(p, a) for p, a in zip(prompts, s.texts, strict=True)]
        kinds = Counter(mistake(p, a) for p, a in zip(prompts, s.texts, strict=True))
        row[decoding] = {
            "gold_score": statistics.fmean(gold),
            "exact": statistics.fmean(g == 1.0 for g in gold),
            "rm_score": statistics.fmean(rm_scores(reward, prompts, s.texts)),
            "counting_mistakes": kinds["counting"] / len(prompts),
            "ordering_mistakes": kinds["ordering"] / len(prompts),
            "counting_detail": dict(
                Counter(
                    counting_detail(p, a)
                    for p, a in zip(prompts, s.texts, strict=True)
                    if mistake(p, a) == "counting"
                )
            ),
        }
        if decoding == GREEDY:
            row[decoding]["rm_on_own_mistakes"] = rm_accuracy_on_own_mistakes(reward, prompts, s.texts)
            row["_greedy_texts"] = s.texts
        else:
            row["kl"] = kl_to_reference(model, sft, tokenizer, s, temperature)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--rm_only", action="store_true", help="only the RM's accuracy by kind of mistake")
    parser.add_argument("--updates", type=int, nargs="*", default=None, help="0 = SFT; default: SFT + all")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    run = Path(args.run)
    sft_dir = run / "sft" / "merged"
    ppo_dir = run / f"round_{args.round}" / "ppo"
    ppo_cfg = (
        json.loads((ppo_dir / "recipe_config.json").read_text())
        if (ppo_dir / "recipe_config.json").exists()
        else {}
    )
    temperature = float(ppo_cfg.get("temperature", 1.0))
    max_new_tokens = 16
    tokenizer = load_tokenizer(str(sft_dir))
    sft = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    reward = load_reward_model(run / f"round_{args.round}" / "reward")
    prompts = gold_prompts(args.prompts, TASK)

    report: dict = {"prompts": len(prompts), "temperature": temperature}
    report["rm_by_corruption"] = rm_accuracy_by_corruption(reward, prompts, seed=args.seed)
    print(json.dumps(report["rm_by_corruption"], indent=1), flush=True)
    if args.rm_only:
        return

    checkpoints = sorted(ppo_dir.glob("checkpoint-*/policy"), key=lambda p: int(p.parent.name.split("-")[1]))
    policies = [("sft", lambda: sft)] + [
        (
            f"ppo@{c.parent.name.split('-')[1]}",
            lambda c=c: (
                PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_dir), str(c))
                .merge_and_unload()
                .eval()
            ),
        )
        for c in checkpoints
    ]
    if args.updates is not None:
        keep = {"sft" if u == 0 else f"ppo@{u}" for u in args.updates}
        policies = [(n, load) for n, load in policies if n in keep]
    sft_texts = sample(sft, tokenizer, prompts, temperature=0.0, max_new_tokens=max_new_tokens).texts
    rows = []
    for name, load in policies:
        row = evaluate(name, load(), sft, tokenizer, reward, prompts, temperature, max_new_tokens, args.seed)
        rows.append(row)
        g, s = row[GREEDY], row[SAMPLED]
        print(
            f"{name:<8} KL {row.get('kl', 0):.3f} | greedy gold {g['gold_score']:.3f} exact {g['exact']:.3f} "
            f"RM {g['rm_score']:+.3f} count-err {g['counting_mistakes']:.3f} order-err {g['ordering_mistakes']:.3f}"
            f" | sampled gold {s['gold_score']:.3f} exact {s['exact']:.3f} RM {s['rm_score']:+.3f} "
            f"| RM right vs own counting mistake {g['rm_on_own_mistakes']['counting']}",
            flush=True,
        )
    # greedy answers that changed from SFT's: who is better by gold, and does the RM agree?
    for row in rows:
        texts = row.pop("_greedy_texts")
        if row["policy"] == "sft":
            continue
        changed = [i for i, (a, b) in enumerate(zip(sft_texts, texts, strict=True)) if a != b]
        gold_ppo = [TASK.score(prompts[i], texts[i]) for i in changed]
        gold_sft = [TASK.score(prompts[i], sft_texts[i]) for i in changed]
        rm_ppo = rm_scores(reward, [prompts[i] for i in changed], [texts[i] for i in changed])
        rm_sft = rm_scores(reward, [prompts[i] for i in changed], [sft_texts[i] for i in changed])
        decided = [k for k in range(len(changed)) if gold_ppo[k] != gold_sft[k]]
        row["greedy_vs_sft"] = {
            "changed": len(changed),
            "ppo_better_gold": sum(gold_ppo[k] > gold_sft[k] for k in decided),
            "ppo_worse_gold": sum(gold_ppo[k] < gold_sft[k] for k in decided),
            "rm_agrees_with_gold": statistics.fmean(
                (rm_ppo[k] > rm_sft[k]) == (gold_ppo[k] > gold_sft[k]) for k in decided
            )
            if decided
            else None,
            "rm_prefers_ppo_when_gold_prefers_sft": statistics.fmean(
                rm_ppo[k] > rm_sft[k] for k in decided if gold_ppo[k] < gold_sft[k]
            )
            if any(gold_ppo[k] < gold_sft[k] for k in decided)
            else None,
        }
        print(row["policy"], row["greedy_vs_sft"], flush=True)
    report["policies"] = rows
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
