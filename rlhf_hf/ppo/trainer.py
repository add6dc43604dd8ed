"""PPOTrainer: InstructGPT's RL step on `transformers.Trainer`'s machinery.

`train()` is the PPO loop; everything around it is Trainer's: Accelerate preparation, the optimizer and LR
scheduler, callbacks and loggers (`self.log`, tensorboard via `report_to`), checkpoint files (optimizer,
scheduler, RNG, trainer_state.json) and their loading. One `global_step` is one PPO update:

    rollout (sample answers, score them, no-grad log-probs/values)
      -> rewards (score on the last token - beta * KL on every token)
      -> GAE advantages and returns
      -> num_ppo_epochs x num_mini_batches optimizer steps (clipped policy + value loss [+ PPO-ptx LM loss])
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback
from transformers.integrations import TensorBoardCallback
from transformers.trainer import SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState, TrainerState
from transformers.trainer_utils import TrainOutput

from ..generation import as_messages, decode_answers, encode_prompts, sampling_config
from ..outputs import AtomicCheckpoints, resolve_checkpoint
from ..reward.model import conversation_batch
from . import core
from .config import PPORecipeConfig
from .roles import PPOModel

logger = logging.getLogger(__name__)

PPO_STATE_FILE = "ppo_state.json"
SAMPLES_FILE = "samples.jsonl"


class IndexStream:
    """Batches of dataset indices from a seeded permutation per epoch.

    Its position is its whole state, so a resumed run reads exactly the batches the uninterrupted run would.
    """

    def __init__(self, n: int, batch_size: int, seed: int, position: int = 0) -> None:
        if n == 0:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n, self.batch_size, self.seed, self.position = n, batch_size, seed, position
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def next(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(self.position, self.n)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
            take = min(self.batch_size - len(out), self.n - offset)
            out += self._perm[offset : offset + take].tolist()
            self.position += take
        return out


@dataclass
class Rollout:
    """One batch of sampled answers and everything PPO computes about them before any update."""

    prompts: list
    input_ids: Tensor  # [B, P + T]: left-padded prompt | answer (pad after the first eos)
    attention_mask: Tensor  # [B, P + T]: real prompt tokens and real answer tokens
    answer_ids: Tensor  # [B, T]
    answer_mask: Tensor  # [B, T] float, 1 on real answer tokens (up to and including the first eos)
    has_eos: Tensor  # [B]
    logprobs: Tensor  # [B, T] policy log-probs at sampling time (pi_old)
    ref_logprobs: Tensor  # [B, T] the SFT model's
    entropy: Tensor  # [B, T]
    values: Tensor  # [B, T]
    raw_scores: Tensor  # [B] the reward model's output
    scores: Tensor  # [B] after normalisation, clipping and the missing-eos penalty
    generation_seconds: float
    scoring_seconds: float

    @property
    def answer_width(self) -> int:
        return self.answer_ids.shape[1]


class PPOTrainer(AtomicCheckpoints, Trainer):
    """PPO with the roles of a `PPOModel` (policy, value, reward, reference on one base)."""

    def __init__(
        self,
        model: PPOModel,
        args: PPORecipeConfig,
        processing_class: PreTrainedTokenizerBase,
        train_dataset: Dataset,
        ptx_dataset: Dataset | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        super().__init__(
            model=model,
            args=args,
            processing_class=processing_class,
            train_dataset=train_dataset,
            callbacks=callbacks,
        )
        if self.is_fsdp_enabled:
            raise NotImplementedError(
                "PPO under FSDP is untested (accelerate runs FSDP on GPUs only): use recipes/accelerate/"
                "multi_gpu.yaml (DDP), zero2.yaml or zero3.yaml"
            )
        self.ptx_dataset = ptx_dataset if args.ptx_coef > 0 else None
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.global_rollout_batch_size = args.rollout_batch_size * world
        if args.max_steps > 0:
            self.max_updates = args.max_steps
        else:
            self.max_updates = math.ceil(
                args.num_train_epochs * len(train_dataset) / self.global_rollout_batch_size
            )
        self.prompt_stream = IndexStream(len(train_dataset), self.global_rollout_batch_size, args.seed)
        self.ptx_stream = (
            IndexStream(len(self.ptx_dataset), args.ptx_batch_size, args.seed + 1 + rank)
            if self.ptx_dataset is not None
            else None
        )
        self.kl_ctl = (
            core.AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon)
            if args.adaptive_kl
            else core.FixedKLController(args.kl_coef)
        )
        tokenizer = processing_class
        self.generation_config = sampling_config(
            tokenizer,
            max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.min_new_tokens,
            do_sample=True,
            temperature=args.temperature,
            top_p=args.top_p,
            cache_implementation=args.cache_implementation,
        )
        if args.activation_checkpointing:  # Trainer.train() would do this; our train() replaces it
            kwargs = args.activation_checkpointing_kwargs or {"use_reentrant": False}
            for module in (model.causal_lm, model.value_model):
                if module is not None:
                    module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        if self.is_deepspeed_enabled:
            # Fill the config's "auto" values (batch sizes, clipping, bf16) as Trainer does.
            self.accelerator.state.deepspeed_plugin.hf_ds_config.trainer_config_finalize(
                args, model, self.max_updates
            )
        self.create_optimizer()
        # Without a scheduler: DeepSpeed would step it per optimizer step, and our schedule counts PPO updates.
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        # The scheduler on the prepared optimizer, as Trainer does: DeepSpeed replaces the param groups.
        self.create_scheduler(num_training_steps=self.max_updates, optimizer=self.optimizer)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))

    @property
    def roles(self) -> PPOModel:
        return self.accelerator.unwrap_model(self.model_wrapped)

    def clock(self) -> float:
        """Wall time after the GPU's queued work has finished (CUDA runs asynchronously)."""
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    @property
    def is_zero3(self) -> bool:
        return self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3

    @contextlib.contextmanager
    def gathered_parameters(self, trainable_only: bool = False) -> Iterator[None]:
        """Under ZeRO-3, every process holds whole parameters inside (collective: all processes must enter).

        For generation (all parameters, with ZeRO's per-module gather hooks taken off: one gather instead of one
        per layer per token; off with `ds3_gather_for_generation: false`) and for saving the trainable ones.
        A no-op without ZeRO-3.
        """
        if not self.is_zero3 or not (trainable_only or self.args.ds3_gather_for_generation):
            yield
            return
        import deepspeed
        from trl.models.utils import add_hooks, remove_hooks

        params = list(
            self.roles.trainable_parameters() if trainable_only else self.model_wrapped.parameters()
        )
        with deepspeed.zero.GatheredParameters(params):
            if trainable_only:
                yield
                return
            remove_hooks(self.model_wrapped)
            try:
                yield
            finally:
                add_hooks(self.model_wrapped)

    # ================================================================ the PPO loop
    def train(self, resume_from_checkpoint: str | bool | None = None, **_: Any) -> TrainOutput:
        """Run `max_steps` PPO updates (continuing a checkpoint's run when resuming)."""
        args = self.args
        self._init_state()
        if self.accelerator.process_index > 0:  # own sampling noise (rank 0 keeps the 1-process stream)
            torch.manual_seed(args.seed + 100_003 * self.accelerator.process_index)
        checkpoint = resolve_checkpoint(resume_from_checkpoint, args.output_dir)
        if checkpoint is not None:
            self._resume(checkpoint)
        self.is_in_train = True
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        metrics: dict[str, float] = {}
        while self.state.global_step < self.state.max_steps and not self.control.should_training_stop:
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            start = self.clock()

            # 1. rollout: sample answers to a batch of prompts, score them, remember pi_old / ref / V
            rollout = self.rollout(self.next_prompts())
            # 2. per-token rewards: -beta * KL everywhere, the score on the last answer token
            rewards, kl = core.compute_rewards(
                rollout.scores,
                rollout.logprobs,
                rollout.ref_logprobs,
                rollout.answer_mask,
                self.kl_ctl.value,
                args.kl_estimator,
            )
            # 3. advantages: GAE over the answer tokens, whitened over the batch
            advantages, returns = core.gae(rewards, rollout.values, rollout.answer_mask, args.gamma, args.lam)
            advantages = core.masked_whiten(advantages, rollout.answer_mask, reduce=self.global_sum)
            advantages = advantages * rollout.answer_mask
            # 4. num_ppo_epochs x num_mini_batches optimizer steps on this batch
            epochs_start = self.clock()
            update_stats = self.ppo_epochs(rollout, advantages, returns)
            end = self.clock()

            metrics = self.update_metrics(rollout, kl, returns, update_stats, end - start)
            metrics["perf/seconds_ppo_epochs"] = end - epochs_start
            self.kl_ctl.update(metrics["objective/kl"], self.global_rollout_batch_size)
            self.lr_scheduler.step()
            self.state.global_step += 1
            self.state.epoch = (
                self.state.global_step * self.global_rollout_batch_size / len(self.train_dataset)
            )
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_log:
                self.log(dict(metrics))
            if args.sample_every and (self.state.global_step - 1) % args.sample_every == 0:
                self.log_samples(rollout)
            if self.control.should_save:
                self._save_checkpoint(self.model_wrapped, trial=None)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        self.is_in_train = False
        return TrainOutput(self.state.global_step, metrics.get("loss/total", float("nan")), metrics)

    # ---------------------------------------------------------------- 1. rollout
    def next_prompts(self) -> list:
        """This process's share of the next global batch of prompts."""
        indices = self.prompt_stream.next()
        local = self.args.rollout_batch_size
        mine = indices[self.accelerator.process_index * local : (self.accelerator.process_index + 1) * local]
        return list(self.train_dataset.select(mine)["prompt"])

    @torch.no_grad()
    def rollout(self, prompts: Sequence) -> Rollout:
        """Sample answers, then score them in batched no-grad forwards (policy, reference, value, reward)."""
        args, roles, tokenizer = self.args, self.roles, self.processing_class
        device = self.accelerator.device
        fixed = args.max_prompt_length if args.cache_implementation == "static" else None
        batch = encode_prompts(tokenizer, prompts, pad_to=fixed).to(device)
        self.model_wrapped.eval()  # sampling keeps its KV cache even when training uses checkpointing
        start = self.clock()
        with self.gathered_parameters(), self.accelerator.autocast():
            sequences = roles.generate(
                batch["input_ids"],
                batch["attention_mask"],
                self.generation_config,
                merge=args.merge_adapter_for_generation,
                batch_size=args.generation_batch_size,
            )
        generation_seconds = self.clock() - start
        width = batch["input_ids"].shape[1]
        answer_ids = sequences[:, width:]
        # Everything after the first eos is not part of the answer, whatever its id (pad may equal eos).
        texts, lengths, has_eos = decode_answers(tokenizer, answer_ids)
        answer_mask = torch.arange(answer_ids.shape[1], device=device) < lengths[:, None]
        answer_ids = answer_ids.masked_fill(~answer_mask, tokenizer.pad_token_id)
        input_ids = torch.cat([batch["input_ids"], answer_ids], dim=1)
        attention_mask = torch.cat([batch["attention_mask"], answer_mask.long()], dim=1)
        # The reward model scores the conversation as the RM stage does: the templated prompt + answer text (with
        # whatever the template puts after the answer's eos, e.g. ChatML's "\n"), read at the same position.
        conversations = {k: v.to(device) for k, v in conversation_batch(tokenizer, prompts, texts).items()}

        parts: dict[str, list[Tensor]] = {
            k: [] for k in ("logprobs", "ref_logprobs", "entropy", "values", "raw")
        }
        chunk = args.rollout_forward_batch_size or len(prompts)
        T, temperature = answer_ids.shape[1], args.temperature
        for i in range(0, len(prompts), chunk):
            ids, mask, labels = (
                input_ids[i : i + chunk],
                attention_mask[i : i + chunk],
                answer_ids[i : i + chunk],
            )
            with self.accelerator.autocast():
                logits, values = roles.policy(ids, mask, T)
                parts["logprobs"].append(core.logprobs_from_logits(logits, labels, temperature))
                parts["entropy"].append(core.entropy_from_logits(logits, temperature))
                del logits
                ref_logits = roles.reference(ids, mask, T)
                parts["ref_logprobs"].append(core.logprobs_from_logits(ref_logits, labels, temperature))
                del ref_logits
                if values is None:
                    values = roles.values(ids, mask, T)
                parts["values"].append(values.float())
                parts["raw"].append(
                    roles.scores(
                        conversations["input_ids"][i : i + chunk],
                        conversations["attention_mask"][i : i + chunk],
                    )
                )
        cat = {k: torch.cat(v) for k, v in parts.items()}
        scoring_seconds = self.clock() - start - generation_seconds
        mask_f = answer_mask.float()
        return Rollout(
            prompts=list(prompts),
            input_ids=input_ids,
            attention_mask=attention_mask,
            answer_ids=answer_ids,
            answer_mask=mask_f,
            has_eos=has_eos,
            logprobs=cat["logprobs"] * mask_f,
            ref_logprobs=cat["ref_logprobs"] * mask_f,
            entropy=cat["entropy"] * mask_f,
            values=cat["values"] * mask_f,
            raw_scores=cat["raw"],
            scores=self.shape_scores(cat["raw"], has_eos),
            generation_seconds=generation_seconds,
            scoring_seconds=scoring_seconds,
        )

    def shape_scores(self, raw: Tensor, has_eos: Tensor) -> Tensor:
        """`core.shape_scores` with this run's settings and the RM's stored statistics."""
        args, stats = self.args, self.roles.reward_stats
        return core.shape_scores(
            raw,
            has_eos,
            stats=stats if args.normalize_reward else None,
            clip=args.reward_clip,
            missing_eos_penalty=args.missing_eos_penalty,
        )

    @property
    def global_sum(self) -> core.Reduce | None:
        """A sum over processes for `core`'s statistics (None on one process): whitening per process would give
        each shard its own advantage scale."""
        if self.accelerator.num_processes == 1:
            return None
        return lambda t: self.accelerator.reduce(t, "sum")

    # ---------------------------------------------------------------- 4. PPO epochs
    def ppo_epochs(self, rollout: Rollout, advantages: Tensor, returns: Tensor) -> dict[str, Tensor]:
        """Clipped-surrogate updates: per epoch a fresh shuffle, one optimizer step per minibatch."""
        args, accelerator = self.args, self.accelerator
        model, trainable = self.model_wrapped, list(self.roles.trainable_parameters())
        n = len(rollout.prompts)
        stats: list[dict[str, Tensor]] = []
        epochs_done = 0
        self.model_wrapped.train()
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(n).to(rollout.input_ids.device)
            epoch_stats: list[dict[str, Tensor]] = []
            for minibatch in order.split(args.minibatch_size):
                micros = minibatch.split(args.per_device_train_batch_size)
                for i, idx in enumerate(micros):
                    sync = i == len(micros) - 1
                    # As Trainer does: gradients are all-reduced on the last microbatch only.
                    accelerator.gradient_state._set_sync_gradients(sync)
                    with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                        epoch_stats.append(self.ppo_micro_step(rollout, advantages, returns, idx))
                if args.max_grad_norm and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                self.optimizer.step()
                self.control = self.callback_handler.on_optimizer_step(args, self.state, self.control)
                self.optimizer.zero_grad(set_to_none=True)
            stats += epoch_stats
            epochs_done += 1
            if args.target_approx_kl is not None:
                approxkl = accelerator.reduce(
                    torch.stack([s["approxkl"] for s in epoch_stats]).mean(), "mean"
                )
                if approxkl.item() > args.target_approx_kl:
                    break
        out = {k: torch.stack([s[k] for s in stats]).mean() for k in stats[0]}
        out["ppo_epochs"] = torch.tensor(float(epochs_done), device=out["loss"].device)
        return out

    def ppo_micro_step(
        self, rollout: Rollout, advantages: Tensor, returns: Tensor, idx: Tensor
    ) -> dict[str, Tensor]:
        """Forward + backward of one microbatch; returns detached stats."""
        args = self.args
        mask = rollout.answer_mask[idx]
        ptx = self.next_ptx_batch()
        out = self.model_wrapped(
            rollout.input_ids[idx], rollout.attention_mask[idx], rollout.answer_width, **ptx
        )
        logprobs = core.logprobs_from_logits(out["logits"], rollout.answer_ids[idx], args.temperature)
        pg_loss, pg_stats = core.policy_loss(
            logprobs, rollout.logprobs[idx], advantages[idx], mask, args.cliprange
        )
        vf_loss, vf_stats = core.value_loss(
            out["values"].float(), rollout.values[idx], returns[idx], mask, args.cliprange_value
        )
        loss = pg_loss + args.vf_coef * vf_loss
        if "ptx_loss" in out:
            loss = loss + args.ptx_coef * out["ptx_loss"]
        # Trainer's accelerator counts one accumulation step, so averaging over microbatches is ours to do
        # (DeepSpeed would divide by its own gradient_accumulation_steps again: told not to, as Trainer does).
        kwargs = {"scale_wrt_gas": False} if self.is_deepspeed_enabled else {}
        self.accelerator.backward(loss / args.gradient_accumulation_steps, **kwargs)
        stats = {"loss": loss.detach(), "pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach()}
        if "ptx_loss" in out:
            stats["ptx_loss"] = out["ptx_loss"].detach()
        return stats | pg_stats | vf_stats

    def next_ptx_batch(self) -> dict[str, Tensor]:
        """A right-padded batch of PPO-ptx text for the policy's LM loss (empty when ptx is off)."""
        if self.ptx_stream is None:
            return {}
        tokenizer = self.processing_class
        texts = self.ptx_dataset.select(self.ptx_stream.next())["text"]
        side, tokenizer.padding_side = tokenizer.padding_side, "right"
        try:
            batch = tokenizer(
                [t + tokenizer.eos_token for t in texts],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.args.ptx_max_length,
            ).to(self.accelerator.device)
        finally:
            tokenizer.padding_side = side
        return {"ptx_input_ids": batch["input_ids"], "ptx_attention_mask": batch["attention_mask"]}

    # ---------------------------------------------------------------- metrics and samples
    def update_metrics(
        self, rollout: Rollout, kl: Tensor, returns: Tensor, stats: dict[str, Tensor], seconds: float
    ) -> dict[str, float]:
        """Per-update metrics (TRL's names where TRL has them), averaged over processes."""
        mask = rollout.answer_mask
        kl_per_answer = kl.sum(1).mean()
        non_score = -self.kl_ctl.value * kl_per_answer
        values = {
            "objective/scores": rollout.scores.mean(),
            "objective/raw_scores": rollout.raw_scores.mean(),
            "objective/kl": kl_per_answer,
            "objective/kl_per_token": core.masked_mean(kl, mask),
            "objective/entropy": core.masked_mean(rollout.entropy, mask),
            "objective/non_score_reward": non_score,
            "objective/rlhf_reward": rollout.scores.mean() + non_score,
            "policy/approxkl": stats["approxkl"],
            "policy/clipfrac": stats["clipfrac"],
            "policy/ratio": stats["ratio_mean"],
            "loss/policy": stats["pg_loss"],
            "loss/value": stats["vf_loss"],
            "loss/total": stats["loss"],
            "val/clipfrac": stats["vf_clipfrac"],
            "val/mean": core.masked_mean(rollout.values, mask),
            "val/explained_variance": core.explained_variance(rollout.values, returns, mask, self.global_sum),
            "answer/mean_length": mask.sum(1).mean(),
            "answer/eos_fraction": rollout.has_eos.float().mean(),
            "policy/ppo_epochs": stats["ppo_epochs"],
        }
        if "ptx_loss" in stats:
            values["ptx/loss"] = stats["ptx_loss"]
        names = list(values)
        device = self.accelerator.device
        reduced = self.accelerator.reduce(torch.stack([values[k].float().to(device) for k in names]), "mean")
        metrics = dict(zip(names, reduced.tolist(), strict=True))
        tokens = self.accelerator.reduce(mask.sum().to(device), "sum").item()
        metrics["perf/generated_tokens_per_s"] = tokens / max(rollout.generation_seconds, 1e-9)
        metrics["perf/seconds_generate"] = rollout.generation_seconds
        metrics["perf/seconds_score"] = rollout.scoring_seconds
        metrics["perf/seconds_per_update"] = seconds
        metrics["beta"] = self.kl_ctl.value
        metrics["lr"] = self.lr_scheduler.get_last_lr()[0]
        metrics["episode"] = (self.state.global_step + 1) * self.global_rollout_batch_size
        return metrics

    def log_samples(self, rollout: Rollout) -> None:
        """A few (prompt, answer, score) rows to `<output_dir>/samples.jsonl` and, if enabled, tensorboard."""
        if not self.is_world_process_zero():
            return
        tokenizer, n = self.processing_class, self.args.num_samples
        rows = []
        for i in range(min(n, len(rollout.prompts))):
            length = int(rollout.answer_mask[i].sum())
            rows.append(
                {
                    "step": self.state.global_step,
                    "prompt": as_messages(rollout.prompts[i])[-1]["content"],
                    "answer": tokenizer.decode(
                        rollout.answer_ids[i, :length], skip_special_tokens=True
                    ).strip(),
                    "score": round(rollout.raw_scores[i].item(), 4),
                }
            )
        out = Path(self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / SAMPLES_FILE, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        table = "| prompt | answer | score |\n|---|---|---|\n" + "".join(
            f"| {r['prompt']} | {r['answer']} | {r['score']} |\n" for r in rows
        )
        for (
            callback
        ) in self.callback_handler.callbacks:  # its writer was opened by on_train_begin (process 0)
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                callback.tb_writer.add_text("samples", table, self.state.global_step)

    # ================================================================ state, checkpoints, resume
    def _init_state(self) -> None:
        self.state = TrainerState(
            stateful_callbacks=[
                cb
                for cb in self.callback_handler.callbacks + [self.control]
                if isinstance(cb, ExportableState)
            ]
        )
        self.state.train_batch_size = self.args.rollout_batch_size
        self.state.compute_steps(self.args, self.max_updates)
        self.state.init_training_references(self, self.max_updates, 1, None)

    def _resume(self, checkpoint: str) -> None:
        """Adapters/heads, optimizer, scheduler, trainer state, beta, data positions, then the RNG states."""
        if not Path(checkpoint, PPO_STATE_FILE).exists():
            raise ValueError(f"{checkpoint} is not a PPO checkpoint (no {PPO_STATE_FILE})")
        if self.is_deepspeed_enabled:
            # The engine's checkpoint: trainable weights + (sharded) optimizer state.
            from transformers.integrations.deepspeed import deepspeed_load_checkpoint

            deepspeed_load_checkpoint(self.model_wrapped, checkpoint, load_module_strict=False)
        else:
            self._load_from_checkpoint(checkpoint)
        self._load_optimizer_and_scheduler(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
        self._load_callback_state()  # stateful callbacks (e.g. early stopping), as Trainer's resume does
        self.state.compute_steps(self.args, self.max_updates)
        self.state.init_training_references(self, self.max_updates, 1, None)
        extra = json.loads(Path(checkpoint, PPO_STATE_FILE).read_text())
        self.kl_ctl.load_state_dict(extra["kl_controller"])
        self.prompt_stream.position = extra["prompt_position"]
        if self.ptx_stream is not None and extra.get("ptx_position") is not None:
            self.ptx_stream.position = extra["ptx_position"]
        self._drop_replayed_samples()
        self._load_rng_state(checkpoint)  # last: nothing after it may draw random numbers before update 1

    def _drop_replayed_samples(self) -> None:
        """Sample rows logged after the checkpoint's step are logged again by the updates resuming replays."""
        path = Path(self.args.output_dir, SAMPLES_FILE)
        if not self.is_world_process_zero() or not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line)["step"] <= self.state.global_step]
        if len(kept) < len(lines):
            path.write_text("".join(kept))

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: torch.nn.Module | None = None
    ) -> None:
        self.roles.load_trainable(Path(resume_from_checkpoint))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The trainable parts (policy adapter, critic) and the tokenizer; the frozen base is never copied."""
        output_dir = Path(output_dir or self.args.output_dir)
        self.accelerator.wait_for_everyone()
        with self.gathered_parameters(trainable_only=True):  # ZeRO-3: gathered on every process, one writes
            if self.args.should_save:
                self.roles.save_trainable(output_dir)
                self.processing_class.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.is_deepspeed_enabled:
            return super()._save_optimizer_and_scheduler(output_dir)
        # The engine's checkpoint without the frozen base (Trainer only drops it for a PeftModel), + our scheduler.
        self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def save_extra_state(self, checkpoint_dir: Path) -> None:
        """PPO's own state next to Trainer's checkpoint files: KL controller and data positions."""
        extra = {
            "kl_controller": self.kl_ctl.state_dict(),
            "prompt_position": self.prompt_stream.position,
            "ptx_position": self.ptx_stream.position if self.ptx_stream is not None else None,
        }
        (checkpoint_dir / PPO_STATE_FILE).write_text(json.dumps(extra, indent=2))
