"""What every paper's reproduction shares: its shipped config, the tiny-run overrides, reading a
search's evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..search import SearchConfig, read_evaluations, run_search

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


def run_searches(config: dict[str, Any], out: Path) -> dict[str, dict[int, Path]]:
    """Every agent of ``config["agents"]`` (name -> keywords) once per seed of ``config["seeds"]``,
    with the shared ``config["search"]`` fields, each in ``out/<agent>-seed<seed>``; the folders,
    by agent and seed."""
    folders: dict[str, dict[int, Path]] = {}
    for agent, kwargs in config["agents"].items():
        for seed in config["seeds"]:
            folder = out / f"{agent}-seed{seed}"
            sc = SearchConfig(**{**config["search"], "agent": agent, "agent_kwargs": kwargs,
                                 "seed": seed, "out": str(folder), "progress": False})
            run_search(sc)
            folders.setdefault(agent, {})[seed] = folder
    return folders
