"""The whole recipe: SFT -> (sample K answers -> rank -> reward model -> PPO) x rounds -> evaluation.

One YAML holds the stage configs; each stage writes its own subdir of `run_dir` and the next reads it from there:

    run_dir/sft/                      step 1 (adapter + merged/)
    run_dir/round_1/comparisons.jsonl sampled answers, ranked (or to_rank.jsonl / ranked.jsonl for humans)
    run_dir/round_1/reward/           step 2 (on all comparisons so far, initialised from the SFT model)
    run_dir/round_1/ppo/              step 3 (policy starts from the previous round's, reference = SFT)
    run_dir/eval/                     evaluation.json, PNG curves; run_dir/summary.json

A stage whose `metrics.json` exists has finished and is skipped on re-run (resume) unless `force: true`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from transformers.utils import logging as hf_logging

from .data import load_split
from .modeling import load_for_inference
from .outputs import claim_run_dir
from .pipeline_config import PipelineConfig
from .ppo import PPORecipe
from .recipe import Recipe, RecipeResult
from .report import evaluate_run, print_table, ranking_prompts
from .report import headline as report_headline
from .reward.collect import export_for_ranking, import_ranked
from .reward.recipe import RewardRecipe
from .reward.sampling import conversation_prompts, drop_empty_answers, rank_with, sample_answers
from .sft import SFTRecipe
from .tasks import get_task
from .tasks.base import Judge, Prompt, user_turns

logger = logging.getLogger(__name__)


class PausedForRanking(RuntimeError):
    """Raised when comparisons await human ranking; re-running the pipeline resumes from the ranked file."""


class RLHFPipeline:
    """`RLHFPipeline.from_yaml("pipeline.yaml").run()`: every step of InstructGPT, resumable stage by stage."""

    def __init__(
        self,
        config: PipelineConfig,
        labeller=None,
        judge: Judge | None = None,
        category: Callable[[Prompt], str] | None = None,
    ) -> None:
        """`judge` (`(prompt, answer) -> [0, 1]`) and `category` (a prompt's category): the evaluation's, in
        place of the config's task's; with neither a task nor a judge, no gold metrics are reported."""
        self.config = config
        self.judge, self.category = judge, category
        self.run_dir = Path(config.run_dir)
        if config.labeller not in ("simulated", "human") and labeller is None:
            raise ValueError(f"labeller must be 'simulated' or 'human', got {config.labeller!r}")
        if "dataset_format" in config.reward and "dataset_name" not in config.reward:
            raise ValueError(
                "pipeline config: reward.dataset_format describes reward.dataset_name (a preference dataset to "
                "train the reward model on instead of sampled and ranked answers); set both or neither"
            )
        self.task = get_task(config.task)
        if labeller is None and config.labeller == "simulated":
            if self.task is None:
                raise ValueError(
                    "labeller: simulated ranks by a task's gold judge: set `task` (e.g. tiny-sort)"
                )
            labeller = self.task.labeller(noise=config.labeller_noise, seed=config.seed)
        self.labeller = labeller
        self.timings: list[tuple[str, float, str]] = []

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RLHFPipeline:
        return cls(PipelineConfig.from_yaml(path, **overrides))

    # ------------------------------------------------------------------------------------------ stages
    def _stage(self, recipe_cls: type[Recipe], section: str, **fixed: Any) -> Recipe:
        """The stage's recipe from its section of the pipeline YAML (keys, or a `config:` stage YAML + keys) and
        the paths the pipeline fills in; errors name the pipeline file and the section."""
        values = dict(getattr(self.config, section))
        config_file = values.pop("config", None)
        where = f"{self.config.config_file or 'pipeline config'}, section `{section}`"
        recipe_cls.check_keys(values, where=where)
        defaults = {"seed": self.config.seed, "task": self.config.task}
        merged = {**defaults, **values, **fixed, "overwrite_output_dir": True}
        try:
            if config_file is None:
                return recipe_cls.from_dict(merged)
            path = Path(config_file)
            if not path.is_absolute():
                path = Path(self.config.config_dir or Path.cwd()) / path
            if not path.is_file():
                raise FileNotFoundError(f"{where}: stage config file {path} does not exist")
            return recipe_cls.from_yaml(path, **merged)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    # Each stage's recipe, built in one place for `run` and for `validate`.
    def _sft_recipe(self) -> Recipe:
        return self._stage(SFTRecipe, "sft", output_dir=str(self.run_dir / "sft"))

    def _reward_recipe(self, rm_dir: Path, sft_model: str, data: dict[str, Any]) -> Recipe:
        """Every round's reward model starts from SFT, on `data`: the comparisons so far, or the user's dataset."""
        return self._stage(
            RewardRecipe,
            "reward",
            model_name_or_path=sft_model,
            output_dir=str(rm_dir),
            labeller=None,
            **data,
        )

    def _ppo_recipe(
        self, ppo_dir: Path, sft_model: str, rm_dir: Path, prompts: str, policy_adapter: str | None = None
    ) -> Recipe:
        """PPO against `rm_dir` with the SFT model as reference, continuing `policy_adapter` (the last round's).

        PPO samples at the run's `sample_temperature`: one training temperature for the comparisons the reward
        model learns from, the answers PPO optimises and the report's sampled column."""
        temperature = self.config.sample_temperature
        if self.config.ppo.get("temperature", temperature) != temperature:
            raise ValueError(
                f"{self.config.config_file or 'pipeline config'}: ppo.temperature = {self.config.ppo['temperature']} "
                f"differs from sample_temperature = {temperature}; a run has one training temperature (comparisons, "
                "PPO, report): set sample_temperature only"
            )
        fixed = {
            "model_name_or_path": sft_model,
            "reward_model_path": str(rm_dir),
            "output_dir": str(ppo_dir),
            "dataset_name": prompts,
            "temperature": temperature,
        }
        if policy_adapter:
            fixed["init_policy_adapter"] = policy_adapter
        return self._stage(PPORecipe, "ppo", **fixed)

    def _reward_data(self, round_dir: Path) -> dict[str, Any]:
        """A preference dataset in the reward section (Hub id or file, with its `dataset_format`) replaces
        sampling + ranking; else the round's ranked comparisons file, all of it (a stage config's `max_prompts`
        caps the prompts that stage would rank itself, not the comparisons every round adds up)."""
        if fixed := self.config.reward.get("dataset_name"):
            return {"dataset_name": fixed}
        return {
            "dataset_name": str(round_dir / "reward_data.jsonl"),
            "dataset_format": "ranked",
            "max_prompts": None,
        }

    def validate(self) -> None:
        """Before the first stage runs: every stage's config parses (unknown keys and bad values name the pipeline
        file and section), and the prompt datasets have a `prompt` column."""
        cfg, round_dir = self.config, self.run_dir / "round_1"
        sft_model = str((self.run_dir / "sft" / "merged").resolve())
        self._sft_recipe()
        self._reward_recipe(round_dir / "reward", sft_model, self._reward_data(round_dir))
        ppo_prompts = cfg.ppo.get("dataset_name") or cfg.prompts_dataset  # `run` may write a subset of these
        self._ppo_recipe(round_dir / "ppo", sft_model, round_dir / "reward", ppo_prompts)
        for where, name in (
            ("prompts_dataset", cfg.prompts_dataset),
            ("section `ppo`, dataset_name", ppo_prompts),
        ):
            prompts = load_split(name, "train")
            if prompts is None or "prompt" not in prompts.column_names:
                found = "no train split" if prompts is None else f"columns {prompts.column_names}"
                raise ValueError(
                    f"{cfg.config_file or 'pipeline config'}, {where}: {name!r} needs a train split "
                    f"with a `prompt` column ({found})"
                )

    def _run_stage(self, name: str, out: Path, build: Callable[[], Recipe]) -> dict[str, Any]:
        """Run a stage unless its metrics.json says it finished (then reuse its metrics)."""
        done = out / "metrics.json"
        if done.exists() and not self.config.force:
            logger.info("%s: finished earlier, skipped (%s)", name, out)
            metrics = json.loads(done.read_text())
            self.timings.append((name + " (skipped)", 0.0, _headline(metrics)))
            return metrics
        start = time.time()
        with self._stage_output(name):
            result: RecipeResult = build().run()
        self.timings.append((name, time.time() - start, _headline(result.metrics)))
        if self.config.quiet:
            print(f"  done in {time.time() - start:.0f} s: {_headline(result.metrics)}", flush=True)
        return result.metrics

    @contextlib.contextmanager
    def _stage_output(self, name: str) -> Iterator[None]:
        """With `quiet: true`, a stage's progress bars and logs go to `run_dir/logs/<stage>.log`, not the console."""
        if not self.config.quiet:
            yield
            return
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / (name.replace(". ", "_").replace(" ", "_").replace("+", "and") + ".log")
        print(f"{name} ... (log: {path})", flush=True)
        with open(path, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            # transformers' log handler kept the stderr it saw at import: point its messages at the file too
            handler = logging.StreamHandler(f)
            hf_logging.disable_default_handler()
            hf_logging.add_handler(handler)
            try:
                yield
            finally:
                hf_logging.remove_handler(handler)
                hf_logging.enable_default_handler()

    def run(self) -> dict[str, Any]:
        cfg, run = self.config, self.run_dir
        start = time.time()
        self.validate()
        claim_run_dir(run, "pipeline run")
        (run / "pipeline.yaml").write_text(
            yaml.safe_dump(_jsonable(dataclasses.asdict(cfg)), sort_keys=False)
        )

        sft_dir = run / "sft"
        self._run_stage("1. SFT", sft_dir, build=self._sft_recipe)
        sft_model = str((sft_dir / "merged").resolve())

        policy_model, policy_adapter = sft_model, None
        comparisons: list[dict] = []
        user_data = cfg.reward.get("dataset_name") is not None  # round 1's RM on it serves every round
        for r in range(1, cfg.rounds + 1):
            round_dir = run / f"round_{r}"
            round_dir.mkdir(exist_ok=True)
            rm_dir = round_dir / "reward"
            if not user_data:
                comparisons += self.comparisons(round_dir, policy_model, r)
                data_file = round_dir / "reward_data.jsonl"
                data_file.write_text("".join(json.dumps(row) + "\n" for row in comparisons))
            if not user_data or r == 1:
                build_rm = functools.partial(
                    self._reward_recipe, rm_dir, sft_model, self._reward_data(round_dir)
                )
                self._run_stage(f"{r}. reward model", rm_dir, build=build_rm)
            else:
                rm_dir = run / "round_1" / "reward"
            ppo_dir = round_dir / "ppo"
            prompts = cfg.ppo.get("dataset_name") or self._ppo_prompts()
            build_ppo = functools.partial(
                self._ppo_recipe, ppo_dir, sft_model, rm_dir, prompts, policy_adapter
            )
            self._run_stage(f"{r}. PPO", ppo_dir, build=build_ppo)
            policy_model, policy_adapter = str(ppo_dir / "merged"), str(ppo_dir / "policy")

        eval_start = time.time()
        with self._stage_output("evaluation"):
            summary = evaluate_run(cfg, run, sft_model, judge=self.judge, category=self.category)
        accuracy = summary.get("rm_gold_pair_accuracy")
        headline = f"{summary.get('prompts', 0)} held-out prompts" + (
            "" if accuracy is None else f", RM gold-pair acc. {accuracy:.2f}"
        )
        self.timings.append(("evaluation", time.time() - eval_start, headline))
        summary["seconds"] = time.time() - start
        summary["stages"] = [{"stage": n, "seconds": s, "metric": m} for n, s, m in self.timings]
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
        self.print_summary(summary)
        return summary

    def stage_dirs(self) -> list[tuple[str, Path]]:
        """(stage name, output dir) of every training stage, in the order they run."""
        stages = [("1. SFT", self.run_dir / "sft")]
        for r in range(1, self.config.rounds + 1):
            stages += [(f"{r}. reward model", self.run_dir / f"round_{r}" / "reward")]
            stages += [(f"{r}. PPO", self.run_dir / f"round_{r}" / "ppo")]
        return stages

    def check_finished(self) -> None:
        """Before evaluating a run from its directory: every stage has finished, or the first that has not is named."""
        for name, out in self.stage_dirs():
            if not (out / "metrics.json").is_file():
                state = "was started but has not finished" if out.is_dir() else "has not run"
                raise FileNotFoundError(
                    f"Stage {name} of run {self.run_dir} {state} (no {out / 'metrics.json'}): finish the run with "
                    f"`rlhf-hf pipeline --config {self.run_dir / 'pipeline.yaml'} --run_dir {self.run_dir}`"
                )

    # ------------------------------------------------------------------------------------------ step 2 data
    def comparisons(self, round_dir: Path, policy_model: str, round_index: int) -> list[dict]:
        """This round's ranked comparisons: K answers per prompt from the current policy, ranked by the labeller
        (or exported for people, then imported once they have ranked them)."""
        cfg = self.config
        ranked_file = round_dir / "comparisons.jsonl"
        human_file = round_dir / "ranked.jsonl"
        if ranked_file.exists() and not cfg.force:
            return [json.loads(line) for line in ranked_file.read_text().splitlines()]
        if self.labeller is None and human_file.exists():
            rows = import_ranked(human_file)
        else:
            start = time.time()
            with self._stage_output(f"{round_index}. sample + rank"):
                rows = self._sample(policy_model, round_index)
            if self.labeller is None:
                export_for_ranking(rows, round_dir / "to_rank.jsonl", seed=cfg.seed)
                raise PausedForRanking(
                    f"Rank the answers in {round_dir / 'to_rank.jsonl'}, save the file as {human_file} and run the "
                    "pipeline again: it resumes from there."
                )
            rows = rank_with(self.labeller, rows)
            self.timings.append(
                (
                    f"{round_index}. sample + rank",
                    time.time() - start,
                    f"{len(rows)} prompts x K={cfg.sample_k}",
                )
            )
        ranked_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return rows

    def _ppo_prompts(self) -> str:
        """PPO's prompts: the ranking prompts (never the held-out ones), as a file when they are a subset."""
        cfg = self.config
        if get_task(cfg.task) is not None or load_split(cfg.prompts_dataset, "test") is not None:
            return cfg.prompts_dataset
        path = self.run_dir / "ppo_prompts.jsonl"
        path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ranking_prompts(cfg)))
        return str(path)

    def _sample(self, policy_model: str, round_index: int) -> list[dict]:
        cfg = self.config
        prompts = ranking_prompts(cfg)
        n = cfg.rank_prompts
        offset = ((round_index - 1) * n) % max(1, len(prompts) - n + 1)  # fresh prompts each round
        model, tokenizer = load_for_inference(policy_model)
        prompts = prompts[offset : offset + n]
        if cfg.sample_policy_turns:
            prompts = conversation_prompts(
                model,
                tokenizer,
                [user_turns(p) for p in prompts],
                temperature=cfg.sample_temperature,
                max_new_tokens=cfg.sample_max_new_tokens,
                seed=cfg.seed + round_index,
            )
        rows = sample_answers(
            model,
            tokenizer,
            prompts,
            cfg.sample_k,
            temperature=cfg.sample_temperature,
            max_new_tokens=cfg.sample_max_new_tokens,
            seed=cfg.seed + round_index,
            include_greedy=cfg.sample_include_greedy,
            draws=cfg.sample_draws,
        )
        rows, _ = drop_empty_answers(rows)
        return rows

    # ------------------------------------------------------------------------------------------ output
    def print_summary(self, summary: dict[str, Any]) -> None:
        print_table(summary)
        print(f"\n{'stage':<28}{'seconds':>9}  key metric")
        for name, seconds, metric in self.timings:
            print(f"{name:<28}{seconds:>9.1f}  {metric}")
        print(f"{'total':<28}{summary['seconds']:>9.1f}")
        print("\n" + report_headline(summary))


def _headline(metrics: dict[str, Any]) -> str:
    for key, label in (
        ("gold_score", "gold score"),
        ("gold_pair_accuracy", "gold pair accuracy"),
        ("eval_pairwise_accuracy", "pair acc. vs noisy labels"),
        ("score_last", "RM score (last)"),
    ):
        if key in metrics:
            return f"{label} {metrics[key]:.2f}"
    return ""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
