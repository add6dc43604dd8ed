"""Pairwise accuracy of a reward model against gold rankings, as an ``evaluate`` metric.

Self-contained on purpose: ``evaluate.load`` copies this script into its module cache, where the
``rlhf_hf`` package may not be importable.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Fraction of non-tied gold pairs (w ranked better than l) whose predicted rewards are ordered the same
way, pooled over all pairs of all prompts (the reward model's training accuracy, on held-out data).
A tie in the prediction counts as 0.5 (a coin flip); tied gold pairs are not counted.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per prompt, the predicted reward of each answer.
    references (list of list of int): per prompt, the gold rank of each answer (1 = best, ties allowed).
Returns:
    pairwise_accuracy (float): in [0, 1]; NaN when no gold pair is untied.
    pairs (int): number of gold pairs counted.
Examples:
    >>> metric = evaluate.load("rlhf_hf/reward/metrics/pairwise_accuracy")
    >>> metric.compute(predictions=[[2.0, 1.0, 0.5]], references=[[1, 2, 3]])
    {'pairwise_accuracy': 1.0, 'pairs': 3}
"""

_CITATION = """
@article{ouyang2022training,
  title={Training language models to follow instructions with human feedback},
  author={Ouyang, Long and others},
  journal={arXiv preprint arXiv:2203.02155},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PairwiseAccuracy(evaluate.Metric):
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
        credit, pairs = 0.0, 0
        for i, (pred, gold) in enumerate(zip(predictions, references, strict=True)):
            pred, gold = np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
            if pred.shape != gold.shape:
                raise ValueError(f"prompt {i}: {pred.size} predictions for {gold.size} gold ranks")
            better = gold[:, None] < gold[None, :]
            # sign of r_w - r_l over gold pairs: +1 right, 0 tie, -1 wrong -> credit 1, 0.5, 0
            credit += float(((np.sign(pred[:, None] - pred[None, :])[better] + 1) / 2).sum())
            pairs += int(better.sum())
        return {"pairwise_accuracy": credit / pairs if pairs else float("nan"), "pairs": pairs}
