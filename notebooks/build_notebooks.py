"""Writes the notebooks (kept as code so diffs stay readable): `python notebooks/build_notebooks.py`.

- `01_rlhf_walkthrough.ipynb`: the three steps on the embedded default, explained (CPU, minutes).
- `02_consumer_gpu.ipynb`: the same steps on a real 7B model in 8-bit + LoRA on one 24 GB GPU.
"""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def walkthrough() -> list:
    """Cells of 01_rlhf_walkthrough.ipynb."""
    return [
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
from rlhf_hf.evaluation import evaluate_policies, gold_prompts, print_table
from rlhf_hf.generation import generate
from rlhf_hf.modeling import load_tokenizer
from rlhf_hf.reward.model import load_reward_model
from rlhf_hf.reward.sampling import drop_empty_answers, rank_with, sample_answers
from rlhf_hf.tasks import get_task
from rlhf_hf.tasks.tiny.model import get_tiny_base

TASK = get_task("tiny-sort")  # prompts, demonstrations and the gold judge

CONFIGS = Path("recipes/configs") if Path("recipes/configs").exists() else Path("../recipes/configs")
run = Path(RUN_DIR)
results = {}"""),
    md("""## Step 0: the pretrained base and the judge

`rlhf-hf/tiny` is pretrained once (about half a minute) on plain text like `numbers 3 1 4 sorted : 1 3 4 .` and
cached. It knows something about sorting, but not how to answer a chat prompt."""),
    code("""base_dir = get_tiny_base()
tokenizer = load_tokenizer(str(base_dir))
demo = TASK.demonstrations(3, seed=SEED)
for row in demo:
    prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
    print(f"{prompt!r:24} demonstration {answer!r:16} gold score {TASK.score(prompt, answer):.2f}")
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
prompts = TASK.prompts(600, seed=SEED + 1)
sampled, _ = drop_empty_answers(sample_answers(sft_model, sft_tok, prompts, 4, max_new_tokens=16, seed=SEED))
rows = rank_with(TASK.labeller(noise=0.05, seed=SEED), sampled)
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
held = sample_answers(sft_model, sft_tok, gold_prompts(150, TASK), 4, max_new_tokens=16, seed=SEED + 7)
pairs = [(r["prompt"], a) for r in held for a in r["responses"]]
from rlhf_hf.reward.model import score
scores = score(reward[0], reward[1], [p for p, _ in pairs], [a for _, a in pairs])
exact = [s for (p, a), s in zip(pairs, scores) if TASK.score(p, a) == 1.0]
wrong = [s for (p, a), s in zip(pairs, scores) if TASK.score(p, a) < 1.0]
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
    md("""## Did it work? Ask the gold judge, the way the model is used

Both policies answer the same held-out prompts twice: **greedily**, the way a chat model is served, and **sampled at
temperature 1**, as during training. Sampled answers mostly measure how sure a policy is: PPO lowers the entropy,
so its samples look better even when its most likely answer does not. Greedy is the result that counts.

Two baselines use the same reward model without any training: **best-of-n** samples n answers from SFT and keeps
the one the reward model likes most (n = 4 and 16). Win rates compare with SFT at the same decoding (ties count
half); best-of-n is compared with SFT's greedy answer, the one it would replace. The reward model is only a
proxy; the gold judge is what we actually care about."""),
    code("""ppo_model = AutoModelForCausalLM.from_pretrained(Path(ppo.output_dir, "merged"))
rows = evaluate_policies({"sft": sft_model, "ppo": ppo_model}, sft_model, sft_tok, gold_prompts(200, TASK),
                         reward=reward, judge=TASK.score, category=TASK.category, best_of=(4, 16), seed=SEED)
print_table(rows)
names = ["sft greedy", "ppo greedy", "sft sampled", "ppo sampled", "best-of-4", "best-of-16"]
plt.bar(names, [rows[n]["gold_score"] for n in names],
        color=["grey", "tab:green", "silver", "lightgreen", "tab:blue", "tab:blue"])
plt.ylabel("gold score (held-out prompts)"); plt.xticks(rotation=30); plt.ylim(0.5, 1.0); plt.show()
results.update({f"{key}_{n.replace(' ', '_').replace('-', '_')}": rows[n][metric] for n in names
                for key, metric in (("gold", "gold_score"), ("exact", "exact"), ("win_rate", "win_rate_gold"))})
results["kl"] = rows["ppo sampled"]["kl"]
print(json.dumps(results))"""),
    md("""## Where next

- The same three recipes take a real model id and dataset: see `notebooks/02_consumer_gpu.ipynb` (8-bit base,
  one 24 GB GPU) and the README.
- `rlhf-hf pipeline --config recipes/configs/pipeline_tiny.yaml` runs all of this end to end, with several rounds
  of ranking and PPO, and draws the over-optimisation curve (greedy and sampled gold and
  reward-model score against KL to SFT, checkpoint by checkpoint)."""),
]



