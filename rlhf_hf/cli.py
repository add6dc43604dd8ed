"""`rlhf-hf <stage> --config file.yaml [--field value ...]`: every stage is a Recipe parsed by TRL's parser."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .recipe import Recipe

USAGE = """usage: rlhf-hf <command> [--config FILE] [--field value ...]

commands:
  sft            step 1: supervised fine-tuning (LoRA) on demonstrations
  reward         step 2: reward model on K ranked answers per prompt (all C(K,2) pairs, one forward each)
  ppo            step 3: PPO against the reward model (policy/value/reward LoRA adapters on one base)
  chat           interactive multi-turn chat with a model dir (streaming; /reset, /exit)
  generate       answers for a file of prompts (.txt or .jsonl with `prompt`) -> .jsonl
  export         a standalone HF model dir (merged weights, tokenizer, model card)
  pipeline       the whole recipe: SFT -> (sample -> rank -> RM -> PPO) x rounds -> evaluation
  eval           evaluate a pipeline run dir again (tables, curves, summary.json)
  demo           the recipe on the embedded chat task (CPU, minutes), printing a table of results
                 (`rlhf-hf demo [RUN_DIR] [--seed N]`)
  pretrain-tiny  build (or rebuild with --rebuild) the cached tiny bases (rlhf-hf/tiny, rlhf-hf/tiny-chat)
"""


def recipes() -> dict[str, type[Recipe]]:
    from .ppo import PPORecipe
    from .reward.recipe import RewardRecipe
    from .sft import SFTRecipe

    return {"sft": SFTRecipe, "reward": RewardRecipe, "ppo": PPORecipe}


def _chat(args: list[str]) -> int:
    from .serve import chat, load_for_inference

    parser = argparse.ArgumentParser("rlhf-hf chat", allow_abbrev=False)
    parser.add_argument(
        "--model",
        required=True,
        help="a model dir we wrote (RUN_DIR/round_1/ppo, .../ppo/merged, .../ppo/policy, RUN_DIR/sft) or a Hub id",
    )
    parser.add_argument("--system", default=None)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--dtype", default=None)
    ns = parser.parse_args(args)
    model, tokenizer = load_for_inference(ns.model, ns.dtype)
    try:
        chat(model, tokenizer, system=ns.system, max_new_tokens=ns.max_new_tokens, temperature=ns.temperature)
    except KeyboardInterrupt:  # a second Ctrl-C while the REPL was handling the first
        print()
    return 0


def _generate(args: list[str]) -> int:
    from .serve import generate_file

    parser = argparse.ArgumentParser("rlhf-hf generate", allow_abbrev=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--do_sample", action="store_true")
    parser.add_argument("--batch_size", type=int, default=16)
    ns = vars(parser.parse_args(args))
    n = generate_file(ns.pop("model"), ns.pop("prompts"), ns.pop("output"), **ns)
    print(f"wrote {n} answers")
    return 0


def _export(args: list[str]) -> int:
    from .serve import export

    parser = argparse.ArgumentParser("rlhf-hf export", allow_abbrev=False)
    parser.add_argument("--model", required=True, help="merged model dir or adapter dir")
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "--run", default=None, help="the run dir whose stages and metrics go into the model card"
    )
    ns = parser.parse_args(args)
    print(export(ns.model, ns.output, run_dir=ns.run))
    return 0


def _pipeline(args: list[str]) -> int:
    """Parsed like a stage: TRL's parser, the YAML's keys as defaults, any top-level key as a flag."""
    from trl import TrlParser

    from .pipeline import PausedForRanking, PipelineConfig, RLHFPipeline

    parser = TrlParser(dataclass_types=[PipelineConfig], prog="rlhf-hf pipeline", allow_abbrev=False)
    if "--config" not in args[:-1]:
        parser.error("--config FILE is required (e.g. recipes/configs/pipeline_tiny.yaml)")
    at = args.index("--config")
    config_file, flags = args[at + 1], args[:at] + args[at + 2 :]
    if unknown := parser.parse_known_args(flags)[1]:  # before the file is read, as argparse would
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from_file = PipelineConfig.from_yaml(config_file)  # unknown keys in the file: an error that names it
    (config,) = parser.parse_args_and_config(args)
    config = dataclasses.replace(config, config_dir=from_file.config_dir, config_file=from_file.config_file)
    try:
        RLHFPipeline(config).run()
    except PausedForRanking as paused:
        print(paused)
        return 3
    return 0


def _eval(args: list[str]) -> int:
    from pathlib import Path

    from .pipeline import PipelineConfig, RLHFPipeline
    from .report import evaluate_run, headline, print_table

    parser = argparse.ArgumentParser("rlhf-hf eval", allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a pipeline run dir (holds pipeline.yaml)")
    ns = parser.parse_args(args)
    config_file = Path(ns.run, "pipeline.yaml")
    if not config_file.is_file():
        what = "is not a pipeline run dir" if Path(ns.run).is_dir() else "does not exist"
        raise FileNotFoundError(f"Run dir {ns.run} {what} (no {config_file})")
    config = PipelineConfig.from_yaml(config_file, run_dir=ns.run)
    RLHFPipeline(config).check_finished()
    summary = evaluate_run(config, ns.run, str((Path(ns.run) / "sft" / "merged").resolve()))
    print_table(summary)
    print("\n" + headline(summary))
    return 0


def _demo(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        "rlhf-hf demo",
        description="The whole recipe on the embedded chat task (tiny model, conversations; CPU, minutes), from "
        "scratch into RUN_DIR, ending with a table of results.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "run_dir", nargs="?", default="runs/demo", help="where the run goes (default: runs/demo)"
    )
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(args)
    from .demo import run_demo

    run_demo(ns.run_dir, seed=ns.seed, force=True, quiet=True)
    return 0


TOOLS = {"chat": _chat, "generate": _generate, "export": _export, "pipeline": _pipeline, "eval": _eval}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in TOOLS:
        return TOOLS[command](rest)
    if command == "demo":
        return _demo(rest)
    if command == "pretrain-tiny":
        from .tasks import TINY_CHAT_MODEL_ID, TINY_MODEL_ID, embedded_model_path

        for model_id in (TINY_MODEL_ID, TINY_CHAT_MODEL_ID):
            print(model_id, embedded_model_path(model_id, rebuild="--rebuild" in rest))
        return 0
    table = recipes()
    if command not in table:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    recipe = table[command](table[command].parse_args(rest))
    result = recipe.run()
    print(json.dumps({"output_dir": result.output_dir, "metrics": result.metrics}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
