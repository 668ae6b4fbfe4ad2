"""``nas-gym bench``: compare search agents on benchmark tables (``evaluator="table"``).

Runs agents x envs x seeds under a search budget (``evaluations`` episodes, optionally also
``time_budget`` simulated training seconds: the tables' recorded training times), in parallel
processes, and writes to ``out``:

- ``runs/<env>/<agent>/seed<k>.jsonl``: one line per evaluation (written when the job finishes,
  atomically; a restarted bench skips finished jobs);
- ``results.csv``: every evaluation of every job, with the incumbent (best validation accuracy
  so far among the architectures that meet the cost budget) and its test accuracy (the table's
  mean over seeds: the architecture's true quality, for reports only - never a reward);
- ``summary.csv`` and ``report.md``: per agent the final incumbent, its test accuracy, the regret
  to the table's best architecture within budget (best mean test accuracy), the rank (by mean
  regret, 1 = best) and the fraction of evaluated architectures that meet the budget; and the
  statistics of ``experiments/bench_stats.py``: regret at 25 / 50 / 100 / 200 evaluations with
  95% bootstrap intervals, the fraction of seeds that found a top-1% architecture, a one-sided
  Mann-Whitney test of each agent against random search (p-values);
- ``curves_evaluations.png``: anytime regret with bootstrap bands; ``curves_time.png`` (tables
  with recorded training times): incumbent accuracy vs simulated time, mean and std over seeds.

The default bench is NAS-Bench-Macro (CIFAR-10) under ``params <= 1M``, 20 seeds x 200
evaluations of :data:`DEFAULT_AGENTS`.

A third-party agent joins by import path (``--agents default mypkg.module:MyAgent``; the current
folder is importable): a class with the agent interface (``nas_gym.agents.base.Agent``: ``learn(env,
total_episodes, callback)``) or a plain SB3 algorithm class (run through the project's SB3
adapter). Every agent is built and checked against every env before any job starts. A job records
its evaluations through an env wrapper (as ``nas-gym search`` does), so an agent that never calls
the callback is recorded too; a job that evaluated nothing fails instead of writing an empty file.
``--budget``, ``--agent`` and ``-A`` / ``--agent-kwargs`` read as in ``nas-gym search``
(:mod:`nas_gym.experiments.options`).

One job (and :class:`~nas_gym.experiments.bench_job.BenchConfig`) is :mod:`nas_gym.experiments.bench_job`; the
report :mod:`nas_gym.experiments.bench_report`; this module runs the jobs and holds the command.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from nas_gym.errors import ConfigError, bad_value
from nas_gym.evaluators.table import load_table
from nas_gym.table import TABLES

from .bench_job import (
    DEFAULT_AGENTS,
    BenchConfig,
    job_path,
    make_bench_agent,
    resolve_table,
    run_job,
)
from .bench_report import write_report
from .options import add_keyword_options, agent_keywords, check_agent_env, parse_budget

__all__ = ["IDENTITY", "add_bench_command", "bench_agent_kwargs", "check_agents", "run_bench"]

IDENTITY = ("evaluations", "time_budget", "budget", "noise", "agent_kwargs")


def check_agents(cfg: BenchConfig, tables: list[str]) -> None:
    """Build every agent once and check it against every table's env, before any job starts."""
    for spec in cfg.agents:
        agent = make_bench_agent(spec, 0, dict(cfg.agent_kwargs.get(spec, {})))
        for t in tables:
            check_agent_env(agent, load_table(t).env_id, arg="--agents")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


