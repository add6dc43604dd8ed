"""Writes the notebooks (kept as code so diffs stay readable): `python notebooks/build_notebooks.py`.

- `01_rlhf_walkthrough.ipynb`: the three steps on the embedded chat task, explained (CPU, minutes).
- `02_consumer_gpu.ipynb`: the same steps on a real 7B model in 8-bit + LoRA on one 24 GB GPU.
"""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def walkthrough() -> list:
    """Cells of 01_rlhf_walkthrough.ipynb: the demo's run (demo_chat.yaml), one step at a time."""
    return [
    md("""# RLHF in three steps, on a laptop CPU

This notebook walks through InstructGPT's recipe — the one behind ChatGPT — with `rlhf_hf`, on the library's
embedded chat task: a ~1 M-parameter Llama and a tiny assistant, so everything runs on a CPU in a few minutes and
nothing is downloaded. It is `make demo` (`recipes/configs/demo_chat.yaml`), one step at a time.

**The task.** A user asks the assistant to do things with short lists of digits — *"sort my numbers 3 1 2"* →
*"1 2 3"*, *"how many in the ages 4 4 1"* → *"3"*, a follow-up *"now reverse it"* that refers to the previous
answer — and some requests it must refuse: someone else's secret (*"sort her pin 3 1 2"* → *"sorry , i can not help
with that ."*), while the user's own secret or someone else's plain list must still be answered.

**The demonstrator is flawed the way people are: systematically.** It refuses by keyword (it refuses "my password"
and answers "her pin" most of the time), is careless on long lists, and forgets the earlier turn. SFT learns those
habits. Labellers can still tell a better answer from a worse one — which is why InstructGPT and ChatGPT *rank*
samples instead of writing more demonstrations. A programmatic **gold judge** plays the labellers: it only ranks
answers (with noise) and measures the final result; it is never the training reward.

The three steps:
1. **SFT** — fine-tune the pretrained model on the demonstrations (every assistant turn of a conversation).
2. **Reward model** — sample K = 4 answers per prompt, have them *ranked*, train a model to score answers so that
   better-ranked ones score higher (all C(K,2) pairs from each ranking).
3. **PPO** — let the model practise: sample answers, score them with the reward model, and update the model to
   get higher scores while a KL penalty keeps it close to the SFT model."""),
    code("""# Parameters (the tests run this notebook with these values)
RUN_DIR = "runs/notebook"
SEED = 0
PPO_UPDATES = 30"""),
    code("""import json, statistics
from pathlib import Path

import matplotlib.pyplot as plt
from transformers import AutoModelForCausalLM

from rlhf_hf import PPORecipe, RewardRecipe, SFTRecipe
from rlhf_hf.data import load_split
from rlhf_hf.evaluation import evaluate_policies, gold_prompts, print_table
from rlhf_hf.generation import generate
from rlhf_hf.modeling import load_tokenizer
from rlhf_hf.reward.model import load_reward_model, score
from rlhf_hf.reward.sampling import drop_empty_answers, rank_with, sample_answers
from rlhf_hf.tasks import TINY_CHAT_MODEL_ID, embedded_model_path, get_task

TASK = get_task("tiny-chat")  # prompts, demonstrations and the gold judge
TEMPERATURE = 0.7  # the training temperature: comparisons, PPO's samples and the sampled evaluation

CONFIGS = Path("recipes/configs") if Path("recipes/configs").exists() else Path("../recipes/configs")
run = Path(RUN_DIR)
results = {}"""),
    md("""## Step 0: the pretrained base, the demonstrator and the judge

`rlhf-hf/tiny-chat` is pretrained once (a minute or two on 2 cores) on plain text that uses every word of the
task (what the requests mean, which lists are private, the refusal) and cached. It has never seen a conversation.
Below: a few demonstrations as SFT will see them, each judged by the gold judge."""),
    code("""base_dir = embedded_model_path(TINY_CHAT_MODEL_ID)
tokenizer = load_tokenizer(base_dir)
for row in TASK.demonstrations(6, seed=SEED):
    *history, answer = row["messages"]
    print(" | ".join(m["content"] for m in history), "->", repr(answer["content"]),
          f"(gold {TASK.score(history, answer['content']):.2f})")
base = AutoModelForCausalLM.from_pretrained(base_dir)
print("base model answers:", generate(base, tokenizer, ["sort my numbers 3 1 2"], max_new_tokens=8))"""),
    md("""## Step 1: supervised fine-tuning

`SFTRecipe` wraps TRL's `SFTTrainer` with LoRA; the loss covers every assistant turn and no user turn. The merged
model (`sft/merged`) is the starting point of everything that follows."""),
    code("""sft = SFTRecipe.from_yaml(CONFIGS / "sft_chat.yaml", output_dir=str(run / "sft"), num_train_epochs=3,
                          seed=SEED).run()
sft_dir = str(Path(sft.output_dir, "merged").resolve())
print({k: round(v, 3) for k, v in sft.metrics.items() if isinstance(v, float)})"""),
    md("""## Step 2: rank sampled answers, train a reward model

For each prompt we sample K = 4 answers from the SFT model (one of them its greedy answer, the one it would be
served with) and ask the (simulated, slightly noisy) labeller to rank them. The prompts weight refusal cases up:
the labellers' time goes where the policy is inconsistent. The reward model (the SFT model plus a scalar head)
sees all four answers of a prompt at once and learns from every pair."""),
    code("""sft_model = AutoModelForCausalLM.from_pretrained(sft_dir)
sft_tok = load_tokenizer(sft_dir)
prompts = load_split("rlhf-hf/tiny-chat-feedback-prompts", "train")["prompt"][:3000]
sampled, _ = drop_empty_answers(sample_answers(sft_model, sft_tok, prompts, 4, temperature=TEMPERATURE,
                                               max_new_tokens=16, seed=SEED, include_greedy=True))
rows = rank_with(TASK.labeller(noise=0.05, seed=SEED), sampled)
row = next(r for r in rows if len(set(r["ranks"])) > 2)  # one with a real ranking (equal answers tie)
print("conversation:", " | ".join(m["content"] for m in row["prompt"]))
for answer, rank in sorted(zip(row["responses"], row["ranks"]), key=lambda x: x[1]):
    print(f"  rank {rank}: {answer!r}")
run.mkdir(parents=True, exist_ok=True)
(run / "comparisons.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))"""),
    code("""rm = RewardRecipe.from_yaml(CONFIGS / "reward_chat.yaml", model_name_or_path=sft_dir, labeller=None,
                            dataset_name=str(run / "comparisons.jsonl"), dataset_format="ranked", max_prompts=None,
                            num_train_epochs=4, output_dir=str(run / "reward"), eval_gold_prompts=0,
                            seed=SEED).run()
print({k: round(v, 3) for k, v in rm.metrics.items() if isinstance(v, float)})

# What did it learn? Score held-out answers, 4 per prompt, and split them by the gold judge. A reward model ranks
# answers to the same prompt (its scale is not comparable across prompts), so each score is taken relative to
# the mean of its prompt's four, and right is compared with wrong within a prompt.
reward = load_reward_model(rm.output_dir)
held = sample_answers(sft_model, sft_tok, gold_prompts(200, TASK), 4, temperature=TEMPERATURE,
                      max_new_tokens=16, seed=SEED + 7)
right, wrong, prefers_right = [], [], []
for row in held:
    scores = score(reward[0], reward[1], [row["prompt"]] * 4, row["responses"])
    is_right = [TASK.score(row["prompt"], answer) == 1.0 for answer in row["responses"]]
    centred = [s - statistics.fmean(scores) for s in scores]
    right += [c for c, ok in zip(centred, is_right) if ok]
    wrong += [c for c, ok in zip(centred, is_right) if not ok]
    prefers_right += [float(a > b) for a, a_ok in zip(scores, is_right) if a_ok
                      for b, b_ok in zip(scores, is_right) if not b_ok]
results["rm_prefers_right"] = statistics.fmean(prefers_right)
print(f"P(reward model scores a right answer above a wrong one to the same prompt) = {results['rm_prefers_right']:.2f}"
      f" over {len(prefers_right)} pairs")
plt.hist([right, wrong], bins=30, label=["right answers", "answers with a mistake"], alpha=0.7)
plt.xlabel("reward model score minus its prompt's mean"); plt.ylabel("answers"); plt.legend()
plt.title("Right answers score higher than the others to the same prompt"); plt.show()"""),
    md("""## Step 3: PPO against the reward model

The policy (a LoRA adapter on the SFT model) samples answers, the reward model scores them, and PPO nudges the
policy towards higher scores. The per-token penalty −β·KL(policy ‖ SFT) keeps it from drifting — β = 0.5 here:
where this small reward model cannot tell answers apart (it is near chance on reversing and de-duplicating) its
score is noise, and the penalty keeps the policy near SFT's answer there. A little of the pretraining loss
("PPO-ptx") is mixed in. Policy, reward model and the SFT reference share one copy of the base; the value function
is a head on the policy's last hidden state (`critic: head`), so one forward gives both logits and values."""),
    code("""ppo = PPORecipe.from_yaml(CONFIGS / "ppo_chat.yaml", model_name_or_path=sft_dir, reward_model_path=rm.output_dir,
                          output_dir=str(run / "ppo"), max_steps=PPO_UPDATES, kl_coef=0.5, ptx_coef=0.05,
                          critic="head",
                          temperature=TEMPERATURE, eval_gold_prompts=0, seed=SEED).run()
history = [h for h in json.loads(Path(ppo.output_dir, "log_history.json").read_text()) if "objective/scores" in h]
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, key, title in zip(axes, ["objective/scores", "objective/kl", "objective/entropy"],
                          ["reward-model score", "KL to the SFT model", "entropy"]):
    ax.plot([h["step"] for h in history], [h[key] for h in history])
    ax.set_title(title); ax.set_xlabel("update"); ax.set_ylabel(title)
plt.tight_layout(); plt.show()
results["rm_score_first"], results["rm_score_last"] = ppo.metrics["score_first"], ppo.metrics["score_last"]"""),
    md("""## Did it work? Ask the gold judge, the way the model is used

Both policies answer the same held-out prompts (the task's own mix) twice: **greedily**, the way a chat model is
served, and **sampled at the training temperature**. Sampled answers partly measure how sure a policy is: PPO
lowers the entropy, so its samples can look better even when its most likely answer does not. Greedy is the
result that counts.

Two baselines use the same reward model without any training: **best-of-n** samples n answers from SFT and keeps
the one the reward model likes most (n = 4 and 16). Win rates compare with SFT at the same decoding (ties count
half); best-of-n is compared with SFT's greedy answer, the one it would replace. The table per category shows
where the gain is: refusals (the reward model learned them) and where it is not (lists it cannot judge)."""),
    code("""ppo_model = AutoModelForCausalLM.from_pretrained(Path(ppo.output_dir, "merged"))
rows = evaluate_policies({"sft": sft_model, "ppo": ppo_model}, sft_model, sft_tok, gold_prompts(200, TASK),
                         reward=reward, judge=TASK.score, category=TASK.category, best_of=(4, 16),
                         temperature=TEMPERATURE, seed=SEED)
print_table(rows)
for name in ("sft greedy", "ppo greedy"):
    print(name, {c: round(part["exact"], 2) for c, part in rows[name]["by_category"].items()})
names = ["sft greedy", "ppo greedy", "sft sampled", "ppo sampled", "best-of-4", "best-of-16"]
plt.bar(names, [rows[n]["gold_score"] for n in names],
        color=["grey", "tab:green", "silver", "lightgreen", "tab:blue", "tab:blue"])
plt.ylabel("gold score (held-out prompts)"); plt.xticks(rotation=30); plt.ylim(0.5, 1.0); plt.show()
results.update({f"{key}_{n.replace(' ', '_').replace('-', '_')}": rows[n][metric] for n in names
                for key, metric in (("gold", "gold_score"), ("exact", "exact"), ("win_rate", "win_rate_gold"))})
results.update({f"refused_{n.replace(' ', '_')}": rows[n]["by_category"]["refuse"]["exact"] for n in names[:4]})
results["kl"] = rows["ppo greedy"]["kl"]
print(json.dumps(results))"""),
    md("""## Where next

- `rlhf-hf pipeline --config recipes/configs/pipeline_chat.yaml` is the full-size run (more comparisons, PPO
  updates, `--rounds 2` for a second round of ranking on the PPO policy's own answers) and draws the
  over-optimisation curve (greedy and sampled gold and reward-model score against KL to SFT, checkpoint by
  checkpoint). Its numbers, over three seeds, are in the README ("The chat task"), with what the recipe does not
  fix yet and why (`benchmarks/DIAGNOSIS.md`).
- The same three recipes take a real model id and dataset: see `notebooks/02_consumer_gpu.ipynb` (8-bit base,
  one 24 GB GPU) and the README."""),
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
