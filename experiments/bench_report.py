"""The report of ``nas-gym bench``: ``results.csv`` (every evaluation with the incumbent after it),
``summary.csv`` and ``report.md`` (per agent: final incumbent, regret, rank, the statistics of
:mod:`nas_gym.experiments.bench_stats`) and the anytime curves."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas_gym.evaluators.table import load_table

from .bench_job import job_path
from .bench_stats import (
    STAT_FIELDS,
    plot_regret,
    regret_columns,
    statistics,
    stats_markdown,
    top_cut,
)

if TYPE_CHECKING:
    from .bench_job import BenchConfig

__all__ = ["CSV_FIELDS", "SUMMARY_FIELDS", "collect_rows", "plot_curves", "summarize",
           "write_csv", "write_report"]

CSV_FIELDS = ("env", "agent", "seed", "evaluation", "sha256", "val_accuracy", "test_accuracy",
              "train_seconds", "sim_seconds", "params", "feasible", "reward", "status",
              "incumbent_val", "incumbent_test", "table_best_test", "regret", "top1",
              "table_top1_test")


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
            for line in map(json.loads, job_path(out, t, agent, seed).read_text().splitlines()):
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


def plot_curves(rows: list[dict[str, Any]], x: str, path: Path) -> None:
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
        plot_curves(rows, "sim_seconds", out / "curves_time.png")
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
