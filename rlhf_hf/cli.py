"""`rlhf-hf <stage> --config file.yaml [--field value ...]`: every stage is a Recipe parsed by TRL's parser."""

from __future__ import annotations

import json
import sys

from .recipe import Recipe

USAGE = """usage: rlhf-hf <command> [--config FILE] [--field value ...]

commands:
  sft            step 1: supervised fine-tuning (LoRA) on demonstrations
  reward         step 2: reward model on K ranked answers per prompt (all C(K,2) pairs, one forward each)
  ppo            step 3: PPO against the reward model (policy/value/reward LoRA adapters on one base)
  demo           the recipe on the embedded default (CPU, minutes), printing a table of results
  pretrain-tiny  build (or rebuild with --rebuild) the cached tiny base model of the embedded default
"""


def recipes() -> dict[str, type[Recipe]]:
    from .ppo import PPORecipe
    from .reward.recipe import RewardRecipe
    from .sft import SFTRecipe

    return {"sft": SFTRecipe, "reward": RewardRecipe, "ppo": PPORecipe}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import run_demo

        run_demo(*rest[:1])
        return 0
    if command == "pretrain-tiny":
        from .tiny.model import get_tiny_base

        print(get_tiny_base(rebuild="--rebuild" in rest))
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
