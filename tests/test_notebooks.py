"""The walkthrough notebook runs top to bottom on the embedded default and shows RLHF working."""

from __future__ import annotations

import json

import nbformat
from conftest import ROOT
from nbclient import NotebookClient


def _execute(name: str, parameters: str, tmp_path) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert nb.cells[1].source.startswith("# Parameters")  # the tests own this cell
    nb.cells[1].source = parameters
    NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return nb


def _last_json(nb: nbformat.NotebookNode) -> dict:
    for cell in reversed(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                for line in reversed(output.text.strip().splitlines()):
                    if line.startswith("{"):
                        return json.loads(line)
    raise AssertionError("the notebook printed no results")


def test_walkthrough_notebook_runs_and_rlhf_improves_the_gold_score(tmp_path, tiny_base):
    nb = _execute(
        "01_rlhf_walkthrough.ipynb", f'RUN_DIR = "{tmp_path}"\nSEED = 0\nPPO_UPDATES = 40', tmp_path
    )
    r = _last_json(nb)
    assert r["rm_exact_minus_wrong"] > 0.5  # the reward model scores correct answers higher
    assert r["rm_score_last"] > r["rm_score_first"]  # PPO raised the proxy reward ...
    assert r["gold_ppo"] > r["gold_sft"] + 0.02  # ... and the true (gold) score
    assert r["win_rate"] > 0.55 and 0 < r["kl"] < 10
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # reward histogram, PPO curves, SFT vs PPO bars
