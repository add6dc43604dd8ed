"""The embedded default: a tiny Llama, a locally built tokenizer and a synthetic task with a gold judge."""

from .model import TINY_MODEL_ID, build_tiny_model, build_tokenizer, get_tiny_base
from .task import DEFAULT_TASK, SimulatedLabeller, SortTask

__all__ = [
    "DEFAULT_TASK",
    "TINY_MODEL_ID",
    "SimulatedLabeller",
    "SortTask",
    "build_tiny_model",
    "build_tokenizer",
    "get_tiny_base",
]
