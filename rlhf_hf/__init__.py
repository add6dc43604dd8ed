"""rlhf_hf: InstructGPT's three steps (SFT, a reward model on ranked comparisons, PPO) on the Hugging Face stack."""

from .pipeline import PipelineConfig, RLHFPipeline
from .ppo import PPORecipe, PPORecipeConfig
from .recipe import Recipe, RecipeResult
from .reward.recipe import RewardRecipe, RewardRecipeConfig
from .sft import SFTRecipe, SFTRecipeConfig
from .tiny.model import TINY_MODEL_ID, get_tiny_base

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
    "get_tiny_base",
]
__version__ = "0.1.0"
