"""Step 3, PPO. `accelerate launch recipes/ppo.py --config recipes/configs/ppo_tiny.yaml [--field value ...]`"""

from rlhf_hf import PPORecipe

if __name__ == "__main__":
    recipe = PPORecipe(PPORecipe.parse_args())
    print(recipe.run().metrics)
