"""Where can a reward model rank? Gold-pair accuracy per prompt category, of one or more reward models on the
same K answers sampled from one policy (benchmarks/DIAGNOSIS.md, section 8).

    python benchmarks/reward_by_category.py --policy RUN/sft/merged --reward RUN/round_1/reward [OTHER_RM ...]

Only prompts whose K answers differ in gold score count (equal answers tie); every pair they order is scored.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from rlhf_hf.evaluation import gold_prompts
from rlhf_hf.modeling import load_pretrained, load_tokenizer
from rlhf_hf.reward.metrics import ranking_metrics
from rlhf_hf.reward.model import load_reward_model
from rlhf_hf.reward.sampling import drop_empty_answers, rank_with, sample_answers
from rlhf_hf.tasks import get_task
from rlhf_hf.tasks.base import SimulatedLabeller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--policy", required=True, help="the model whose answers are ranked (e.g. the SFT model)"
    )
    parser.add_argument("--reward", nargs="+", required=True, help="reward model dirs")
    parser.add_argument("--task", default="tiny-chat")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=999)
    args = parser.parse_args()

    task = get_task(args.task)
    tokenizer, policy = load_tokenizer(args.policy), load_pretrained(args.policy)
    rows = sample_answers(
        policy,
        tokenizer,
        gold_prompts(args.prompts, task),
        args.k,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    rows, _ = drop_empty_answers(rows)
    ranked = rank_with(SimulatedLabeller(task.score, noise=0.0), rows)
    informative = [r for r in ranked if len(set(r["ranks"])) > 1]
    by_category = defaultdict(list)
    for row in informative:
        by_category[task.category(row["prompt"])].append(row)

    print(f"{len(informative)} of {len(rows)} prompts have answers that differ in gold score")
    print(f"{'reward model':<40}{'all':>7}" + "".join(f"{c:>12}" for c in sorted(by_category)))
    for path in args.reward:
        model, rm_tokenizer, _ = load_reward_model(path)
        accuracy = {"all": ranking_metrics(model, rm_tokenizer, informative)["pairwise_accuracy"]}
        for category, part in sorted(by_category.items()):
            accuracy[category] = ranking_metrics(model, rm_tokenizer, part)["pairwise_accuracy"]
        print(
            f"{path[-40:]:<40}"
            + "".join(f"{v:>7.3f}" if k == "all" else f"{v:>12.3f}" for k, v in accuracy.items())
        )
        print(
            json.dumps(
                {"reward": path, "n": {c: len(p) for c, p in by_category.items()}, "accuracy": accuracy}
            )
        )


if __name__ == "__main__":
    main()
