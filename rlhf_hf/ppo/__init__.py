"""Step 3: PPO against the reward model (InstructGPT), on transformers.Trainer; the math lives in `core`."""

from .config import PPORecipeConfig
from .recipe import PPORecipe, validate_prompts
from .roles import PPOModel, build_ppo_model
from .trainer import PPOTrainer

__all__ = ["PPOModel", "PPORecipe", "PPORecipeConfig", "PPOTrainer", "build_ppo_model", "validate_prompts"]