# -- the bench -------------------------------------------------------------------------------------
def run_bench(cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every job of ``cfg`` and write the report; returns the summary rows."""
    out = Path(cfg.out)
    tables = [str(resolve_table(e)) for e in cfg.envs]
    check_agents(cfg, tables)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = {**asdict(cfg), "agents": tuple(cfg.agents), "envs": tuple(tables)}
    saved = out / "config.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        for k in IDENTITY:
            if json.loads(json.dumps(cfg_dict[k])) != old.get(k):
                raise ConfigError(f"{out} holds a bench with {k}={old.get(k)!r}, not "
                                  f"{cfg_dict[k]!r}; use another --out to change it")
    saved.write_text(json.dumps(cfg_dict, indent=2, default=list))
    jobs = [(t, a, s, cfg_dict) for s in range(cfg.seeds) for t in tables for a in cfg.agents]
    todo = [j for j in jobs if not job_path(out, j[0], j[1], j[2]).exists()]
    start = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker: no oversubscription
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="bench", unit="job",
               disable=not progress)
    if cfg.workers <= 1:
        for j in todo:
            run_job(j)
            bar.update()
    elif todo:
        with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for fut in as_completed([pool.submit(run_job, j) for j in todo]):
                fut.result()
                bar.update()
    bar.close()
    summary = write_report(out, cfg, tables, jobs)
    return {"seconds": time.perf_counter() - start, "jobs": len(jobs), "ran": len(todo),
            "summary": summary}


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """``nas-gym bench ...`` (registered in ``nas_gym.experiments.cli.COMMANDS``)."""
    d = BenchConfig()
    p = sub.add_parser("bench", help="compare agents on benchmark tables (evaluator='table')")
    p.add_argument("--agents", "--agent", nargs="+", action="extend", default=None,
                   metavar="NAME|module:Class",
                   help=f"agents: registered names or import paths module:Class; 'default' = "
                        f"{' '.join(d.agents)} (the default)")
    p.add_argument("--envs", nargs="+", default=list(d.envs),
                   help=f"table names {sorted(TABLES)}, table files, or env ids (the committed "
                        "digits table); default %(default)s")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per job (default %(default)s)")
    p.add_argument("--evaluations", type=int, default=d.evaluations,
                   help="evaluations per job (default %(default)s)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="also stop at this many simulated training seconds")
    p.add_argument("--budget", default=",".join(f"{k}={v}" for k, v in d.budget.items()),
                   metavar="METRIC=UPPER,...",
                   help="cost budget, as in nas-gym search: params=1e6 or '{\"params\": 1e6}' "
                        "(default %(default)s)")
    p.add_argument("--noise", default=d.noise, help="table noise: sample, seed or mean")
    p.add_argument("--workers", type=int, default=d.workers, help="processes (default 2)")
    p.add_argument("--out", default=d.out, help="output folder (default %(default)s)")
    add_keyword_options(p)
    p.set_defaults(func=_run_cli)


def bench_agent_kwargs(agents: tuple[str, ...], given: dict[str, Any]) -> dict[str, dict]:
    """``-A`` / ``--agent-kwargs`` per agent: a key naming an agent of the bench with a mapping
    value targets that agent; every other key goes to every agent."""
    common = {k: v for k, v in given.items() if not (k in agents and isinstance(v, dict))}
    return {a: {**common, **(given[a] if isinstance(given.get(a), dict) else {})}
            for a in agents if common or isinstance(given.get(a), dict)}


def _run_cli(args: argparse.Namespace) -> int:
    agents: list[str] = []
    for a in args.agents or ["default"]:
        agents += list(DEFAULT_AGENTS) if a == "default" else [a]
    budget = parse_budget(args.budget)
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        budget = {"params": budget}
    budget = budget or {}
    if any(isinstance(bound, (list, tuple)) for bound in budget.values()):
        raise bad_value("--budget", args.budget, "upper bounds only (metric=upper)")
    agents = list(dict.fromkeys(agents))
    cfg = BenchConfig(agents=tuple(agents), envs=tuple(args.envs), seeds=args.seeds,
                      evaluations=args.evaluations, time_budget=args.time_budget,
                      budget=budget, noise=args.noise,
                      agent_kwargs=bench_agent_kwargs(tuple(agents), agent_keywords(args)),
                      workers=args.workers, out=args.out, tensorboard=args.tensorboard)
    result = run_bench(cfg)
    print(f"bench: {result['jobs']} jobs ({result['ran']} run now) in {result['seconds']:.1f}s; "
          f"report: {Path(cfg.out) / 'report.md'}")
    return 0
