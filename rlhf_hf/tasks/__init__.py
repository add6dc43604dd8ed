"""Tasks by name. Only this package imports a concrete task; everything else asks `get_task(name)`."""

from __future__ import annotations

from collections.abc import Callable

from .base import Judge, Prompt, SimulatedLabeller, Task, last_user_turn, user_turns

# name -> factory; factories import lazily so `import rlhf_hf.tasks` stays cheap.
_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    _REGISTRY[name] = factory


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str | None) -> Task | None:
    """The task called `name`, or None for no task (then no gold metrics are computed)."""
    if name is None or name == "" or name == "none":
        return None
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())} (or none)")
    return _REGISTRY[name]()


def _chat_task() -> Task:
    from .chat import ChatTask

    return ChatTask()


register_task("tiny-chat", _chat_task)

__all__ = [
    "Judge",
    "Prompt",
    "SimulatedLabeller",
    "Task",
    "get_task",
    "last_user_turn",
    "register_task",
    "task_names",
    "user_turns",
]
