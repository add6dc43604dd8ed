"""Evaluating a pipeline run: SFT, each PPO policy and best-of-n baselines at greedy and sampled decoding, the
over-optimisation curve, training curves, summary.json."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import load_split
from .evaluation import GREEDY, SAMPLED, checkpoint_curve, evaluate_policies, gold_prompts
from .evaluation import print_table as print_rows
from .modeling import load_pretrained, load_tokenizer
from .pipeline_config import PipelineConfig
from .reward.metrics import ranking_metrics
from .reward.model import load_reward_model
from .tasks import get_task
from .tasks.base import Judge, Prompt, SimulatedLabeller

logger = logging.getLogger(__name__)


def _pyplot():
    """matplotlib's pyplot on the file-only backend (works on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


BEST_OF = (4, 16)  # best-of-n baselines on the same reward model, sampled from SFT


def _policy_dirs(run_dir: Path, rounds: int) -> dict[str, Path]:
    """This run's PPO policies, from its config (a folder left by an earlier, longer run is not one of them)."""
    return {f"ppo_round_{r}": run_dir / f"round_{r}" / "ppo" / "merged" for r in range(1, rounds + 1)}


def evaluate_run(
    cfg: PipelineConfig,
    run_dir: str | Path,
    sft_model: str,
    judge: Judge | None = None,
    category: Callable[[Prompt], str] | None = None,
) -> dict[str, Any]:
    """SFT, every round's PPO policy and best-of-n baselines on held-out prompts, at greedy and at the training
    temperature; the over-optimisation curve; the summary. Gold metrics only with a judge: `judge` if given, else
    the config's task's; without either, the prompts dataset's test split and no gold keys at all."""
    run = Path(run_dir)
    task = get_task(cfg.task)
    judge_name = "user judge" if judge is not None else (task.name if task is not None else None)
    judge = judge or (task.score if task is not None else None)
    category = category or (task.category if task is not None else None)
    out = run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(sft_model)
    sft = load_pretrained(sft_model)
    policies = {"sft": sft} | {n: load_pretrained(p) for n, p in _policy_dirs(run, cfg.rounds).items()}
    last = list(policies)[-1]
    rm_dir = run / f"round_{cfg.rounds}" / "reward"
    # a preference dataset in the reward section trains one RM, in round 1, for every round
    reward = load_reward_model(rm_dir if rm_dir.exists() else run / "round_1" / "reward")
    prompts = gold_prompts(cfg.eval_prompts, task) if task is not None else held_out_prompts(cfg)
    kwargs = dict(temperature=cfg.sample_temperature, max_new_tokens=cfg.sample_max_new_tokens, seed=cfg.seed)
    table = evaluate_policies(
        policies,
        sft,
        tokenizer,
        prompts,
        reward=reward,
        judge=judge,
        category=category,
        best_of=BEST_OF,
        **kwargs,
    )

    ppo_dir = run / f"round_{cfg.rounds}" / "ppo"
    start = policies[list(policies)[-2]]  # the last round started from the policy before it (SFT in round 1)
    curve = (
        overoptimisation_curve(ppo_dir, sft_model, start, sft, tokenizer, reward, judge, prompts, kwargs)
        if cfg.eval_every_checkpoint
        else []
    )
    plot_overoptimisation(curve, table, out / "overoptimisation.png", cfg.sample_temperature)
    plot_training(run, out / "training_curves.png")

    summary = {
        "prompts": len(prompts),
        "judge": judge_name,
        "temperature": cfg.sample_temperature,
        "headline": {"decoding": GREEDY, "baseline": f"sft {GREEDY}", "policy": f"{last} {GREEDY}"},
        "table": table,
        "overoptimisation": curve,
    }
    if judge is not None:
        summary["rm_gold_pair_accuracy"] = gold_pair_accuracy(sft, tokenizer, reward, prompts, judge, cfg)
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
    return summary


def held_out_prompts(cfg: PipelineConfig) -> list[Prompt]:
    """Evaluation prompts without a task: the prompts dataset's `test` split, else the last `eval_prompts` rows of
    its `train` split, which `ranking_prompts` then leaves out."""
    test = load_split(cfg.prompts_dataset, "test")
    if test is not None:
        return [_clean(p) for p in test["prompt"][: cfg.eval_prompts]]
    return [_clean(p) for p in load_split(cfg.prompts_dataset, "train")["prompt"][-cfg.eval_prompts :]]


def ranking_prompts(cfg: PipelineConfig) -> list[Prompt]:
    """Prompts to sample answers to rank (and PPO's): `train`, less the held-out tail when there is no `test`."""
    prompts = [_clean(p) for p in load_split(cfg.prompts_dataset, "train")["prompt"]]
    if get_task(cfg.task) is not None or load_split(cfg.prompts_dataset, "test") is not None:
        return prompts
    if len(prompts) <= cfg.eval_prompts:
        raise ValueError(
            f"{cfg.prompts_dataset}: {len(prompts)} prompts and no 'test' split; evaluation holds out the last "
            f"eval_prompts={cfg.eval_prompts}, which leaves none to rank: add a test split or lower eval_prompts"
        )
    return prompts[: -cfg.eval_prompts]


def _clean(prompt: Prompt) -> Prompt:
    """A prompt as loaded by `datasets`: message dicts lose the keys a shared schema filled with None."""
    if isinstance(prompt, str):
        return prompt
    return [{k: v for k, v in m.items() if v is not None} for m in prompt]


def gold_pair_accuracy(model, tokenizer, reward, prompts, judge, cfg) -> float:
    """RM accuracy on held-out pairs ordered by the noiseless judge (K answers sampled from `model`)."""
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
    rows = [r for r in rank_with(SimulatedLabeller(judge, noise=0.0), rows) if len(set(r["ranks"])) > 1]
    rm_model, rm_tokenizer, _ = reward
    return ranking_metrics(rm_model, rm_tokenizer, rows)["pairwise_accuracy"]


