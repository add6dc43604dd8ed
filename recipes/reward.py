"""Step 2, reward model. `accelerate launch recipes/reward.py --config recipes/configs/reward_tiny.yaml [--field value ...]`"""

from rlhf_hf import RewardRecipe

if __name__ == "__main__":
    recipe = RewardRecipe(RewardRecipe.parse_args())
    print(recipe.run().metrics)
