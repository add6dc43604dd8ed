"""Kendall's tau-b between predicted rewards and gold rankings, as an ``evaluate`` metric.

Self-contained on purpose: ``evaluate.load`` copies this script into its module cache, where the
``rlhf_hf`` package may not be importable. Tau-b is implemented here to avoid a scipy dependency.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Mean over prompts of Kendall's tau-b between the predicted rewards and the gold preference (-rank),
so 1.0 is a perfect ranking and -1.0 the reversed one. Tau-b corrects for ties on either side.
A prompt whose gold ranks are all tied carries no ordering and is skipped; a prompt whose predicted
rewards are all equal gets 0 (no ordering predicted) rather than being skipped, so a collapsed
reward model cannot look good by abstaining.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per prompt, the predicted reward of each answer.
    references (list of list of int): per prompt, the gold rank of each answer (1 = best, ties allowed).
Returns:
    kendall_tau (float): in [-1, 1]; NaN when every prompt was skipped.
    prompts (int): number of prompts averaged.
Examples:
    >>> metric = evaluate.load("rlhf_hf/reward/metrics/kendall_tau")
    >>> metric.compute(predictions=[[0.1, 0.2, 0.3]], references=[[1, 2, 3]])
    {'kendall_tau': -1.0, 'prompts': 1}
"""

_CITATION = """
@article{kendall1945treatment,
  title={The treatment of ties in ranking problems},
  author={Kendall, Maurice G},
  journal={Biometrika},
  volume={33},
  number={3},
  pages={239--251},
  year={1945}
}
"""


def tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """(concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y)) over the n0 = C(n, 2) pairs."""
    upper = np.triu_indices(len(x), k=1)
    dx = np.sign(x[:, None] - x[None, :])[upper]
    dy = np.sign(y[:, None] - y[None, :])[upper]
    untied_x, untied_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if untied_y == 0:
        return float("nan")
    if untied_x == 0:
        return 0.0
    return float((dx * dy).sum()) / math.sqrt(untied_x * untied_y)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KendallTau(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, predictions, references) -> dict:
        taus = []
        for i, (pred, gold) in enumerate(zip(predictions, references, strict=True)):
            pred, gold = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
            if pred.shape != gold.shape:
                raise ValueError(f"prompt {i}: {pred.size} predictions for {gold.size} gold ranks")
            tau = tau_b(pred, -gold)
            if not math.isnan(tau):
                taus.append(tau)
        return {"kendall_tau": float(np.mean(taus)) if taus else float("nan"), "prompts": len(taus)}
