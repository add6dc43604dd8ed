"""Ranked reward training (one forward per answer) vs TRL's pairwise `RewardTrainer` on the same comparisons.

Both train one epoch on the same ranked data: K answers per prompt sampled from the SFT model and ranked by the
simulated labeller. TRL gets it expanded to all C(K, 2) (chosen, rejected) pairs, with a batch size that gives
the same number of prompts per optimiser step (hence the same number of steps). Sampling is excluded from the
timings; gold accuracy is on held-out prompts whose pairs are ordered by the noiseless judge.

    python benchmarks/reward.py --sft runs/sft/merged                    # CPU, tiny model, K=4 and K=8
    python benchmarks/reward.py --sft my-sft-model --device cuda --prompts 4000 --prompts-per-step 32
"""

from __future__ import annotations

import argparse
import datetime
import random
import time
from typing import Any

import torch
from datasets import Dataset
from peft import TaskType
from torch.utils.data import SequentialSampler
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed
from trl import ModelConfig, RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import suppress_seqcls_warning

from rlhf_hf.data import load_split
from rlhf_hf.evaluation import gold_prompts
from rlhf_hf.modeling import load_tokenizer, lora_config
from rlhf_hf.reward.data import pairs_from_ranks
from rlhf_hf.reward.metrics import ranking_metrics
from rlhf_hf.reward.model import conversation
from rlhf_hf.reward.sampling import drop_empty_answers, rank_with, sample_answers
from rlhf_hf.reward.trainer import RankedRewardTrainer, prepare_ranked
from rlhf_hf.tasks import get_task

TASK = get_task("tiny-sort")  # its prompts and gold judge rank the answers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sft", required=True, help="SFT model dir (e.g. runs/sft/merged)")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--prompts", type=int, default=1000, help="training prompts")
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--gold-prompts", type=int, default=200)
    parser.add_argument(
        "--lr",
        type=float,
        nargs="+",
        default=[1e-3],
        help="learning rates to try, each method reported at every one and at its best",
    )
    parser.add_argument(
        "--ours-epochs", type=int, default=1, help="epochs for ours (e.g. 3 = TRL's compute at K=4)"
    )
    parser.add_argument(
        "--trl-epochs", type=int, default=1, help="epochs for TRL (> 1: does the pairwise run overfit?)"
    )
    parser.add_argument(
        "--trl-order",
        choices=["shuffled", "grouped"],
        default="shuffled",
        help="grouped (a diagnostic): TRL reads the pairs prompt by prompt, so each of its steps holds the same "
        "~prompts-per-step prompts as ours instead of pairs shuffled across the whole dataset",
    )
    parser.add_argument("--full", action="store_true", help="train all weights instead of LoRA")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def sampled(policy, tokenizer, prompts: list, k: int, seed: int, labeller) -> list[dict]:
    rows = sample_answers(policy, tokenizer, prompts, k, max_new_tokens=16, seed=seed)
    return rank_with(labeller, drop_empty_answers(rows)[0])


def as_pairs(rows: list[dict]) -> Dataset:
    """TRL's explicit-prompt conversational preference format: one row per (winner, loser) pair."""
    pairs = [
        {
            "prompt": conversation(row["prompt"], row["responses"][w])[:-1],
            "chosen": conversation(row["prompt"], row["responses"][w])[-1:],
            "rejected": conversation(row["prompt"], row["responses"][lo])[-1:],
        }
        for row in rows
        for w, lo in pairs_from_ranks(row["ranks"])
    ]
    return Dataset.from_list(pairs)


