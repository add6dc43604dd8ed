"""Paths the tests share (a plain module: tests import it; conftest.py is for pytest's hooks and fixtures)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
SFT_TINY_YAML = CONFIGS / "sft_tiny.yaml"
