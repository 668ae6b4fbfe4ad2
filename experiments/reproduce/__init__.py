"""``nas-gym reproduce PAPER``: run a paper's experiment from a shipped config and write
``report.md`` with the measured figures next to the paper's and a PASS / FAIL line per claim.

Each paper is a module of this package (its name is the paper's name on the command line) with a
function ``run(config, out, tiny) -> report text``; its config is
``experiments/configs/reproduce-<paper>.yaml``. ``--tiny`` shrinks the run for smoke tests (its
PASS / FAIL lines are then not evidence). Papers of the project not yet reproducible are listed in
:data:`PLANNED` and refused with a clear error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas_gym.errors import bad_value

from ._common import load_paper_config, paper_sized

#: Every paper the project covers, by its command-line name.
ALL_PAPERS = ("benas", "eas", "enas", "epnas", "pnas", "seed001")


def _discover() -> dict[str, Callable[[dict[str, Any], Path, bool], str]]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"{__name__}.{info.name}").run
    return dict(sorted(found.items()))


#: Paper name -> ``run(config, out, tiny) -> report``.
PAPERS = _discover()
PLANNED = tuple(p for p in ALL_PAPERS if p not in PAPERS)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.paper not in PAPERS:
        planned = " (planned)" if args.paper in PLANNED else ""
        raise bad_value("PAPER", f"{args.paper}{planned}", sorted(PAPERS))
    out = Path(args.out or f"runs/reproduce-{args.paper}")
    out.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    config = load_paper_config(args.paper)
    if args.dataset is not None:
        config = paper_sized(config, args.dataset, args.data_root)
    report = PAPERS[args.paper](config, out, args.tiny)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    report += (f"\nRun time: {wall:.0f} s wall, {cpu:.0f} s CPU (this process and its finished "
               f"child processes).\n")
    (out / "report.md").write_text(report)
    print(report)
    print(f"report: {out / 'report.md'}")
    return 0


def add_reproduce_command(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="reproduce a paper's claim from a shipped config")
    p.add_argument("paper", metavar="PAPER", help=f"one of {sorted(PAPERS)}")
    p.add_argument("--out", default=None, help="output folder (default runs/reproduce-PAPER)")
    p.add_argument("--tiny", action="store_true", help="a tiny smoke run (not evidence)")
    p.add_argument("--dataset", default=None,
                   help="the paper-sized setting on this dataset (e.g. cifar10, on a GPU): the "
                        "config's `paper` section over its defaults")
    p.add_argument("--data-root", default=None, help="folder of the torchvision datasets")
    p.set_defaults(func=cmd_reproduce)
