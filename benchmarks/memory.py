"""Peak GPU memory of the three stages (SFT, RM, PPO) on random-weight Llama models with a k-bit base + LoRA.

Each (stage, size) runs in its own process under a CUDA memory cap (default 24 GiB), so peaks are clean and
an out-of-memory stops one cell only. Our code paths throughout: SFT = `SFTRecipe`, RM = `RewardRecipe` (each
on a small synthetic jsonl written here), PPO = `benchmarks/ppo.py` (`build_ppo_model` + `PPOTrainer`, one
update of one PPO epoch at the speed benchmark's shapes: the peak of 4 epochs is the same).

    python benchmarks/memory.py --size 1b 7b 13b             # 8-bit base (default), 24 GiB cap
    python benchmarks/memory.py --size 7b --bits 4 --stages ppo
    OMP_NUM_THREADS=1 python benchmarks/memory.py --size tiny   # CPU smoke run: memory reads "n/a (CPU)"

Shapes: SFT rows of `--seq_len` tokens, RM pairs of `--seq_len` tokens per answer, `--micro_batch` rows per
step, gradient checkpointing on (SFT, RM); PPO as `ppo.py` (batch 64, 128 + 128 tokens, microbatch 4, rollout
forwards of 16, adapter critic) unless `--ppo_args` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from common import (
    REPO,
    SIZES,
    apply_memory_cap,
    build_artifacts,
    default_dtype_name,
    default_work_dir,
    environment,
    markdown_table,
    on_gpu,
    peak_gib,
    random_texts,
    reset_peak,
)

STAGES = ("sft", "rm", "ppo")
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", nargs="+", choices=list(SIZES), default=["1b", "7b", "13b"])
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    p.add_argument("--bits", type=int, choices=[4, 8, 16], default=8, help="base weights: 8/4-bit or bf16")
    p.add_argument("--memory_cap_gib", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps of SFT and RM")
    p.add_argument("--seq_len", type=int, default=512, help="tokens per SFT row / per RM answer")
    p.add_argument("--micro_batch", type=int, default=4, help="rows (SFT) or pairs (RM) per step")
    p.add_argument("--lora_r", type=int, default=16)
    p.add_argument("--ppo_args", default="", help="extra arguments for benchmarks/ppo.py, one string")
    p.add_argument("--work_dir", type=Path, default=None, help="artifacts cache (default $RLHF_BENCH_DIR)")
    p.add_argument("--json", action="store_true", help="also print each cell as a JSON line")
    p.add_argument("--one", choices=list(STAGES), default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    args.work_dir = args.work_dir or default_work_dir()
    return args


def is_tiny(size: str) -> bool:
    return size == "tiny"


def stage_shapes(args: argparse.Namespace, size: str) -> tuple[int, int]:
    """(seq_len, rows): short on the CPU smoke size."""
    seq_len = 32 if is_tiny(size) else args.seq_len
    return seq_len, args.micro_batch * args.steps


def recipe_common(args: argparse.Namespace, sft_dir: Path, data: Path, output_dir: Path) -> dict[str, Any]:
    """Config fields SFT and RM share: the k-bit base, LoRA, checkpointing, a few steps, nothing saved midway."""
    gpu = on_gpu()
    return dict(
        model_name_or_path=str(sft_dir),
        dataset_name=str(data),
        dataset_test_split=None,
        eval_fraction=0.0,
        output_dir=str(output_dir),
        overwrite_output_dir=True,
        dtype=default_dtype_name(),
        load_in_8bit=args.bits == 8,
        load_in_4bit=args.bits == 4,
        use_peft=True,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=1e-4,
        activation_checkpointing=True,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        merge=False,
        eval_gold_prompts=0,
        use_cpu=not gpu,
        seed=0,
        # TRL casts a k-bit model's trainable weights (LoRA and the RM's `score`) to bf16, which only works under
        # bf16 autocast: on by default on a GPU, asked for here on a CPU.
        **({"bf16": True} if args.bits in (4, 8) and not gpu else {}),
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_sft(args: argparse.Namespace, size: str, sft_dir: Path) -> dict[str, Any]:
    from rlhf_hf.sft import SFTRecipe, SFTRecipeConfig

    seq_len, rows = stage_shapes(args, size)
    vocab = SIZES[size]["vocab_size"]
    half = seq_len // 2
    prompts = random_texts(rows, half, vocab, seed=3)
    completions = random_texts(rows, seq_len - half - 1, vocab, seed=4)  # + eos = seq_len tokens
    data = write_jsonl(
        args.work_dir / "data" / f"sft-{size}-{seq_len}.jsonl",
        [{"prompt": p, "completion": " " + c} for p, c in zip(prompts, completions, strict=True)],
    )
    fields = recipe_common(args, sft_dir, data, args.work_dir / "out" / f"sft-{size}")
    fields["max_length"] = seq_len
    result = SFTRecipe(SFTRecipeConfig(**fields)).run()
    return {"train_loss": result.metrics.get("train_loss")}


def run_rm(args: argparse.Namespace, size: str, sft_dir: Path) -> dict[str, Any]:
    from rlhf_hf.reward.recipe import RewardRecipe, RewardRecipeConfig

    seq_len, rows = stage_shapes(args, size)
    vocab = SIZES[size]["vocab_size"]
    half = seq_len // 2
    prompts = random_texts(rows, half, vocab, seed=5)
    chosen = random_texts(rows, seq_len - half - 1, vocab, seed=6)
    rejected = random_texts(rows, seq_len - half - 1, vocab, seed=7)
    data = write_jsonl(
        args.work_dir / "data" / f"rm-{size}-{seq_len}.jsonl",
        [
            {"prompt": p, "chosen": " " + c, "rejected": " " + r}
            for p, c, r in zip(prompts, chosen, rejected, strict=True)
        ],
    )
    fields = recipe_common(args, sft_dir, data, args.work_dir / "out" / f"rm-{size}")
    fields["max_length"] = seq_len + 8  # room for whatever the chat template adds
    result = RewardRecipe(RewardRecipeConfig(**fields)).run()
    return {"train_loss": result.metrics.get("train_loss")}


def run_one(args: argparse.Namespace, size: str) -> dict[str, Any]:
    """Child process: one (SFT or RM) stage on one size; returns its cell."""
    stage = args.one
    seq_len, rows = stage_shapes(args, size)
    cell: dict[str, Any] = {"stage": stage, "size": size, "bits": args.bits, "seq_len": seq_len}
    cell["memory_cap_gib"] = args.memory_cap_gib if on_gpu() else None
    artifacts = build_artifacts(size, args.work_dir, default_dtype_name(), args.lora_r)
    apply_memory_cap(args.memory_cap_gib)
    reset_peak()
    start = time.perf_counter()
    try:
        runner = run_sft if stage == "sft" else run_rm
        cell.update(runner(args, size, artifacts.sft))
    except torch.cuda.OutOfMemoryError as error:
        cell["error"] = "OOM: " + str(error).splitlines()[0][:200]
    cell["seconds"] = round(time.perf_counter() - start, 1)
    cell.update(peak_gib())
    cell["env"] = environment()
    return cell


def ppo_command(args: argparse.Namespace, size: str) -> list[str]:
    cmd = [sys.executable, str(HERE / "ppo.py"), "--size", size, "--updates", "1", "--ppo_epochs", "1"]
    cmd += ["--memory_cap_gib", str(args.memory_cap_gib), "--lora_r", str(args.lora_r), "--json"]
    cmd += ["--work_dir", str(args.work_dir)]
    if args.bits in (4, 8):
        cmd.append(f"--load_in_{args.bits}bit")
    if is_tiny(size):
        cmd += ["--prompt_len", "16", "--answer_len", "16", "--batch", "8"]
    return cmd + shlex.split(args.ppo_args)


def child(args: argparse.Namespace, stage: str, size: str) -> dict[str, Any]:
    """Run one cell in a fresh process; its last JSON line is the cell."""
    if stage == "ppo":
        cmd = ppo_command(args, size)
    else:
        cmd = [sys.executable, str(HERE / "memory.py"), "--one", stage, "--size", size, "--json"]
        cmd += ["--bits", str(args.bits), "--memory_cap_gib", str(args.memory_cap_gib)]
        cmd += ["--steps", str(args.steps), "--seq_len", str(args.seq_len)]
        cmd += ["--micro_batch", str(args.micro_batch), "--lora_r", str(args.lora_r)]
        cmd += ["--work_dir", str(args.work_dir)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        cell = json.loads(lines[-1])
    else:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        cell = {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
    if proc.returncode != 0 and "error" not in cell:
        cell["error"] = f"exit {proc.returncode}"
    if "error" in cell:
        sys.stderr.write(proc.stderr[-4000:])
    cell.update(stage=stage, size=size, wall_s=round(time.perf_counter() - start, 1))
    return cell


def cell_text(cell: dict[str, Any], cap: float) -> str:
    if "error" in cell:
        return "OOM" if cell["error"].startswith("OOM") else "error: " + cell["error"][:80]
    peak = cell.get("peak_alloc_gib")
    if peak is None:
        return "n/a (CPU)"
    return f"{peak:.1f} ({'fits' if peak <= cap else 'over'})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:  # child: exactly one stage and size
        try:
            cell = run_one(args, args.size[0])
        except Exception as error:
            traceback.print_exc()
            cell = {
                "stage": args.one,
                "size": args.size[0],
                "error": f"{type(error).__name__}: {error}"[:300],
            }
        print(json.dumps(cell), flush=True)
        return 1 if "error" in cell else 0

    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for size in args.size:
        for stage in args.stages:
            cell = child(args, stage, size)
            cells[stage, size] = cell
            if args.json:
                print(json.dumps({"kind": "memory", "bits": args.bits, **cell}), flush=True)
            print(
                f"[memory] {stage} {size}: {cell_text(cell, args.memory_cap_gib)} in {cell['wall_s']} s",
                flush=True,
            )
    base = {8: "8-bit", 4: "4-bit", 16: "bf16"}[args.bits]
    header = [f"stage ({base} base + LoRA r{args.lora_r})"] + [
        f"{s}: peak GiB (cap {args.memory_cap_gib:g})" for s in args.size
    ]
    rows = [
        [stage] + [cell_text(cells[stage, s], args.memory_cap_gib) for s in args.size]
        for stage in args.stages
    ]
    print(markdown_table(header, rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
