"""Evaluating a pipeline run: SFT vs each PPO policy, the over-optimisation curve, training curves, summary.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .data import load_split
from .evaluation import compare_policies, gold_prompts, sample
from .modeling import load_pretrained, load_tokenizer
from .pipeline_config import PipelineConfig
from .reward.metrics import ranking_metrics
from .reward.model import load_reward_model, normalize
from .reward.model import score as rm_score
from .tasks import Task, get_task

logger = logging.getLogger(__name__)


def _pyplot():
    """matplotlib's pyplot on the file-only backend (works on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _policy_dirs(run_dir: Path, rounds: int) -> dict[str, Path]:
    """This run's PPO policies, from its config (a folder left by an earlier, longer run is not one of them)."""
    return {f"ppo_round_{r}": run_dir / f"round_{r}" / "ppo" / "merged" for r in range(1, rounds + 1)}


def evaluate_run(cfg: PipelineConfig, run_dir: str | Path, sft_model: str) -> dict[str, Any]:
    """Compare SFT and every round's PPO policy on held-out prompts; draw the curves; return the summary.

    With the config's task: its held-out prompts and gold judge; without one, the prompts dataset's test split and
    RM-only numbers (no gold keys in the summary).
    """
    run = Path(run_dir)
    task = get_task(cfg.task)
    out = run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(sft_model)
    sft = load_pretrained(sft_model)
    policies = {"sft": sft} | {n: load_pretrained(p) for n, p in _policy_dirs(run, cfg.rounds).items()}
    last = list(policies)[-1]
    reward = load_reward_model(run / f"round_{cfg.rounds}" / "reward")
    if task is not None:
        prompts = gold_prompts(cfg.eval_prompts, task)
    else:
        prompts = load_split(cfg.prompts_dataset, "test")["prompt"][: cfg.eval_prompts]
    kwargs = dict(temperature=cfg.sample_temperature, max_new_tokens=cfg.sample_max_new_tokens, seed=cfg.seed)
    table = compare_policies(policies, sft, tokenizer, reward, prompts, task=task, **kwargs)

    ppo_dir = run / f"round_{cfg.rounds}" / "ppo"
    start = table[list(policies)[-2]]  # the last round started from the policy before it (SFT in round 1)
    curve = (
        overoptimisation_curve(ppo_dir, sft_model, tokenizer, reward, prompts, kwargs, start, task)
        if cfg.eval_every_checkpoint and task is not None
        else []
    )
    plot_overoptimisation(curve, out / "overoptimisation.png")
    plot_training(run, out / "training_curves.png")

    summary: dict[str, Any] = {}
    if task is not None:
        summary = {
            "gold_score_sft": table["sft"]["gold_score"],
            "gold_score_ppo": table[last]["gold_score"],
            "gold_exact_sft": table["sft"]["gold_exact"],
            "gold_exact_ppo": table[last]["gold_exact"],
            "rm_accuracy": gold_pair_accuracy(sft, tokenizer, reward, prompts, cfg, task),
            "win_rate_vs_sft": table[last]["win_rate_gold"],
        }
    summary |= {
        "win_rate_vs_sft_rm": table[last]["win_rate_rm"],
        "kl": table[last]["kl"],
        "policies": table,
        "overoptimisation": curve,
    }
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
    return summary


def gold_pair_accuracy(model, tokenizer, reward, prompts, cfg, task: Task) -> float:
    """RM accuracy on held-out pairs ordered by the noiseless gold judge (K answers sampled from `model`)."""
    from .reward.sampling import drop_empty_answers, rank_with, sample_answers

    rows = sample_answers(
        model,
        tokenizer,
        prompts,
        cfg.sample_k,
        temperature=cfg.sample_temperature,
        max_new_tokens=cfg.sample_max_new_tokens,
        seed=cfg.seed + 999,
    )
    rows, _ = drop_empty_answers(rows)
    rows = [r for r in rank_with(task.labeller(noise=0.0), rows) if len(set(r["ranks"])) > 1]
    rm_model, rm_tokenizer, _ = reward
    return ranking_metrics(rm_model, rm_tokenizer, rows)["pairwise_accuracy"]


def overoptimisation_curve(
    ppo_dir: Path, sft_model: str, tokenizer, reward, prompts, kwargs, start: dict[str, float], task: Task
) -> list[dict]:
    """Gold and proxy (RM) score of the policy at every PPO checkpoint: the proxy may keep rising after gold
    stops (Goodhart); the gap is what the KL penalty is for. Update 0 is `start`, the starting policy's row of
    `compare_policies` (same prompts, same sampling)."""
    rm_model, rm_tokenizer, stats = reward
    checkpoints = sorted(ppo_dir.glob("checkpoint-*/policy"), key=lambda p: int(p.parent.name.split("-")[1]))
    curve = [{"update": 0, "gold_score": start["gold_score"], "rm_score": start["rm_score"]}]
    for adapter in checkpoints:  # LoRA adapters on the SFT model, the reference of every round
        s = sample(load_pretrained(sft_model, adapter), tokenizer, prompts, **kwargs)
        raw = rm_score(rm_model, rm_tokenizer, s.prompts, s.texts)
        curve.append(
            {
                "update": int(adapter.parent.name.split("-")[1]),
                "gold_score": sum(task.score(p, a) for p, a in zip(s.prompts, s.texts, strict=True))
                / len(s.texts),
                "rm_score": sum(normalize(r, stats) for r in raw) / len(raw),
            }
        )
    return curve


def plot_overoptimisation(curve: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, gold_ax = plt.subplots(figsize=(6, 4))
    if curve:
        x = [c["update"] for c in curve]
        gold_ax.plot(x, [c["gold_score"] for c in curve], "o-", color="tab:green", label="gold score")
        rm_ax = gold_ax.twinx()
        rm_ax.plot(x, [c["rm_score"] for c in curve], "s--", color="tab:blue", label="RM score (normalised)")
        rm_ax.set_ylabel("RM score (proxy)", color="tab:blue")
    gold_ax.set_xlabel("PPO update")
    gold_ax.set_ylabel("gold score", color="tab:green")
    gold_ax.set_title("Over-optimisation: gold vs proxy reward")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training(run_dir: Path, path: Path) -> None:
    keys = [("objective/scores", "RM score"), ("objective/kl", "KL to SFT"), ("objective/entropy", "entropy")]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 3.5))
    for history_file in sorted(run_dir.glob("round_*/ppo/log_history.json")):
        history = [h for h in json.loads(history_file.read_text()) if "objective/scores" in h]
        label = history_file.parent.parent.name
        for ax, (key, title) in zip(axes, keys, strict=True):
            ax.plot([h["step"] for h in history], [h[key] for h in history], label=label)
            ax.set_title(title)
            ax.set_xlabel("PPO update")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(table: dict[str, dict[str, float]]) -> None:
    cols = [
        "gold_score",
        "gold_exact",
        "rm_score",
        "win_rate_gold",
        "win_rate_rm",
        "kl",
        "length",
        "eos_rate",
    ]
    print(f"\n{'policy':<14}" + "".join(f"{c:>14}" for c in cols))
    for name, row in table.items():
        print(f"{name:<14}" + "".join(f"{row.get(c, float('nan')):>14.3f}" for c in cols))
