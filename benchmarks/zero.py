"""Each stage plain and under DeepSpeed ZeRO-2 / ZeRO-3, through the recipes and `accelerate launch`: do they agree?

The tiny default (SFT -> reward model -> PPO, a few steps each), once as a plain run (`python recipes/<stage>.py`)
and once per ZeRO config (`accelerate launch --config_file recipes/accelerate/zeroN.yaml --num_processes N`), with
the same global batch. The ZeRO runs of the RM and PPO start from the plain SFT / RM outputs, so every stage is
compared on its own. Prints one table: final loss of each run, and the largest adapter difference to the plain run
relative to the adapter's own largest entry (on a GPU in bf16 the runs agree to rounding, not bit for bit: DeepSpeed
keeps fp32 master weights and reduces gradients in its own order).

    python benchmarks/zero.py                      # GPU: 1 process per ZeRO run
    python benchmarks/zero.py --cpu --steps 3      # CPU (DeepSpeed's CPU accelerator): RESULTS.md's CPU table
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", nargs="+", default=["sft", "reward", "ppo"])
    parser.add_argument("--zero", nargs="+", default=["zero2", "zero3"])
    parser.add_argument("--processes", type=int, default=1, help="processes per ZeRO run")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps (PPO: updates) per run")
    parser.add_argument("--cpu", action="store_true", help="CPU processes (gloo), fp32")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlhf_hf_zero"))
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_flags(stage: str, args: argparse.Namespace, inputs: dict[str, Path]) -> list[str]:
    """The stage's tiny config, shortened; the per-device batch is divided by the process count at launch."""
    common = ["--max_steps", str(args.steps), "--report_to", "none", "--save_strategy", "no"]
    if stage == "sft":
        return ["--config", str(CONFIGS / "sft_tiny.yaml"), *common, "--eval_gold_prompts", "50"]
    if stage == "reward":
        return [
            "--config",
            str(CONFIGS / "reward_tiny.yaml"),
            "--model_name_or_path",
            str(inputs["sft"]),
            "--max_prompts",
            "256",
            "--dataset_test_split",
            "none",
            "--eval_fraction",
            "0",
            "--eval_gold_prompts",
            "50",
            *common,
        ]
    return [  # ppo: fixed answer lengths, so the per-token averages weigh alike however the batch is split
        "--config",
        str(CONFIGS / "ppo_tiny.yaml"),
        "--model_name_or_path",
        str(inputs["sft"]),
        "--reward_model_path",
        str(inputs["reward"]),
        "--min_new_tokens",
        "8",
        "--max_new_tokens",
        "8",
        "--num_mini_batches",
        "1",
        "--eval_gold_prompts",
        "50",
        "--merge",
        "false",
        *common[:4],
    ]


BATCH = {"sft": 32, "reward": 16, "ppo": 32}  # global rows per optimizer step, as in the tiny configs


def run(stage: str, mode: str, args: argparse.Namespace, inputs: dict[str, Path]) -> dict:
    out = args.out / f"{stage}-{mode}"
    processes = 1 if mode == "plain" else args.processes
    flags = [
        *stage_flags(stage, args, inputs),
        "--per_device_train_batch_size",
        str(BATCH[stage] // processes),
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "true",
    ]
    if args.cpu:
        flags += ["--use_cpu", "true"]
    script = str(REPO / "recipes" / f"{stage}.py")
    if mode == "plain":
        cmd = [sys.executable, script, *flags]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(REPO / "recipes" / "accelerate" / f"{mode}.yaml"),
            "--num_processes",
            str(processes),
            "--main_process_port",
            str(free_port()),
            *(["--mixed_precision", "no"] if args.cpu else []),
            script,
            *flags,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (args.out / f"{stage}-{mode}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:120] if proc.stderr.strip() else "failed"}
    metrics = json.loads((out / "metrics.json").read_text())
    adapter_dir = out / "policy" if stage == "ppo" else out
    return {
        "seconds": seconds,
        "loss": metrics.get("train_loss", metrics.get("score_last")),
        "gold": metrics.get("gold_score", metrics.get("gold_pair_accuracy")),
        "adapter": load_file(str(adapter_dir / "adapter_model.safetensors")),
        "out": out,
    }


def relative_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    scale = max(t.abs().max().item() for t in a.values())
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a) / max(scale, 1e-12)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Path] = {}
    rows = []
    for stage in args.stages:
        plain = run(stage, "plain", args, inputs)
        if "error" in plain:
            raise SystemExit(f"plain {stage} failed: {plain['error']} (log in {args.out})")
        row = {"stage": stage, "plain": plain}
        for mode in args.zero:
            row[mode] = run(stage, mode, args, inputs)
        rows.append(row)
        if stage == "sft":
            inputs["sft"] = plain["out"] / "merged"
        if stage == "reward":
            inputs["reward"] = plain["out"]

    device = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    print(
        f"\n{datetime.date.today().isoformat()}, {device}, {args.processes} process(es) per ZeRO run, "
        f"{args.steps} steps; loss = train loss (PPO: last score), gold = gold score (RM: gold-pair accuracy)"
    )
    header = "| stage | plain loss / gold / s |"
    header += "".join(f" {m} loss / gold / s | {m} max adapter diff (rel.) |" for m in args.zero)
    print(header)
    print("|---|---|" + "---|---|" * len(args.zero))

    def cell(r: dict) -> str:
        if "error" in r:
            return f"error: {r['error']}"
        gold = "n/a" if r["gold"] is None else f"{r['gold']:.3f}"
        return f"{r['loss']:.4f} / {gold} / {r['seconds']:.0f}"

    for row in rows:
        line = f"| {row['stage']} | {cell(row['plain'])} |"
        for mode in args.zero:
            r = row[mode]
            diff = "" if "error" in r else f"{relative_diff(row['plain']['adapter'], r['adapter']):.1e}"
            line += f" {cell(r)} | {diff} |"
        print(line)


if __name__ == "__main__":
    main()
