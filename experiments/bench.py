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
folder is importable): a class with the agent interface (``agents.base.Agent``: ``learn(env,
total_episodes, callback)``) or a plain SB3 algorithm class (run through the project's SB3
adapter). Every agent is built and checked against every env before any job starts. A job records
its evaluations through an env wrapper (as ``nas-gym search`` does), so an agent that never calls
the callback is recorded too; a job that evaluated nothing fails instead of writing an empty file.
``--budget``, ``--agent`` and ``-A`` / ``--agent-kwargs`` read as in ``nas-gym search``
(:mod:`experiments.options`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.arch.base import architecture_from_dict
from nas_gym.errors import ConfigError, bad_value
from nas_gym.evaluators.table import load_table
from nas_gym.table import DEFAULT_TABLE, TABLES, table_path

from .bench_stats import (
    STAT_FIELDS,
    plot_regret,
    regret_columns,
    statistics,
    stats_markdown,
    top_cut,
)
from .options import (
    add_keyword_options,
    agent_keywords,
    check_agent_env,
    make_agent_spec,
    parse_budget,
)

#: The default bench's agents: one per family (policy gradient, evolution, SB3, PNAS's surrogate)
#: and random search, the reference. SB3's per-step overhead dominates table episodes (per
#: 200-evaluation job: random / evolution ~1 s, reinforce ~7 s, ppo ~14 s, a2c ~13 s, maskable_ppo
#: ~25 s, dqn ~35 s on the loaded 2-core machine), so 20 seeds of all of them cannot fit 5 minutes
#: on 2 cores; the others join with ``--agents``.
DEFAULT_AGENTS = ("reinforce", "evolution", "pnas", "random", "ppo")
IDENTITY = ("evaluations", "time_budget", "budget", "noise", "agent_kwargs")
CSV_FIELDS = ("env", "agent", "seed", "evaluation", "sha256", "val_accuracy", "test_accuracy",
              "train_seconds", "sim_seconds", "params", "feasible", "reward", "status",
              "incumbent_val", "incumbent_test", "table_best_test", "regret", "top1",
              "table_top1_test")


@dataclass
class BenchConfig:
    agents: tuple[str, ...] = DEFAULT_AGENTS
    """Registered agent names or ``module:Class`` import paths."""
    envs: tuple[str, ...] = ("nas-bench-macro",)
    """Benchmark tables by name (``nas_gym.table.TABLES``: ``nas-bench-macro``, ``macro-digits``)
    or file (each names its env id and configuration); an env id picks the committed digits
    table."""
    seeds: int = 20
    """Seeds 0..N-1 per (agent, env)."""
    evaluations: int = 200
    """Search budget: evaluated architectures (episodes) per job."""
    time_budget: float | None = None
    """Optional search budget in simulated training seconds (the tables' recorded times)."""
    budget: dict[str, float] = field(default_factory=lambda: {"params": 1_000_000})
    """Cost budget of the envs (B-ENAS penalty); also defines "meets the budget" in the report."""
    noise: str = "sample"
    """Table noise: "sample" (a recorded seed drawn per query), "seed" or "mean"."""
    agent_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments per agent name."""
    workers: int = 2
    """Parallel processes."""
    out: str = "bench"
    """Output folder."""
    tensorboard: str | None = None
    """Also log every job's evaluations to TensorBoard runs ``DIR/<table>/<agent>/seed<k>``."""


# -- one job ---------------------------------------------------------------------------------------
def resolve_table(env: str) -> Path:
    """The file of a table given by name (``nas_gym.table.TABLES``), file, or env id (the
    committed digits table)."""
    if env in nas_gym.ENV_IDS:
        table = load_table(DEFAULT_TABLE)
        if table.env_id != env:
            raise bad_value("envs", env, f"a table file, or {table.env_id!r} (committed table)")
        return table.path
    path = table_path(env)
    if not path.is_file():
        raise bad_value("envs", env, f"a table name {sorted(TABLES)}, a table file, or "
                        f"{load_table(DEFAULT_TABLE).env_id!r}")
    return path


def make_bench_env(table_path: str | os.PathLike, cfg: BenchConfig, seed: int) -> gym.Env:
    """The table-backed env of a job (the table's configuration, the bench's cost budget)."""
    table = load_table(table_path)
    return gym.make(table.env_id, **{
        **table.env_kwargs, "evaluator": "table", "seed": seed, "device": "cpu",
        "evaluator_kwargs": {"path": str(table_path), "noise": cfg.noise},
        "budget": dict(cfg.budget) or None, "penalty": "benas" if cfg.budget else "none",
        "store": ":memory:", "measure_latency": False})


def make_bench_agent(spec: str, seed: int, kwargs: dict[str, Any]) -> Any:
    """A registered agent, an agent class by import path, or a plain SB3 algorithm class."""
    return make_agent_spec(spec, seed, kwargs, arg="--agents")


class _JobLog(gym.Wrapper):
    """Records every finished episode of a job from the public API (terminal ``info``), whether
    or not the agent calls its callback."""

    def __init__(self, env: gym.Env, on_episode: Any) -> None:
        super().__init__(env)
        self.on_episode, self._return = on_episode, 0.0

    def reset(self, **kwargs: Any):
        self._return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        if terminated or truncated:
            self.on_episode(self._return, info)
        return obs, reward, terminated, truncated, info


def _job_path(out: Path, env: str, agent: str, seed: int) -> Path:
    tag = agent.replace(":", "_").replace(".", "_")
    return out / "runs" / Path(env).stem / tag / f"seed{seed}.jsonl"


def run_job(job: tuple[str, str, int, dict[str, Any]]) -> str:
    """Run one (table, agent, seed) job; writes its JSONL atomically and returns its path."""
    table_path, agent_spec, seed, cfg_dict = job
    cfg = BenchConfig(**cfg_dict)
    path = _job_path(Path(cfg.out), table_path, agent_spec, seed)
    if path.exists():
        return str(path)
    agent = make_bench_agent(agent_spec, seed, dict(cfg.agent_kwargs.get(agent_spec, {})))
    lines: list[dict[str, Any]] = []
    sim = [0.0]
    live = None
    if cfg.tensorboard:
        from .live import TensorBoardLog

        live = TensorBoardLog(str(Path(cfg.tensorboard) / Path(table_path).stem
                                  / agent_spec.replace(":", "_") / f"seed{seed}"),
                              budget=cfg.budget)

    def record(reward: float, info: dict[str, Any]) -> None:
        costs = info.get("costs", {})
        sim[0] += float(costs.get("train_seconds", 0.0))
        lines.append({"evaluation": len(lines), "reward": float(reward),
                      "sha256": architecture_from_dict(info["architecture"]).sha256,
                      "val_accuracy": float(info["accuracy"]), "status": info.get("status"),
                      "train_seconds": float(costs.get("train_seconds", 0.0)),
                      "sim_seconds": sim[0], "params": costs.get("params")})
        if live is not None:
            live.log({"reward": float(reward), "accuracy": info.get("accuracy"),
                      "penalty": info.get("penalty"), "costs": dict(costs)})

    def on_episode(episode: Any) -> bool:
        stop = len(lines) >= cfg.evaluations
        return not (stop or (cfg.time_budget is not None and sim[0] >= cfg.time_budget))

    env = _JobLog(make_bench_env(table_path, cfg, seed), record)
    try:
        agent.learn(env, total_episodes=cfg.evaluations, callback=on_episode)
    finally:
        if live is not None:
            live.close()
    if not lines:
        raise ConfigError(f"agent {agent_spec!r} finished without evaluating an architecture on "
                          f"{table_path} (seed {seed})")
    if cfg.time_budget is not None:  # an agent deaf to the callback may run past the budget
        over = [i for i, r in enumerate(lines) if r["sim_seconds"] >= cfg.time_budget]
        lines = lines[: over[0] + 1] if over else lines
    env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines[: cfg.evaluations]))
    os.replace(tmp, path)
    return str(path)


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
    todo = [j for j in jobs if not _job_path(out, j[0], j[1], j[2]).exists()]
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
    """``nas-gym bench ...`` (registered in ``experiments.cli.COMMANDS``)."""
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


