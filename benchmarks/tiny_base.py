"""Can a tiny base do the chat task's list operations? Pretrain one with given settings, time it, and decode
corpus-form lines greedily (#12, `benchmarks/DIAGNOSIS.md` sections 1, 5 and 7).

The chat task's SFT and PPO can only reinforce what the base can already do (reach): this measures it before any
of the recipe runs. Settings override the task's `tasks/tiny/model.py` `BASE_SETTINGS` (model config, pretraining)
for this process only; the cached `rlhf-hf/tiny-chat` base is not touched.

    OMP_NUM_THREADS=2 python benchmarks/tiny_base.py --out /tmp/base  # the shipped base's settings
    OMP_NUM_THREADS=2 python benchmarks/tiny_base.py --out /tmp/packed \
        --pretrain '{"pack_length": 128, "batch_size": 10, "steps": 2100, "n_lines": 60000}'

Prints one JSON line: seconds, parameters and, per operation, greedy exact rate on 100 lines (all / long lists,
i.e. more items than the demonstrator's `attention_span`).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import common  # noqa: F401  (puts the repo on sys.path)
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf_hf.tasks import get_task
from rlhf_hf.tasks.chat import apply, render
from rlhf_hf.tasks.tiny import model as tiny

# How the corpus writes each operation's result after a list ("my numbers 3 1 4 reversed : 4 1 3 .").
CORPUS_WORDS = {"sort": "sorted", "reverse": "reversed", "dedup": "without repeats", "count": "counted"}


def corpus_line_accuracy(
    model, tokenizer, task, n: int = 100, seed: int = 7
) -> dict[str, tuple[float, float]]:
    """Greedy exact rate per operation on `n` random lists written as corpus lines: (all lists, long lists)."""
    rng = random.Random(seed)
    result = {}
    for op, word in CORPUS_WORDS.items():
        lists = [
            [rng.choice("0123456789") for _ in range(rng.randint(task.min_items, task.max_items))]
            for _ in range(n)
        ]
        prompts = [f"<bos> my numbers {' '.join(items)} {word} :" for items in lists]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        right = [
            t.split(" .")[0].strip() == render(apply(op, items))
            for t, items in zip(texts, lists, strict=True)
        ]
        long = [r for r, items in zip(right, lists, strict=True) if len(items) > task.attention_span]
        result[op] = (round(sum(right) / n, 2), round(sum(long) / max(len(long), 1), 2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where the base is written")
    parser.add_argument("--config", default="{}", help="JSON overriding the base's model config")
    parser.add_argument("--pretrain", default="{}", help="JSON overriding its pretraining settings")
    args = parser.parse_args()
    task = get_task("tiny-chat")
    config, settings = tiny.base_settings(task)
    tiny.BASE_SETTINGS[task.name] = (
        {**config, **json.loads(args.config)},
        {**settings, **json.loads(args.pretrain)},
    )
    start = time.time()
    tiny.pretrain_tiny_base(args.out, task)
    seconds = time.time() - start
    model = AutoModelForCausalLM.from_pretrained(args.out).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.out)
    print(
        json.dumps(
            {
                "settings": tiny.BASE_SETTINGS[task.name],
                "seconds": round(seconds),
                "threads": torch.get_num_threads(),
                "params": sum(p.numel() for p in model.parameters()),
                "greedy exact on corpus lines (all, long)": corpus_line_accuracy(model, tokenizer, task),
            }
        )
    )


if __name__ == "__main__":
    main()
