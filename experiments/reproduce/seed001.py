"""Seed 001 (Mohandoss & Dwivedi): the cost-aware linear reward against the accuracy-only reward
(§4.3). Config: ``experiments/configs/reproduce-seed001.yaml``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..search import SearchConfig, run_search
from ._common import TINY, most_accurate

#: Seed 001 §4.3 (best architecture, accuracy wise, of each run; CIFAR-10).
SEED001_PAPER = {"accuracy_only": {"accuracy": 0.7245, "params": 239_642, "flops": 90_800_128},
                 "cost_aware": {"accuracy": 0.717, "params": 161_346, "flops": None}}


def run(config: dict[str, Any], out: Path, tiny: bool) -> str:
    """Seed 001's claim: the cost-aware reward finds an architecture with >= 30% fewer params
    than the accuracy-only reward's best, for < 1 point of accuracy (§4.3: 161,346 vs 239,642
    params, 0.717 vs 0.7245)."""
    base = copy.deepcopy(config["search"])
    if tiny:
        base["episodes"] = TINY["episodes"]
        base["env_kwargs"] = {**base["env_kwargs"], **TINY["env_kwargs"]}
    best: dict[str, dict[str, Any]] = {}
    for name, extra in config["runs"].items():
        sc = SearchConfig(**{**base, "env_kwargs": {**base["env_kwargs"], **extra},
                             "out": str(out / name), "progress": False})
        run_search(sc)
        best[name] = most_accurate(out / name)
    acc, cost = best["accuracy_only"], best["cost_aware"]
    p_acc, p_cost = acc["costs"]["params"], cost["costs"]["params"]
    saving, loss = 1 - p_cost / p_acc, acc["accuracy"] - cost["accuracy"]
    ok = saving >= 0.30 and loss < 0.01
    lines = [
        "# Reproducing seed 001 (Mohandoss & Dwivedi): cost-aware vs accuracy-only reward", "",
        f"Command: `nas-gym reproduce seed001 --out {out}{' --tiny' if tiny else ''}`"
        f" (config `experiments/configs/reproduce-seed001.yaml`"
        f"{', tiny smoke run: not evidence' if tiny else ''}).", "",
        "| run | paper accuracy | paper params | measured accuracy | measured params |",
        "|---|---|---|---|---|"]
    for name, row in best.items():
        paper = SEED001_PAPER[name]
        lines.append(f"| {name} | {paper['accuracy']} | {paper['params']:,} | "
                     f"{row['accuracy']:.4f} | {int(row['costs']['params']):,} |")
    lines += ["", "Paper figures: seed 001 §4.3 (CIFAR-10, best architecture accuracy-wise of "
                  "each run).", "",
              f"- {'PASS' if ok else 'FAIL'}: >= 30% fewer params for < 1 point of accuracy "
              f"(measured: {saving:.1%} fewer params, {loss * 100:+.2f} points)"]
    return "\n".join(lines) + "\n"