def consumer_gpu() -> list:
    """Cells of 02_consumer_gpu.ipynb: a 7B model through all three steps on one 24 GB GPU (8-bit + LoRA)."""
    return [
        md("""# RLHF on one consumer GPU: a 7B model in 8-bit + LoRA

The three steps of `01_rlhf_walkthrough.ipynb` with a real model and real public data, sized for **one 24 GB GPU**
(RTX 3090 / 4090, L4, A10). Two things make it fit:

- **8-bit base** (bitsandbytes, `load_in_8bit`): a 7B model's weights take ~8 GB instead of ~15 GB in bf16;
  `LOAD_IN_4BIT` (NF4) halves that again and is the way to fit 13B.
- **LoRA**: only small adapters (and the reward/value heads) are trained, so gradients and AdamW states are tens of
  MB, not tens of GB. In PPO the policy, value function, reward model and SFT reference are adapters on **one**
  shared 8-bit base, so the base is in memory once, not four times.

Everything is a parameter of the next cell. The tests run this notebook on the embedded default
(`TINY = True`, `MODEL = "rlhf-hf/tiny"`, embedded datasets, still 8-bit through bitsandbytes on CPU)."""),
        code("""# Parameters (the tests replace this cell: TINY = True, the embedded model and data)
MODEL = "Qwen/Qwen2.5-7B-Instruct"  # any causal LM on the Hub, e.g. "meta-llama/Llama-2-7b-hf" (gated)
TINY = False  # True: the embedded default's lengths, batch sizes and step counts (CPU, minutes)
SFT_DATASET, SFT_SPLIT = "HuggingFaceH4/ultrafeedback_binarized", "train_sft"  # `messages` column
PREFERENCE_DATASET = "openbmb/UltraFeedback"  # K = 4 rated answers per prompt; None: sample + simulated labeller
PROMPT_DATASET, PROMPT_SPLIT = "HuggingFaceH4/ultrafeedback_binarized", "train_gen"  # `prompt` column
MAX_ROWS = 2000  # rows (prompts) per step: a small slice, this is a demonstration
LOAD_IN_8BIT, LOAD_IN_4BIT = True, False
PPO_UPDATES = 100
RUN_DIR = "runs/consumer_gpu"
SEED = 0"""),
        md("""## Expected memory and time (estimates)

**These are estimates**, from the parameter counts and the batch shapes below, not measurements: GPU numbers will
replace them once `benchmarks/RESULTS.md` has them. For `Qwen/Qwen2.5-7B-Instruct` (7.6 B parameters), LoRA r = 16
on all linear layers (~40 M trainable parameters), one 24 GB GPU:

| step | what is in memory | peak GPU memory (est.) | time (est., RTX 4090) |
|---|---|---|---|
| SFT, 2 000 conversations, ≤ 1 024 tokens | 8-bit base ~8 GB, LoRA + AdamW ~0.5 GB, checkpointed activations (batch 4) ~3-5 GB | ~13-16 GB | ~30-60 min |
| Reward model, 2 000 prompts × 4 answers | same base + score head; each prompt's 4 answers in one batch (2 prompts = 8 rows) | ~13-17 GB | ~30-60 min |
| PPO, 100 updates × 64 prompts, 256 new tokens | one 8-bit base for 4 roles, 2 trained LoRAs, KV cache of 8 × 768 tokens, checkpointed `critic: head` | ~16-21 GB | ~2-4 h (sampling dominates) |

8-bit matmuls are slower than bf16 ones (bitsandbytes int8: roughly 1.5-3x per token), which is the price of fitting.
A 13B model fits the same way with `LOAD_IN_4BIT = True` (~7-8 GB of weights). If a step runs out of memory: lower
`per_device_train_batch_size` (and raise `gradient_accumulation_steps`), `max_length`, or PPO's
`rollout_forward_batch_size` and `max_new_tokens`."""),
        code("""import json, math, time
from pathlib import Path

import torch

from rlhf_hf import PPORecipe, RewardRecipe, SFTRecipe
from rlhf_hf.data import load_split
from rlhf_hf.reward.loaders import from_ultrafeedback

CONFIGS = Path("recipes/configs") if Path("recipes/configs").exists() else Path("../recipes/configs")
run = Path(RUN_DIR)
run.mkdir(parents=True, exist_ok=True)
results = {}
# Non-quantised parts (norms, LoRA, heads) in bf16 on a GPU, float32 on the CPU (TINY).
QUANT = dict(load_in_8bit=LOAD_IN_8BIT, load_in_4bit=LOAD_IN_4BIT, dtype="float32" if TINY else "bfloat16")


def data_slice(name, split, columns, n, out):
    \"\"\"The first n rows of a Hub, local or embedded dataset, as a JSONL file the recipes read.\"\"\"
    data = load_split(name, split)
    data = data.select(range(min(n, len(data)))).select_columns(columns)
    data.to_json(str(out))
    return str(out)


def peak_gb():
    \"\"\"Peak GPU memory since the last call (None on CPU).\"\"\"
    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


# Per-step settings: the embedded default's (TINY), or a 7B model's on 24 GB. The YAML files hold the rest.
if TINY:
    SFT = dict(max_steps=12, eval_gold_prompts=0)
    RM = dict(labeller="simulated" if PREFERENCE_DATASET is None else None, max_prompts=MAX_ROWS,
              num_train_epochs=4, eval_gold_prompts=200)
    PPO = dict(max_steps=PPO_UPDATES, per_device_train_batch_size=16, num_mini_batches=2, eval_gold_prompts=0)
else:
    SFT = dict(max_length=1024, per_device_train_batch_size=4, gradient_accumulation_steps=8, learning_rate=2e-4,
               lr_scheduler_type="cosine", warmup_steps=10, activation_checkpointing=True, logging_steps=10,
               dataset_test_split=None, eval_fraction=0.02, eval_gold_prompts=0)
    RM = dict(labeller=None, max_length=1024, per_device_train_batch_size=2, per_device_eval_batch_size=8,
              gradient_accumulation_steps=8, learning_rate=1e-4, num_train_epochs=1, activation_checkpointing=True,
              dataset_test_split=None, eval_fraction=0.05, eval_gold_prompts=0)
    PPO = dict(max_prompt_length=512, max_new_tokens=256, per_device_train_batch_size=4,
               gradient_accumulation_steps=4, num_mini_batches=4, rollout_forward_batch_size=8, critic="head",
               activation_checkpointing=True, learning_rate=1e-5, kl_coef=0.05, missing_eos_penalty=1.0,
               max_steps=PPO_UPDATES, save_steps=25, eval_gold_prompts=0)
print("model:", MODEL, "| 8-bit" if LOAD_IN_8BIT else "", "| 4-bit" if LOAD_IN_4BIT else "", "| tiny" if TINY else "")"""),
        md("""## Step 1: SFT on demonstrations

A slice of the SFT split (conversations in `messages` format), LoRA on the 8-bit base; the loss is on the
assistant's tokens only. The merged model (`sft/merged`, unquantised, in the model's dtype) is the base of steps 2
and 3, which load it in 8-bit again."""),
        code("""sft_data = data_slice(SFT_DATASET, SFT_SPLIT, ["messages"], MAX_ROWS, run / "sft_data.jsonl")
start = time.time()
sft = SFTRecipe.from_yaml(CONFIGS / "sft_tiny.yaml", model_name_or_path=MODEL, dataset_name=sft_data,
                          output_dir=str(run / "sft"), seed=SEED, **QUANT, **SFT).run()
sft_dir = str(Path(sft.output_dir, "merged").resolve())
results.update(sft_minutes=(time.time() - start) / 60, sft_peak_gb=peak_gb(), sft_train_loss=sft.metrics["train_loss"],
               sft_eval_loss_before=sft.metrics.get("eval_loss_before"), sft_eval_loss=sft.metrics.get("eval_loss"))
print({k: v for k, v in results.items() if k.startswith("sft")})"""),
        md("""## Step 2: a reward model on ranked answers

UltraFeedback rates 4 answers per instruction; `from_ultrafeedback` turns each instruction into one ranked row
(K = 4, all 6 pairs, ties dropped), as InstructGPT's labellers ranked K answers. The reward model is the SFT model
plus a scalar head, LoRA on the 8-bit base. (With `PREFERENCE_DATASET = None`, answers are sampled from the SFT
model and ranked by the embedded task's simulated labeller.)"""),
        code("""if PREFERENCE_DATASET is None:
    rm_data = "rlhf-hf/tiny-sort-prompts"  # prompts: K answers are sampled and ranked by the simulated labeller
else:
    raw = load_split(PREFERENCE_DATASET, "train")
    rows = from_ultrafeedback(raw.select(range(min(MAX_ROWS, len(raw)))))
    rm_data = str(run / "ranked.jsonl")
    Path(rm_data).write_text("".join(json.dumps(r) + "\\n" for r in rows))
start = time.time()
rm = RewardRecipe.from_yaml(CONFIGS / "reward_tiny.yaml", model_name_or_path=sft_dir, dataset_name=rm_data,
                            output_dir=str(run / "reward"), seed=SEED, **(QUANT | RM)).run()
results.update(rm_minutes=(time.time() - start) / 60, rm_peak_gb=peak_gb(), rm_train_loss=rm.metrics["train_loss"],
               rm_pair_accuracy=rm.metrics.get("eval_pairwise_accuracy", rm.metrics.get("gold_pair_accuracy")))
print({k: v for k, v in results.items() if k.startswith("rm")})"""),
        md("""## Step 3: PPO against the reward model

Policy and value function are adapters on one 8-bit copy of the SFT model; the reward model is a third, frozen
adapter, and the reference policy is the base with all adapters switched off. `critic: head` (a value head on the
policy) allows activation checkpointing, which the 7B run needs."""),
        code("""ppo_prompts = data_slice(PROMPT_DATASET, PROMPT_SPLIT, ["prompt"], MAX_ROWS, run / "prompts.jsonl")
start = time.time()
ppo = PPORecipe.from_yaml(CONFIGS / "ppo_tiny.yaml", model_name_or_path=sft_dir, reward_model_path=rm.output_dir,
                          dataset_name=ppo_prompts, output_dir=str(run / "ppo"), seed=SEED, **QUANT, **PPO).run()
history = [h for h in json.loads(Path(ppo.output_dir, "log_history.json").read_text()) if "objective/scores" in h]
results.update(ppo_minutes=(time.time() - start) / 60, ppo_peak_gb=peak_gb(), ppo_updates=ppo.metrics["updates"],
               ppo_score_first=ppo.metrics["score_first"], ppo_score_last=ppo.metrics["score_last"],
               ppo_kl_last=ppo.metrics["kl_last"], ppo_seconds_per_update=ppo.metrics["seconds_per_update"])
for h in history[:: max(1, len(history) // 10)]:
    print(f"update {h['step']:4d}  score {h['objective/scores']:+.3f}  KL {h['objective/kl']:.3f}")"""),
        md("""## What 8-bit bought

The PPO base as it was loaded: how many linear layers are int8, and the model's weight footprint in 8-bit against
the same weights unquantised. On a GPU, the peak memory of each step is in `results` (`*_peak_gb`)."""),
        code("""from rlhf_hf.modeling import load_causal_lm
from rlhf_hf.ppo.config import PPORecipeConfig
from transformers import AutoModelForCausalLM

quantised = load_causal_lm(PPORecipeConfig(model_name_or_path=sft_dir, output_dir=str(run / "tmp"), **QUANT))
full = AutoModelForCausalLM.from_pretrained(sft_dir)
results.update(
    int8_linear_layers=sum(type(m).__name__ == "Linear8bitLt" for m in quantised.modules()),
    footprint_quantised_mb=quantised.get_memory_footprint() / 2**20,
    footprint_full_mb=full.get_memory_footprint() / 2**20,
)
del quantised, full
print(json.dumps(results))"""),
        md("""## Next

- `rlhf-hf export --model <run>/ppo/merged --output my-model` writes a plain Hugging Face model dir + model card.
- More GPUs: the same recipes under `accelerate launch --config_file recipes/accelerate/zero3.yaml` (see the README,
  "Scaling"); drop the 8-bit base there (ZeRO shards a bf16 model instead)."""),
    ]


def write(name: str, cells: list) -> None:
    nb = nbf.v4.new_notebook(cells=cells, metadata=KERNEL)
    nbf.write(nb, Path(__file__).with_name(name))


if __name__ == "__main__":
    write("01_rlhf_walkthrough.ipynb", walkthrough())
    write("02_consumer_gpu.ipynb", consumer_gpu())
