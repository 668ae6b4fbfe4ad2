"""What every paper's reproduction shares: its shipped config, the tiny-run overrides, reading a
search's evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..search import read_evaluations

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Tiny-run overrides of the shared search fields (smoke tests).
TINY = {"episodes": 2, "env_kwargs": {"epochs": 1, "train_size": 64}}


def load_paper_config(paper: str) -> dict[str, Any]:
    """``experiments/configs/reproduce-<paper>.yaml`` as a dict."""
    return yaml.safe_load((CONFIGS / f"reproduce-{paper}.yaml").read_text())


def most_accurate(out: Path) -> dict[str, Any]:
    """The evaluation with the highest validation accuracy of the search written to ``out``."""
    rows = [r for r in read_evaluations(out) if r.get("accuracy") is not None]
    return max(rows, key=lambda r: r["accuracy"])
