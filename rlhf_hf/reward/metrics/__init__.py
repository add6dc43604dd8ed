"""Local ``evaluate`` metric modules for reward models, loadable offline."""

from __future__ import annotations

from pathlib import Path

import evaluate

__all__ = ["METRICS", "load_metric"]

_HERE = Path(__file__).resolve().parent
METRICS = ("kendall_tau", "pairwise_accuracy")


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` on the bundled script directory, so no Hub access is needed."""
    if name not in METRICS:
        raise ValueError(f"unknown reward metric {name!r}; available: {list(METRICS)}")
    return evaluate.load(str(_HERE / name), **kwargs)