# -- the report ------------------------------------------------------------------------------------
def _feasible(costs: dict[str, Any], budget: dict[str, float]) -> bool:
    return all(costs.get(m) is not None and costs[m] <= upper for m, upper in budget.items())


def collect_rows(out: Path, cfg: BenchConfig, tables: list[str],
                 jobs: list[tuple]) -> list[dict[str, Any]]:
    """The rows of ``results.csv``: every evaluation, with the incumbent after it."""
    rows: list[dict[str, Any]] = []
    for t in tables:
        table = load_table(t)
        info = {d["sha256"]: d for d in table.summary()}
        within = [d["test_accuracy"] for d in info.values() if _feasible(d, cfg.budget)]
        best, cut = max(within, default=float("nan")), top_cut(within)
        for _, agent, seed, _ in (j for j in jobs if j[0] == t):
            inc_val, inc_test = float("-inf"), float("nan")
            for line in map(json.loads, _job_path(out, t, agent, seed).read_text().splitlines()):
                arch = info[line["sha256"]]
                feasible = _feasible(arch, cfg.budget)
                if feasible and line["val_accuracy"] > inc_val:
                    inc_val, inc_test = line["val_accuracy"], arch["test_accuracy"]
                rows.append({**line, "env": Path(t).stem, "agent": agent, "seed": seed,
                             "test_accuracy": arch["test_accuracy"], "feasible": int(feasible),
                             "incumbent_val": inc_val if inc_val > float("-inf") else float("nan"),
                             "incumbent_test": inc_test, "table_best_test": best,
                             "regret": regret_columns(best, inc_test),
                             "top1": int(feasible and arch["test_accuracy"] >= cut),
                             "table_top1_test": cut})
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (env, agent): final incumbent, its test accuracy, regret (table best test accuracy
    within budget minus the incumbent's; no feasible incumbent counts as test accuracy 0), the
    feasible fraction; rank = position by mean regret within the env (ties share the mean rank),
    averaged over envs in ``mean_rank``."""
    final: dict[tuple, dict[tuple, Any]] = {}
    for r in rows:
        final.setdefault((r["env"], r["agent"]), {})[r["seed"]] = r
    feas: dict[tuple, list[int]] = {}
    for r in rows:
        feas.setdefault((r["env"], r["agent"]), []).append(int(r["feasible"]))
    out = []
    for (env, agent), by_seed in final.items():
        last = list(by_seed.values())
        test = np.array([_num(r["incumbent_test"], 0.0) for r in last])
        regret = np.array([r["table_best_test"] for r in last]) - test
        val = np.array([_num(r["incumbent_val"], 0.0) for r in last])
        out.append({"env": env, "agent": agent, "seeds": len(last),
                    "val_mean": float(val.mean()), "val_std": float(val.std()),
                    "test_mean": float(test.mean()), "test_std": float(test.std()),
                    "regret_mean": float(regret.mean()), "regret_std": float(regret.std()),
                    "feasible_fraction": float(np.mean(feas[env, agent])),
                    "evaluations": int(np.mean([r["evaluation"] + 1 for r in last])),
                    "sim_seconds": float(np.mean([r["sim_seconds"] for r in last]))})
    for s in out:
        peers = [o["regret_mean"] for o in out if o["env"] == s["env"]]
        s["rank"] = float(1 + sum(p < s["regret_mean"] for p in peers)
                          + 0.5 * (sum(p == s["regret_mean"] for p in peers) - 1))
    for s in out:
        s["mean_rank"] = float(np.mean([o["rank"] for o in out if o["agent"] == s["agent"]]))
    stats = statistics(rows)
    for s in out:
        s.update(stats[s["env"], s["agent"]])
    return sorted(out, key=lambda s: (s["env"], s["rank"]))


def _num(value: Any, default: float) -> float:
    v = float(value)
    return v if np.isfinite(v) else default


def _plot(rows: list[dict[str, Any]], x: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in rows})
    fig, axes = plt.subplots(2, len(envs), figsize=(6 * len(envs), 7), squeeze=False)
    for col, env in enumerate(envs):
        runs: dict[str, dict[int, list[dict]]] = {}
        for r in rows:
            if r["env"] == env:
                runs.setdefault(r["agent"], {}).setdefault(r["seed"], []).append(r)
        top = max(r["sim_seconds"] for r in rows if r["env"] == env)
        grid = np.linspace(0, top, 200) if x == "sim_seconds" else None
        for agent, seeds in sorted(runs.items()):
            for row, key in enumerate(("incumbent_val", "incumbent_test")):
                curves = []
                for lines in seeds.values():
                    ys = np.array([_num(r[key], np.nan) for r in lines])
                    if grid is None:
                        curves.append(ys)
                    else:  # step function of simulated time: the incumbent after each evaluation
                        xs = np.array([r["sim_seconds"] for r in lines])
                        idx = np.searchsorted(xs, grid, side="right") - 1
                        curves.append(np.where(idx >= 0, ys[np.maximum(idx, 0)], np.nan))
                n = min(len(c) for c in curves)
                ys = np.array([c[:n] for c in curves])
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no incumbent yet
                    mean, std = np.nanmean(ys, 0), np.nanstd(ys, 0)
                xs = np.arange(1, n + 1) if grid is None else grid[:n]
                ax = axes[row][col]
                ax.plot(xs, mean, label=agent)
                ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        for row, what in enumerate(("best validation accuracy so far", "its test accuracy")):
            ax = axes[row][col]
            ax.set_title(f"{env}: {what}")
            ax.set_xlabel("evaluations" if grid is None else "simulated training seconds")
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


SUMMARY_FIELDS = ("env", "agent", "seeds", "evaluations", "val_mean", "val_std", "test_mean",
                  "test_std", "regret_mean", "regret_std", "rank", "mean_rank",
                  "feasible_fraction", "sim_seconds", *STAT_FIELDS)


def write_report(out: Path, cfg: BenchConfig, tables: list[str], jobs: list[tuple]
                 ) -> list[dict[str, Any]]:
    rows = collect_rows(out, cfg, tables, jobs)
    write_csv(out / "results.csv", rows, CSV_FIELDS)
    summary = summarize(rows)
    write_csv(out / "summary.csv", summary, SUMMARY_FIELDS)
    plot_regret(rows, out / "curves_evaluations.png")
    timed = any(r["sim_seconds"] > 0 for r in rows)  # NAS-Bench-Macro publishes no times
    if timed:
        _plot(rows, "sim_seconds", out / "curves_time.png")
    lines = [f"# nas-gym bench: {len(cfg.agents)} agents x {len(tables)} tables x {cfg.seeds} "
             f"seeds x {cfg.evaluations} evaluations", "",
             f"Cost budget {cfg.budget} (B-ENAS penalty); table noise `{cfg.noise}`. "
             "Incumbent = the architecture within budget with the best accuracy the search "
             "observed (the reward's draw: a validation run, or one of NAS-Bench-Macro's three "
             "runs); regret = the table's best mean test accuracy within budget minus the "
             "incumbent's mean test accuracy (none yet: accuracy 0). Mean [95% bootstrap interval] "
             "over seeds; top-1% found = fraction of seeds that evaluated an architecture in the "
             "top 1% of the budget's; p = one-sided Mann-Whitney U test, H1: regret below random "
             "search's (`experiments/bench_stats.py`).", "", *stats_markdown(summary), "",
             "| env | agent | best val acc | test acc | regret | rank | within budget |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['env']} | {s['agent']} | {s['val_mean']:.4f} ± {s['val_std']:.4f} | "
                     f"{s['test_mean']:.4f} ± {s['test_std']:.4f} | "
                     f"{s['regret_mean']:.4f} ± {s['regret_std']:.4f} | {s['rank']:g} | "
                     f"{s['feasible_fraction']:.2f} |")
    lines += ["", "![anytime regret vs evaluations](curves_evaluations.png)", "",
              *(["![anytime curves vs simulated time](curves_time.png)", ""] if timed else []),
              "Numbers: `results.csv` (every evaluation), `summary.csv` (this table).", ""]
    (out / "report.md").write_text("\n".join(lines))
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
