"""The embedded tiny base model: a ~2M-parameter Llama with a word-level tokenizer over a task's vocabulary."""
