"""rlhf_hf: InstructGPT's three steps (SFT, a reward model on ranked comparisons, PPO) on the Hugging Face stack."""

import logging

# bitsandbytes' CPU backend warns at import that it could not fetch an optional kernel from the Hub (which we never
# want at run time anyway); it falls back to its own kernels, so the warning is noise for every user.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .pipeline import PipelineConfig, RLHFPipeline
from .ppo import PPORecipe, PPORecipeConfig
from .recipe import Recipe, RecipeResult
from .reward.recipe import RewardRecipe, RewardRecipeConfig
from .sft import SFTRecipe, SFTRecipeConfig
from .tasks import TINY_MODEL_ID, get_task

__all__ = [
    "PPORecipe",
    "PPORecipeConfig",
    "PipelineConfig",
    "Recipe",
    "RecipeResult",
    "RLHFPipeline",
    "RewardRecipe",
    "RewardRecipeConfig",
    "SFTRecipe",
    "SFTRecipeConfig",
    "TINY_MODEL_ID",
    "get_task",
]
__version__ = "0.1.0"