class GroupedRewardTrainer(RewardTrainer):
    """TRL's pairwise trainer reading its pairs in dataset order (the pairs of one prompt stay together)."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> SequentialSampler:
        return SequentialSampler(self.train_dataset)


def train_config(args: argparse.Namespace, batch_size: int, lr: float, epochs: int = 1) -> RewardConfig:
    cuda = args.device.startswith("cuda")
    return RewardConfig(
        output_dir="/tmp/rlhf_hf_bench_reward",
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=5,
        max_length=args.max_length,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10_000,
        seed=args.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
    )


def fresh_model(args: argparse.Namespace, pad_token_id: int):
    set_seed(args.seed)  # the same score-head init for both trainers
    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(args.sft, num_labels=1)
    model.config.pad_token_id = pad_token_id
    return model


def run_one(
    trainer_class: type[RewardTrainer],
    args,
    tokenizer,
    train: Dataset,
    batch_size: int,
    gold: list[dict],
    lr: float,
    epochs: int = 1,
    **kw,
) -> dict[str, Any]:
    peft = lora_config(ModelConfig(use_peft=not args.full, lora_r=16, lora_alpha=32), TaskType.SEQ_CLS)
    trainer = trainer_class(
        model=fresh_model(args, tokenizer.pad_token_id),
        args=train_config(args, batch_size, lr, epochs),
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft,
        **kw,
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    metrics = ranking_metrics(trainer.model, tokenizer, gold, batch_size=256)
    return {
        "seconds": seconds,
        "steps": trainer.state.global_step,
        "gold": metrics["pairwise_accuracy"],
        "tau": metrics["kendall_tau"],
        "lr": lr,
    }


def main() -> None:
    args = parse_args()
    tokenizer = load_tokenizer(args.sft)
    policy = AutoModelForCausalLM.from_pretrained(args.sft).to(args.device)
    labeller = TASK.labeller(noise=0.05, seed=args.seed)
    prompts = load_split("rlhf-hf/tiny-sort-prompts", "train")["prompt"][: args.prompts]
    gold = sampled(
        policy,
        tokenizer,
        gold_prompts(args.gold_prompts, TASK),
        4,
        args.seed + 2,
        TASK.labeller(noise=0.0),
    )
    results = []
    for k in args.k:
        rows = sampled(policy, tokenizer, prompts, k, args.seed, labeller)
        ranked = prepare_ranked(rows, tokenizer, max_length=args.max_length)
        rows = list(ranked.rows)
        if args.trl_order == "grouped":
            random.Random(args.seed).shuffle(rows)  # a random prompt order, each prompt's pairs consecutive
        pairs = as_pairs(rows)
        trl_class = GroupedRewardTrainer if args.trl_order == "grouped" else RewardTrainer
        answers = sum(len(r["responses"]) for r in ranked.rows)
        pairs_per_step = max(1, round(args.prompts_per_step * len(pairs) / len(ranked.rows)))
        for lr in args.lr:
            ours = run_one(
                RankedRewardTrainer,
                args,
                tokenizer,
                ranked.dataset,
                args.prompts_per_step,
                gold,
                lr,
                args.ours_epochs,
            )
            trl = run_one(trl_class, args, tokenizer, pairs, pairs_per_step, gold, lr, args.trl_epochs)
            results.append((k, str(lr), answers, len(pairs), ours, trl))
        if len(args.lr) > 1:  # each method at its own best learning rate
            mine = [r for r in results if r[0] == k]
            best_ours = max((r[4] for r in mine), key=lambda m: m["gold"])
            best_trl = max((r[5] for r in mine), key=lambda m: m["gold"])
            label = f"best: {best_ours['lr']} / {best_trl['lr']}"
            results.append((k, label, answers, len(pairs), best_ours, best_trl))

    when = datetime.date.today().isoformat()
    print(
        f"\n{when}, device={args.device}, {args.prompts} prompts, {args.prompts_per_step} prompts/step, "
        f"epochs ours={args.ours_epochs}, TRL={args.trl_epochs}, TRL pair order: {args.trl_order}, seed {args.seed}"
    )
    print(
        "| K | lr (ours / TRL) | forwards/epoch ours / TRL | steps ours / TRL | seconds ours | seconds TRL | speed-up "
        "| gold acc ours | gold acc TRL | gold tau ours | gold tau TRL |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, lr, answers, n_pairs, ours, trl in results:
        print(
            f"| {k} | {lr} | {answers} / {2 * n_pairs} | {ours['steps']} / {trl['steps']} "
            f"| {ours['seconds']:.1f} | {trl['seconds']:.1f} | {trl['seconds'] / ours['seconds']:.2f}x "
            f"| {ours['gold']:.3f} | {trl['gold']:.3f} | {ours['tau']:.3f} | {trl['tau']:.3f} |"
        )


if __name__ == "__main__":
    main()
