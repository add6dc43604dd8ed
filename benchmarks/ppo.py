"""PPO speed benchmark: our PPOTrainer on the TRL 1.12 anchor's settings, with a time breakdown and peak memory.

Settings (defaults = `shared/anchors/trl112_ppo.py 1b lora`): random-weight Llama (1.1B), 64 prompts of exactly
128 tokens per update, answers forced to exactly 128 tokens, 4 PPO epochs of one minibatch of 64 (microbatch
16), LoRA r16 on all linear layers, bf16. Ours differs from TRL 1.12 by design: one frozen base with policy,
value and reward LoRA adapters (TRL: three models, the value model trained in full).

    python benchmarks/ppo.py --size 1b                      # the headline number (goal: <= 3.0 s / update)
    python benchmarks/ppo.py --size 7b --load_in_8bit --memory_cap_gib 24   # goal: fits in 24 GiB
    OMP_NUM_THREADS=1 python benchmarks/ppo.py --size tiny --updates 3 --prompt_len 16 --answer_len 16 --batch 8

Per update it reports (median of the updates after the first, as the anchor): wall seconds between
`on_step_end` callbacks (the anchor's measure), and where they go, from PPOTrainer's own CUDA-synchronised
`perf/*` logs: generation (`seconds_generate`), rollout scoring (`seconds_score`: policy / reference / value /
reward no-grad forwards), the PPO epochs (`seconds_ppo_epochs`), and the rest.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from common import (
    SIZES,
    SPEED_HEADER,
    apply_memory_cap,
    build_artifacts,
    default_dtype_name,
    default_work_dir,
    environment,
    markdown_table,
    median_after_first,
    on_gpu,
    peak_gib,
    random_prompts,
    reset_peak,
    speed_row,
    sync,
)
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback

from rlhf_hf.generation import encode_prompts
from rlhf_hf.modeling import load_tokenizer
from rlhf_hf.ppo.config import PPORecipeConfig
from rlhf_hf.ppo.roles import build_ppo_model
from rlhf_hf.ppo.trainer import PPOTrainer


class StepTimer(TrainerCallback):
    """Wall-clock stamps at train begin and every step end (CUDA-synchronised), as the anchor's `Timer`."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        sync()
        self.stamps = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs) -> None:
        sync()
        self.stamps.append(time.perf_counter())

    @property
    def intervals(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="1b")
    p.add_argument("--load_in_8bit", action="store_true", help="bitsandbytes 8-bit frozen base")
    p.add_argument("--load_in_4bit", action="store_true", help="bitsandbytes 4-bit (nf4) frozen base")
    p.add_argument(
        "--merge_adapter_for_generation",
        action="store_true",
        help="PPORecipeConfig.merge_adapter_for_generation (policy delta merged while sampling)",
    )
    p.add_argument(
        "--cache_implementation",
        default=None,
        help="PPORecipeConfig.cache_implementation: `static` = compiled decoding (first update compiles)",
    )
    p.add_argument("--updates", type=int, default=5, help="PPO updates; the first is warm-up")
    p.add_argument("--batch", type=int, default=64, help="prompts (episodes) per update")
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--answer_len", type=int, default=128)
    p.add_argument("--ppo_epochs", type=int, default=4)
    p.add_argument(
        "--micro_batch", type=int, default=None, help="per_device_train_batch_size (default 16; 4 for 7b/13b)"
    )
    p.add_argument(
        "--rollout_forward_batch",
        type=int,
        default=None,
        help="rollout_forward_batch_size (default: the whole batch; 16 for 7b/13b)",
    )
    p.add_argument(
        "--generation_batch",
        type=int,
        default=None,
        help="generation_batch_size: prompts per generate call (default: the whole batch; 16 for 7b/13b)",
    )
    p.add_argument("--critic", choices=["adapter", "head", "model"], default="adapter")
    p.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="checkpoint the decoder layers (needs --critic head or model)",
    )
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument(
        "--dtype", default=None, help="weights dtype (default bfloat16 on a GPU, float32 on a CPU)"
    )
    p.add_argument("--attn_implementation", default=None, help="e.g. sdpa, eager (default: transformers')")
    p.add_argument(
        "--no_force_answer_len",
        action="store_true",
        help="let answers end at eos (default: min_new_tokens = answer_len, as the anchor's fixed length)",
    )
    p.add_argument("--memory_cap_gib", type=float, default=None, help="cap CUDA memory for this process")
    p.add_argument("--work_dir", type=Path, default=None, help="artifacts cache (default $RLHF_BENCH_DIR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.add_argument("--no_header", action="store_true", help="print the table row without its header")
    args = p.parse_args(argv)
    if args.load_in_8bit and args.load_in_4bit:
        p.error("--load_in_8bit and --load_in_4bit are exclusive")
    big = args.size in ("7b", "13b")
    args.micro_batch = args.micro_batch or min(args.batch, 4 if big else 16)
    if args.batch % args.micro_batch:
        p.error(f"--batch {args.batch} must be a multiple of --micro_batch {args.micro_batch}")
    if args.rollout_forward_batch is None and big:
        args.rollout_forward_batch = 16
    if args.generation_batch is None and big:
        args.generation_batch = 16  # 7b: a 16 x 256-token KV cache is 2.1 GB instead of 8.6 GB for 64 rows
    args.dtype = args.dtype or default_dtype_name()
    args.work_dir = args.work_dir or default_work_dir()
    return args


def variant_name(args: argparse.Namespace) -> str:
    parts = [f"lora r{args.lora_r}", f"{args.critic} critic"]
    parts.append("8-bit base" if args.load_in_8bit else "4-bit base" if args.load_in_4bit else args.dtype)
    if args.merge_adapter_for_generation:
        parts.append("merged gen")
    if args.cache_implementation:
        parts.append(f"{args.cache_implementation} cache")
    if args.gradient_checkpointing:
        parts.append("grad ckpt")
    parts.append(f"mb{args.micro_batch}")
    if args.generation_batch:
        parts.append(f"gen batch {args.generation_batch}")
    return ", ".join(parts)


def make_config(args: argparse.Namespace, sft: Path, reward: Path, output_dir: Path) -> PPORecipeConfig:
    return PPORecipeConfig(
        model_name_or_path=str(sft),
        reward_model_path=str(reward),
        output_dir=str(output_dir),
        overwrite_output_dir=True,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        load_in_8bit=args.load_in_8bit,
        load_in_4bit=args.load_in_4bit,
        use_peft=True,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        critic=args.critic,
        **({"activation_checkpointing": True} if args.gradient_checkpointing else {}),
        max_prompt_length=args.prompt_len,
        max_new_tokens=args.answer_len,
        min_new_tokens=0 if args.no_force_answer_len else args.answer_len,  # every answer exactly answer_len
        temperature=1.0,
        merge_adapter_for_generation=args.merge_adapter_for_generation,
        cache_implementation=args.cache_implementation,
        rollout_forward_batch_size=args.rollout_forward_batch,
        generation_batch_size=args.generation_batch,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.batch // args.micro_batch,
        num_mini_batches=1,
        num_ppo_epochs=args.ppo_epochs,
        max_steps=args.updates,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        sample_every=0,
        eval_gold_prompts=0,
        merge=False,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not on_gpu(),
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) the artifacts, train `args.updates` PPO updates, return the measurements."""
    result: dict[str, Any] = {
        "system": "rlhf_hf PPOTrainer",
        "size": args.size,
        "variant": variant_name(args),
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "answer_len": args.answer_len,
        "ppo_epochs": args.ppo_epochs,
        "updates": args.updates,
        "memory_cap_gib": args.memory_cap_gib if on_gpu() else None,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "env": environment(),
    }
    artifacts = build_artifacts(args.size, args.work_dir, args.dtype, args.lora_r)
    result["build_artifacts_s"] = round(artifacts.build_seconds, 1)
    apply_memory_cap(args.memory_cap_gib)  # after the build: a 13B bf16 build alone is over 24 GiB

    tokenizer = load_tokenizer(str(artifacts.sft))
    vocab = SIZES[args.size]["vocab_size"]
    prompts = random_prompts(args.batch * args.updates, args.prompt_len, vocab, seed=args.seed + 1)
    width = encode_prompts(tokenizer, prompts[:4])["input_ids"].shape[1]
    if width != args.prompt_len:
        raise RuntimeError(f"prompts encode to {width} tokens, expected {args.prompt_len}")

    cfg = make_config(args, artifacts.sft, artifacts.reward, args.work_dir / "ppo_out")
    start = time.perf_counter()
    try:
        model = build_ppo_model(cfg, tokenizer.pad_token_id)
        timer = StepTimer()
        trainer = PPOTrainer(
            model=model,
            args=cfg,
            processing_class=tokenizer,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # the per-update log dicts; the result has what matters
        result["setup_s"] = round(time.perf_counter() - start, 1)
        reset_peak()
        trainer.train()
    except torch.cuda.OutOfMemoryError as error:
        result.update(peak_gib())
        result["error"] = "OOM: " + str(error).splitlines()[0][:200]
        return result
    result.update(peak_gib())

    logs = [h for h in trainer.state.log_history if "perf/seconds_per_update" in h]
    updates = timer.intervals
    generate = [h["perf/seconds_generate"] for h in logs]
    scoring = [h["perf/seconds_score"] for h in logs]  # the trainer's own synchronised breakdown
    epochs_s = [h["perf/seconds_ppo_epochs"] for h in logs]
    median = median_after_first(updates)
    result.update(
        update_s=[round(x, 3) for x in updates],
        median_update_s=round(median, 3),
        episodes_per_s=round(args.batch / median, 2),
        generate_s=round(median_after_first(generate), 3),
        scoring_s=round(median_after_first(scoring), 3),
        ppo_epochs_s=round(median_after_first(epochs_s), 3),
        generated_tokens_per_s=round(median_after_first([h["perf/generated_tokens_per_s"] for h in logs]), 1),
        answer_mean_length=logs[-1]["answer/mean_length"],
        answer_eos_fraction=logs[-1]["answer/eos_fraction"],
        logged_seconds_per_update=[round(h["perf/seconds_per_update"], 3) for h in logs],
    )
    # per update from the trainer's own breakdown, then the median (a difference of medians can go negative)
    other = [
        h["perf/seconds_per_update"]
        - h["perf/seconds_generate"]
        - h["perf/seconds_score"]
        - h["perf/seconds_ppo_epochs"]
        for h in logs
    ]
    result["other_s"] = round(median_after_first(other), 3)
    if not args.no_force_answer_len and result["answer_mean_length"] != args.answer_len:
        result["note"] = f"answers averaged {result['answer_mean_length']} tokens, not {args.answer_len}"
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except Exception as error:  # a failed configuration is a row too, so a sweep keeps going
        traceback.print_exc()
        result = {
            "system": "rlhf_hf PPOTrainer",
            "size": args.size,
            "variant": variant_name(args),
            "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}",
            "memory_cap_gib": args.memory_cap_gib,
        }
    if args.json:
        print(json.dumps(result), flush=True)
    table = markdown_table(SPEED_HEADER, [speed_row(result)])
    print(table.splitlines()[-1] if args.no_header else table, flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
