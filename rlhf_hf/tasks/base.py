"""The task interface: where prompts, demonstrations, a pretraining corpus and a gold judge come from.

A `Task` is what the embedded defaults are made of (and what a user can supply for their own programmatic
setting). The recipes never import a concrete task: a config names one (`task: tiny-sort`) and
`rlhf_hf.tasks.get_task` builds it. With no task, nothing "gold" is computed; a user can still pass any
`Judge` callable to the evaluation.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# A request: a plain string, or a conversation (TRL messages) that ends in a user turn.
Prompt = str | list[dict]
# A gold judge: score in [0, 1] of `answer` to `prompt`, 1.0 meaning exactly right.
Judge = Callable[[Prompt, str], float]


def user_turns(prompt: Prompt) -> list[str]:
    """The texts of a prompt's user turns, in order."""
    if isinstance(prompt, str):
        return [prompt]
    return [m["content"] for m in prompt if m["role"] == "user"]


def last_user_turn(prompt: Prompt) -> str:
    """The text of the request a prompt ends with."""
    return user_turns(prompt)[-1]


class Task(ABC):
    """A synthetic assistant task with an exact, cheap gold judge.

    Subclasses supply the data generators and the judge; `category` and `labeller` have defaults.
    Every generator is a pure function of `(n, seed)`, so datasets are reproducible.
    """

    name: str = "task"

    @abstractmethod
    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """`n` requests (strings or conversations ending in a user turn) for sampling and evaluation."""

    def scripts(self, n: int, seed: int) -> list[list[str]]:
        """`n` conversation scripts (the user turns alone), for a policy to answer turn by turn: comparison data
        as ChatGPT collected it. By default the user turns of `prompts(n, seed)`."""
        return [user_turns(p) for p in self.prompts(n, seed)]

    @abstractmethod
    def demonstrations(self, n: int, seed: int) -> list[dict]:
        """`n` demonstration rows in TRL's conversational format: `{"messages": [...]}`."""

    @abstractmethod
    def corpus(self, n: int, seed: int) -> list[str]:
        """`n` plain-text lines to pretrain the tiny base on (and PPO-ptx's pretraining data)."""

    @abstractmethod
    def score(self, prompt: Prompt, answer: str) -> float:
        """Gold score in [0, 1] of `answer` to `prompt`; 1.0 iff the answer is exactly right."""

    def vocabulary(self) -> list[str]:
        """Every word the task's prompts, answers and corpus use (for a word-level tiny tokenizer)."""
        return []

    def category(self, prompt: Prompt) -> str:
        """A label to break evaluation results down by (e.g. "sort", "refuse", "follow-up")."""
        return "all"

    def exact(self, prompt: Prompt, answer: str) -> bool:
        return self.score(prompt, answer) == 1.0

    def labeller(self, noise: float = 0.05, seed: int = 0) -> SimulatedLabeller:
        """A noisy simulated labeller that ranks answers by this task's gold judge."""
        return SimulatedLabeller(self.score, noise=noise, seed=seed)


@dataclass
class SimulatedLabeller:
    """Ranks K answers by a judge's score plus Gaussian noise, as a careful but imperfect human would.

    `noise` is the std of the noise added to each quality level before ranking: answers the judge scores equal
    (identical answers above all) tie, as they would for a person, and noise only reorders answers of different
    quality. (Noise drawn per answer ranked equal answers at random: on tiny-chat 35 % of the training pairs were
    such coin flips, and the reward model learned little; benchmarks/DIAGNOSIS.md.)
    """

    judge: Judge
    noise: float = 0.05
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def rank(self, prompt: Prompt, responses: Sequence[str]) -> list[int]:
        """Ranks (1 = best, ties share a rank) for `responses` to `prompt`."""
        scores = [self.judge(prompt, r) for r in responses]
        noise = {s: self._rng.gauss(0.0, self.noise) for s in sorted(set(scores))}
        noisy = [round(s + noise[s], 6) for s in scores]
        order = sorted(set(noisy), reverse=True)
        return [order.index(s) + 1 for s in noisy]

    def __call__(self, prompt: Prompt, responses: Sequence[str]) -> list[int]:
        return self.rank(prompt, responses)
