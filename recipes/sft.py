"""Step 1, SFT. `accelerate launch recipes/sft.py --config recipes/configs/sft_tiny.yaml [--field value ...]`"""

from rlhf_hf import SFTRecipe

if __name__ == "__main__":
    recipe = SFTRecipe(SFTRecipe.parse_args())
    print(recipe.run().metrics)
