"""Writes notebooks/01_rlhf_walkthrough.ipynb (kept as code so diffs stay readable): `python notebooks/build_notebooks.py`."""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell

cells = [
    md("""# RLHF in three steps, on a laptop CPU

This notebook walks through InstructGPT's recipe — the one behind ChatGPT — with `rlhf_hf`, on the library's
embedded default: a ~1 M-parameter Llama and a toy assistant task, so everything runs on a CPU in a few minutes
and nothing is downloaded.

**The task.** The user asks *"sort 3 1 4 1 5"*; a good answer is *"1 1 3 4 5"*. Writing the answer is hard for a
tiny model; *judging* one is easy (is it a sorted copy of the input?), just as a human labeller can tell a better
answer from a worse one without being able to write the best one. A programmatic **gold judge** plays the
labellers: it only ranks answers (with noise) and measures the final result — it is never the training reward.

The three steps:
1. **SFT** — fine-tune the pretrained model on demonstrations (here deliberately sloppy: half contain a mistake).
2. **Reward model** — sample K answers per prompt, have them *ranked*, train a model to score answers so that
   better-ranked ones score higher (all C(K,2) pairs from each ranking).
3. **PPO** — let the model practise: sample answers, score them with the reward model, and update the model to
   get higher scores while a KL penalty keeps it close to the SFT model (so it cannot drift into gibberish the
   reward model happens to like)."""),
    code("""# Parameters (the tests run this notebook with these values)
RUN_DIR = "runs/notebook"
SEED = 0
PPO_UPDATES = 40"""),
    code("""import json, statistics
from pathlib import Path

import matplotlib.pyplot as plt
from transformers import AutoModelForCausalLM

from rlhf_hf import PPORecipe, RewardRecipe, SFTRecipe
from rlhf_hf.evaluation import compare_policies, gold_prompts
from rlhf_hf.generation import generate
from rlhf_hf.modeling import load_tokenizer
from rlhf_hf.reward.model import load_reward_model
from rlhf_hf.reward.sampling import drop_empty_answers, rank_with, sample_answers
from rlhf_hf.tiny import DEFAULT_TASK, SimulatedLabeller, get_tiny_base

CONFIGS = Path("recipes/configs") if Path("recipes/configs").exists() else Path("../recipes/configs")
run = Path(RUN_DIR)
results = {}"""),
    md("""## Step 0: the pretrained base and the judge

`rlhf-hf/tiny` is pretrained once (about half a minute) on plain text like `numbers 3 1 4 sorted : 1 3 4 .` and
cached. It knows something about sorting, but not how to answer a chat prompt."""),
    code("""base_dir = get_tiny_base()
tokenizer = load_tokenizer(str(base_dir))
demo = DEFAULT_TASK.sft_rows(3, seed=SEED)
for row in demo:
    prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
    print(f"{prompt!r:24} demonstration {answer!r:16} gold score {DEFAULT_TASK.score(prompt, answer):.2f}")
base = AutoModelForCausalLM.from_pretrained(base_dir)
print("base model answers:", generate(base, tokenizer, ["sort 3 1 2", "order 9 0 5"], max_new_tokens=8))"""),
    md("""## Step 1: supervised fine-tuning

`SFTRecipe` wraps TRL's `SFTTrainer` with LoRA; the loss covers the assistant's tokens only. The merged model
(`sft/merged`) is the starting point of everything that follows."""),
    code("""sft = SFTRecipe.from_yaml(CONFIGS / "sft_tiny.yaml", output_dir=str(run / "sft"), seed=SEED).run()
sft_dir = str(Path(sft.output_dir, "merged").resolve())
results["sft_gold_greedy"] = sft.metrics["gold_score"]
print({k: round(v, 3) for k, v in sft.metrics.items() if isinstance(v, float)})"""),
    md("""## Step 2: rank sampled answers, train a reward model

For each prompt we sample K = 4 answers from the SFT model and ask the (simulated, slightly noisy) labeller to rank
them. The reward model (the SFT model plus a scalar head) sees all four answers of a prompt at once and learns
from every pair: better-ranked answer should score higher."""),
    code("""sft_model = AutoModelForCausalLM.from_pretrained(sft_dir)
sft_tok = load_tokenizer(sft_dir)
prompts = DEFAULT_TASK.prompts(600, seed=SEED + 1)
sampled, _ = drop_empty_answers(sample_answers(sft_model, sft_tok, prompts, 4, max_new_tokens=16, seed=SEED))
rows = rank_with(SimulatedLabeller(DEFAULT_TASK, noise=0.05, seed=SEED), sampled)
print("prompt:", rows[0]["prompt"])
for answer, rank in sorted(zip(rows[0]["responses"], rows[0]["ranks"]), key=lambda x: x[1]):
    print(f"  rank {rank}: {answer!r}")
(run).mkdir(parents=True, exist_ok=True)
(run / "comparisons.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))"""),
    code("""rm = RewardRecipe.from_yaml(CONFIGS / "reward_tiny.yaml", model_name_or_path=sft_dir, labeller=None,
                            dataset_name=str(run / "comparisons.jsonl"), output_dir=str(run / "reward"),
                            eval_gold_prompts=0, seed=SEED).run()
results["rm_pair_accuracy"] = rm.metrics.get("eval_pairwise_accuracy")
print({k: round(v, 3) for k, v in rm.metrics.items() if isinstance(v, float)})

# Does the reward model prefer correct answers? Score held-out answers and split them by the gold judge.
reward = load_reward_model(rm.output_dir)
held = sample_answers(sft_model, sft_tok, gold_prompts(150), 4, max_new_tokens=16, seed=SEED + 7)
pairs = [(r["prompt"], a) for r in held for a in r["responses"]]
from rlhf_hf.reward.model import score
scores = score(reward[0], reward[1], [p for p, _ in pairs], [a for _, a in pairs])
exact = [s for (p, a), s in zip(pairs, scores) if DEFAULT_TASK.score(p, a) == 1.0]
wrong = [s for (p, a), s in zip(pairs, scores) if DEFAULT_TASK.score(p, a) < 1.0]
results["rm_exact_minus_wrong"] = statistics.fmean(exact) - statistics.fmean(wrong)
plt.hist([exact, wrong], bins=30, label=["correct answers", "answers with a mistake"], alpha=0.7)
plt.xlabel("reward model score"); plt.legend(); plt.title("The reward model separates good from bad answers")
plt.show()"""),
    md("""## Step 3: PPO against the reward model

The policy (a LoRA adapter on the SFT model) samples answers, the reward model scores them, and PPO nudges the
policy towards higher scores. The per-token penalty −β·KL(policy ‖ SFT) keeps it from drifting; a little of the
pretraining loss ("PPO-ptx") is mixed in. Policy, value function, reward model and the SFT reference all share
one copy of the base weights."""),
    code("""ppo = PPORecipe.from_yaml(CONFIGS / "ppo_tiny.yaml", model_name_or_path=sft_dir, reward_model_path=rm.output_dir,
                          output_dir=str(run / "ppo"), max_steps=PPO_UPDATES, ptx_coef=0.05, eval_gold_prompts=0,
                          seed=SEED).run()
history = [h for h in json.loads(Path(ppo.output_dir, "log_history.json").read_text()) if "objective/scores" in h]
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, key, title in zip(axes, ["objective/scores", "objective/kl", "objective/entropy"],
                          ["reward-model score", "KL to the SFT model", "entropy"]):
    ax.plot([h["step"] for h in history], [h[key] for h in history]); ax.set_title(title); ax.set_xlabel("update")
plt.tight_layout(); plt.show()
results["rm_score_first"], results["rm_score_last"] = ppo.metrics["score_first"], ppo.metrics["score_last"]"""),
    md("""## Did it work? Ask the gold judge

Both policies answer the same held-out prompts (sampled at temperature 1, as during training). The reward model is
only a proxy; the gold judge is what we actually care about."""),
    code("""ppo_model = AutoModelForCausalLM.from_pretrained(Path(ppo.output_dir, "merged"))
table = compare_policies({"sft": sft_model, "ppo": ppo_model}, sft_model, sft_tok, reward, gold_prompts(200),
                         seed=SEED)
for name, row in table.items():
    print(name, {k: round(v, 3) for k, v in row.items()})
plt.bar(["SFT", "PPO"], [table["sft"]["gold_score"], table["ppo"]["gold_score"]], color=["grey", "tab:green"])
plt.ylabel("gold score (held-out prompts)"); plt.ylim(0.5, 1.0); plt.show()
results.update(gold_sft=table["sft"]["gold_score"], gold_ppo=table["ppo"]["gold_score"],
               win_rate=table["ppo"]["win_rate_gold"], kl=table["ppo"]["kl"])
print(json.dumps(results))"""),
    md("""## Where next

- The same three recipes take a real model id and dataset: see `notebooks/02_consumer_gpu.ipynb` (8-bit base,
  one 24 GB GPU) and the README.
- `rlhf-hf pipeline --config recipes/configs/pipeline_tiny.yaml` runs all of this end to end, with several rounds
  of ranking and PPO, and draws the over-optimisation curve (gold vs reward-model score along PPO)."""),
]

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
nbf.write(nb, Path(__file__).with_name("01_rlhf_walkthrough.ipynb"))