def overoptimisation_curve(
    ppo_dir: Path, sft_model: str, start, reference, tokenizer, reward, judge, prompts, kwargs
) -> list[dict]:
    """Greedy and sampled gold / RM score and KL to SFT of the policy at every PPO checkpoint of the last round
    (update 0: the policy it started from). The RM score may keep rising after gold stops (Goodhart)."""
    checkpoints = sorted(ppo_dir.glob("checkpoint-*/policy"), key=lambda p: int(p.parent.name.split("-")[1]))

    def load(adapter: Path):  # LoRA adapters on the SFT model, the reference of every round
        return load_pretrained(sft_model, adapter)

    loaders = [(0, lambda: start)] + [
        (int(a.parent.name.split("-")[1]), lambda a=a: load(a)) for a in checkpoints
    ]
    return checkpoint_curve(loaders, reference, tokenizer, prompts, reward=reward, judge=judge, **kwargs)


def plot_overoptimisation(curve: list[dict], table: dict[str, dict], path: Path, temperature: float) -> None:
    """Gold (greedy and sampled) and RM score against KL to SFT, one point per checkpoint (labelled with its
    update); best-of-n baselines as stars at their analytic KL."""
    plt = _pyplot()
    fig, gold_ax = plt.subplots(figsize=(7, 4.5))
    rm_ax = gold_ax.twinx()
    lines = []
    if curve:
        kl = [p["kl"] for p in curve]
        has_gold = "gold_score" in curve[0][GREEDY]
        series = [(gold_ax, "gold_score", "o", "tab:green", "gold score")] if has_gold else []
        series.append((rm_ax, "rm_score", "s", "tab:blue", "RM score"))
        for ax, key, marker, color, name in series:
            for d, dash, label in ((GREEDY, "-", "greedy"), (SAMPLED, "--", f"sampled, T={temperature:g}")):
                lines += ax.plot(
                    kl,
                    [p[d][key] for p in curve],
                    marker + dash,
                    color=color,
                    alpha=1.0 if d == GREEDY else 0.6,
                    label=f"{name}, {label}",
                )
        if has_gold:
            for x, p in zip(kl, curve, strict=True):
                gold_ax.annotate(
                    str(p["update"]),
                    (x, p[GREEDY]["gold_score"]),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=7,
                )
    for name, row in table.items():
        if name.startswith("best-of-") and "gold_score" in row:
            lines += gold_ax.plot(
                [row["kl"]], [row["gold_score"]], "*", markersize=11, label=f"{name} (gold)"
            )
    gold_ax.set_xlabel("KL to SFT (nats per answer, on sampled answers)")
    gold_ax.set_ylabel("gold score (held-out prompts)", color="tab:green")
    rm_ax.set_ylabel("reward-model score (normalised)", color="tab:blue")
    gold_ax.set_title("Over-optimisation: gold and RM score vs KL, per PPO checkpoint")
    if lines:
        gold_ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="best")
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


def print_table(summary: dict[str, Any]) -> None:
    """Every row (greedy, sampled, best-of-n), then the per-category breakdown where there is more than one."""
    print_rows(summary["table"])
    categories = {c for row in summary["table"].values() for c in row.get("by_category", {})}
    if len(categories) > 1:
        parts = [part for row in summary["table"].values() for part in row["by_category"].values()]
        columns = [c for c in ("gold_score", "exact", "win_rate_gold") if all(c in part for part in parts)]
        print(f"\n{'model':<24}{'category':<14}{'n':>5}" + "".join(f"{c:>15}" for c in columns))
        for name, row in summary["table"].items():
            for cat, part in row["by_category"].items():
                print(f"{name:<24}{cat:<14}{part['n']:>5}" + "".join(f"{part[c]:>15.3f}" for c in columns))


def headline(summary: dict[str, Any]) -> str:
    """The demo's last line: the greedy result (how a chat model is served), then the sampled one."""
    table, h = summary["table"], summary["headline"]
    sft, ppo = table[h["baseline"]], table[h["policy"]]
    sft_t, ppo_t = table[h["baseline"].replace(GREEDY, SAMPLED)], table[h["policy"].replace(GREEDY, SAMPLED)]
    if "gold_score" in ppo:
        best = max(
            (r for n, r in table.items() if n.startswith("best-of-")), key=lambda r: r["kl"], default=None
        )
        bon = "" if best is None else f"; {best['decoding']} (RM-picked from SFT) {best['gold_score']:.3f}"
        return (
            f"greedy: gold score SFT {sft['gold_score']:.3f} -> PPO {ppo['gold_score']:.3f}, exact "
            f"{sft['exact']:.2f} -> {ppo['exact']:.2f}, win rate vs SFT {ppo['win_rate_gold']:.2f} | "
            f"sampled (T={summary['temperature']:g}): gold {sft_t['gold_score']:.3f} -> {ppo_t['gold_score']:.3f}, "
            f"win rate {ppo_t['win_rate_gold']:.2f}{bon} | KL {ppo['kl']:.2f}"
        )
    return (
        f"greedy: RM score SFT {sft['rm_score']:.2f} -> PPO {ppo['rm_score']:.2f}, win rate vs SFT by the RM "
        f"{ppo['win_rate_rm']:.2f} | sampled (T={summary['temperature']:g}): RM {sft_t['rm_score']:.2f} -> "
        f"{ppo_t['rm_score']:.2f} | KL {ppo['kl']:.2f} (no judge: no gold metrics)"
    )
