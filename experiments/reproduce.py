"""``nas-gym reproduce PAPER``: run a paper's experiment from a shipped config and write
``report.md`` with the measured figures next to the paper's and a PASS / FAIL line per claim.

Skeleton: ``seed001`` is implemented; ``benas``, ``eas``, ``enas``, ``epnas`` (and ``pnas``) are
listed as planned and refused with a clear error. Each paper is a function
``(config, out, tiny) -> report text`` in :data:`PAPERS`; its config is
``experiments/configs/reproduce-<paper>.yaml``. ``--tiny`` shrinks the run for smoke tests (its
PASS / FAIL lines are then not evidence).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nas_gym.errors import bad_value

from .search import SearchConfig, read_evaluations, run_search

CONFIGS = Path(__file__).parent / "configs"
PLANNED = ("benas", "eas", "enas", "epnas", "pnas")
#: Tiny-run overrides of the shared search fields (smoke tests).
TINY = {"episodes": 2, "env_kwargs": {"epochs": 1, "train_size": 64}}

#: Seed 001 §4.3 (best architecture, accuracy wise, of each run; CIFAR-10).
SEED001_PAPER = {"accuracy_only": {"accuracy": 0.7245, "params": 239_642, "flops": 90_800_128},
                 "cost_aware": {"accuracy": 0.717, "params": 161_346, "flops": None}}


def load_paper_config(paper: str) -> dict[str, Any]:
    path = CONFIGS / f"reproduce-{paper}.yaml"
    return yaml.safe_load(path.read_text())


def _most_accurate(out: Path) -> dict[str, Any]:
    rows = [r for r in read_evaluations(out) if r.get("accuracy") is not None]
    return max(rows, key=lambda r: r["accuracy"])


def reproduce_seed001(config: dict[str, Any], out: Path, tiny: bool) -> str:
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
        best[name] = _most_accurate(out / name)
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


PAPERS: dict[str, Callable[[dict[str, Any], Path, bool], str]] = {"seed001": reproduce_seed001}


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.paper not in PAPERS:
        planned = " (planned)" if args.paper in PLANNED else ""
        raise bad_value("PAPER", f"{args.paper}{planned}", sorted(PAPERS))
    out = Path(args.out or f"runs/reproduce-{args.paper}")
    out.mkdir(parents=True, exist_ok=True)
    report = PAPERS[args.paper](load_paper_config(args.paper), out, args.tiny)
    (out / "report.md").write_text(report)
    print(report)
    print(f"report: {out / 'report.md'}")
    return 0


def add_reproduce_command(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="reproduce a paper's claim from a shipped config")
    p.add_argument("paper", metavar="PAPER", help=f"one of {sorted(PAPERS)}")
    p.add_argument("--out", default=None, help="output folder (default runs/reproduce-PAPER)")
    p.add_argument("--tiny", action="store_true", help="a tiny smoke run (not evidence)")
    p.set_defaults(func=cmd_reproduce)
