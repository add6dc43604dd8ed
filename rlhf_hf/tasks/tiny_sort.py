"""The embedded synthetic assistant task: "sort these digits".

Why this task: answering (sorting) is hard for a 2M-parameter model, while judging an answer (is it a sorted
permutation of the input?) is a few lines of exact code, as labelling is easier than writing for humans. The
demonstrations are deliberately sloppy, so SFT learns an imperfect policy and RL has room to improve on it.
The gold judge is used only to rank sampled answers (a simulated labeller with noise) and to evaluate, never as
a training reward.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Prompt, Task, last_user_turn

DIGITS = [str(d) for d in range(10)]
INSTRUCTIONS = ["sort", "order"]  # two phrasings of the same request
CORPUS_WORDS = ["numbers", "sorted", ":", "."]


@dataclass(frozen=True)
class SortTask(Task):
    """Prompt/answer generator, sloppy demonstrator and gold judge for the digit-sorting task."""

    name = "tiny-sort"  # a class attribute (no annotation): not a dataclass field, so not in repr (cache key)

    min_len: int = 3
    max_len: int = 6
    demo_error_rate: float = 0.5  # fraction of demonstrations that contain one mistake
    corpus_error_rate: float = 0.1  # the "internet" is mostly right

    # ---------------------------------------------------------------- prompts and answers
    def sample_digits(self, rng: random.Random) -> list[str]:
        return [rng.choice(DIGITS) for _ in range(rng.randint(self.min_len, self.max_len))]

    def prompt_text(self, digits: Sequence[str], rng: random.Random) -> str:
        return f"{rng.choice(INSTRUCTIONS)} {' '.join(digits)}"

    @staticmethod
    def digits_of(prompt: str) -> list[str]:
        """The digits a prompt asks to sort (the judge reads them back from the prompt text)."""
        return [t for t in prompt.split() if t in DIGITS]

    @staticmethod
    def correct_answer(digits: Sequence[str]) -> str:
        return " ".join(sorted(digits))

    def corrupt(self, answer: Sequence[str], rng: random.Random) -> list[str]:
        """One plausible mistake: two neighbours swapped, an item dropped or duplicated, a digit miscopied."""
        out = list(answer)
        kind = rng.choice(["swap", "drop", "duplicate", "replace"])
        i = rng.randrange(len(out))
        if kind == "swap" and len(out) > 1:
            i = min(i, len(out) - 2)
            if out[i] == out[i + 1]:  # swapping equal digits is no mistake: miscopy instead
                out[i] = str((int(out[i]) + 1) % 10)
            else:
                out[i], out[i + 1] = out[i + 1], out[i]
        elif kind == "drop" and len(out) > 1:
            del out[i]
        elif kind == "duplicate":
            out.insert(i, out[i])
        else:
            out[i] = rng.choice([d for d in DIGITS if d != out[i]])
        return out

    def demonstration(self, digits: Sequence[str], rng: random.Random) -> str:
        answer = sorted(digits)
        if rng.random() < self.demo_error_rate:
            answer = self.corrupt(answer, rng)
        return " ".join(answer)

    # ---------------------------------------------------------------- the gold judge
    def score(self, prompt: Prompt, answer: str) -> float:
        """Gold score in [0, 1]: 1.0 iff the answer is the sorted input, partial credit otherwise.

        Half the credit is the multiset F1 between answer tokens and input digits (nothing lost, nothing invented),
        half the fraction of neighbouring answer tokens in non-decreasing order.
        """
        want = Counter(self.digits_of(last_user_turn(prompt)))
        got_tokens = answer.split()
        if not got_tokens or not want:
            return 0.0
        got = Counter(got_tokens)
        overlap = sum((want & got).values())
        precision, recall = overlap / len(got_tokens), overlap / sum(want.values())
        f1 = 0.0 if overlap == 0 else 2 * precision * recall / (precision + recall)
        if len(got_tokens) == 1:
            in_order = 1.0
        else:
            pairs = list(zip(got_tokens, got_tokens[1:], strict=False))
            in_order = sum(a in DIGITS and b in DIGITS and a <= b for a, b in pairs) / len(pairs)
        return 0.5 * f1 + 0.5 * in_order

    # ---------------------------------------------------------------- datasets
    def prompts(self, n: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        return [self.prompt_text(self.sample_digits(rng), rng) for _ in range(n)]

    def demonstrations(self, n: int, seed: int) -> list[dict]:
        """Conversational demonstrations, in TRL's `messages` format."""
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            digits = self.sample_digits(rng)
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": self.prompt_text(digits, rng)},
                        {"role": "assistant", "content": self.demonstration(digits, rng)},
                    ]
                }
            )
        return rows

    def corpus(self, n: int, seed: int) -> list[str]:
        """Plain-text "pretraining" lines (no chat format), also the PPO-ptx data."""
        rng = random.Random(seed)
        lines = []
        for _ in range(n):
            digits = self.sample_digits(rng)
            answer = sorted(digits)
            if rng.random() < self.corpus_error_rate:
                answer = self.corrupt(answer, rng)
            lines.append(f"numbers {' '.join(digits)} sorted : {' '.join(answer)} .")
        return lines

    def vocabulary(self) -> list[str]:
        return DIGITS + INSTRUCTIONS + CORPUS_WORDS

    def category(self, prompt: Prompt) -> str:
        return "sort"


DEFAULT_TASK = SortTask()

__all__ = ["DEFAULT_TASK", "SortTask"]
