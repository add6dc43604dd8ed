"""Shared test set-up: offline, a repo-local cache for the tiny base, and one SFT run per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from paths import ROOT, SFT_TINY_YAML

os.environ.setdefault("RLHF_HF_CACHE", str(ROOT / ".cache" / "rlhf_hf"))
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded at test time
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where there is no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    from rlhf_hf.tasks.tiny.model import get_tiny_base

    return get_tiny_base()


@pytest.fixture(scope="session")
def tiny_chat_base() -> Path:
    """The chat task's tiny base (`rlhf-hf/tiny-chat`), pretrained once into the repo-local cache."""
    from rlhf_hf.tasks import TINY_CHAT_MODEL_ID, embedded_model_path

    return Path(embedded_model_path(TINY_CHAT_MODEL_ID))


@pytest.fixture(scope="session")
def sft_run(tiny_base, tmp_path_factory):
    """The tiny SFT recipe run once per session: (RecipeResult, merged model dir)."""
    from rlhf_hf import SFTRecipe

    out = tmp_path_factory.mktemp("sft") / "run"
    result = SFTRecipe.from_yaml(SFT_TINY_YAML, output_dir=str(out), report_to="none").run()
    return result, out / "merged"


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """A model path that holds only a tokenizer: validation must fail before any model would be loaded from it."""
    from rlhf_hf.tasks.tiny.model import build_tokenizer

    path = tmp_path / "tok"
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Every stage's model loader raises: a test that passes proves the data was rejected before any model load."""
    from rlhf_hf.reward import recipe as reward_recipe

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was validated")

    monkeypatch.setattr(reward_recipe, "load_sequence_classifier", refuse)
    monkeypatch.setattr(reward_recipe, "_load_policy", refuse)
    monkeypatch.setattr("rlhf_hf.sft.load_causal_lm", refuse)
