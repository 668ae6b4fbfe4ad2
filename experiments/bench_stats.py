"""Statistics of ``nas-gym bench`` reports: regret at checkpoints with bootstrap intervals, the
fraction of seeds that found a top-1% architecture, a one-sided rank test against random search,
and anytime regret curves with interval bands.

Definitions (per env, over the architectures within the cost budget): **regret** after ``n``
evaluations = the table's best mean test accuracy minus the mean test accuracy of the agent's
incumbent (the evaluated architecture within budget with the best *observed* accuracy, i.e. the
reward's draw; no such architecture yet counts as accuracy 0). **Top 1%** = mean test accuracy at
least the 1%-quantile cut of the budget's architectures. **Rank test** = Mann-Whitney U over seeds,
one-sided, H1: the agent's regret is smaller than random search's (``scipy.stats.mannwhitneyu``,
``alternative="less"``). **Interval** = 95% percentile bootstrap of the mean over seeds (10,000
resamples, ``np.random.default_rng(0)``: the report is reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINTS: tuple[int, ...] = (25, 50, 100, 200)
REFERENCE = "random"
RESAMPLES = 10_000
STAT_FIELDS = ("top1_found", "p_final", *(f"{k}{c}" for c in CHECKPOINTS
                                          for k in ("regret_at", "regret_lo", "regret_hi", "p_at")))


def top_cut(accuracies: Sequence[float], fraction: float = 0.01) -> float:
    """The mean test accuracy an architecture needs to be in the top ``fraction`` of
    ``accuracies`` (the ``ceil(fraction * n)`` best count)."""
    ranked = sorted(accuracies, reverse=True)
    return ranked[max(1, math.ceil(fraction * len(ranked))) - 1] if ranked else float("nan")


def regret_columns(best: float, incumbent_test: float) -> float:
    """Regret of one row of ``results.csv`` (no incumbent: accuracy 0)."""
    return best - (incumbent_test if math.isfinite(incumbent_test) else 0.0)


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over axis 0 of ``values`` ([seeds, ...])."""
    idx = rng.integers(len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def rank_test(agent: np.ndarray, reference: np.ndarray) -> float:
    """One-sided Mann-Whitney U p-value of H1: ``agent`` regrets are smaller than ``reference``'s."""
    from scipy.stats import mannwhitneyu

    if np.all(agent == agent[0]) and np.all(reference == agent[0]):
        return 1.0  # identical samples: no evidence either way (scipy would divide by zero)
    return float(mannwhitneyu(agent, reference, alternative="less").pvalue)


def regret_curves(rows: list[dict[str, Any]]) -> dict[tuple[str, str], np.ndarray]:
    """(env, agent) -> regret after each evaluation, [seeds (sorted), evaluations]."""
    runs: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        runs.setdefault((r["env"], r["agent"]), {}).setdefault(int(r["seed"]), []).append(
            float(r["regret"]))
    out = {}
    for key, seeds in runs.items():
        n = min(len(v) for v in seeds.values())
        out[key] = np.array([seeds[s][:n] for s in sorted(seeds)])
    return out


def statistics(rows: list[dict[str, Any]], checkpoints: Sequence[int] = CHECKPOINTS
               ) -> dict[tuple[str, str], dict[str, Any]]:
    """(env, agent) -> the report's statistics (:data:`STAT_FIELDS`; see the module doc)."""
    curves = regret_curves(rows)
    found: dict[tuple[str, str], dict[int, int]] = {}
    for r in rows:
        seeds = found.setdefault((r["env"], r["agent"]), {})
        seeds[int(r["seed"])] = max(seeds.get(int(r["seed"]), 0), int(r["top1"]))
    rng = np.random.default_rng(0)
    out = {}
    for (env, agent), regret in sorted(curves.items()):
        ref = curves.get((env, REFERENCE))
        s: dict[str, Any] = {"top1_found": float(np.mean(list(found[env, agent].values())))}
        for c in checkpoints:
            if c > regret.shape[1]:
                continue
            x = regret[:, c - 1]
            lo, hi = bootstrap_ci(x, rng)
            s.update({f"regret_at{c}": float(x.mean()), f"regret_lo{c}": float(lo),
                      f"regret_hi{c}": float(hi)})
            if ref is not None and agent != REFERENCE and c <= ref.shape[1]:
                s[f"p_at{c}"] = rank_test(x, ref[:, c - 1])
        if ref is not None and agent != REFERENCE:
            n = min(regret.shape[1], ref.shape[1])
            s["p_final"] = rank_test(regret[:, n - 1], ref[:, n - 1])
        out[env, agent] = s
    return out


def stats_markdown(summary: list[dict[str, Any]], checkpoints: Sequence[int] = CHECKPOINTS
                   ) -> list[str]:
    """The report's statistics table (one row per env and agent, ordered by final rank)."""
    cs = [c for c in checkpoints if any(f"regret_at{c}" in s for s in summary)]
    head = ["env", "agent", *(f"regret @{c} [95% CI]" for c in cs), "top-1% found",
            *(f"p @{c}" for c in cs), "rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["env"], s["agent"]]
        for c in cs:
            cells.append(f"{s[f'regret_at{c}']:.4f} [{s[f'regret_lo{c}']:.4f}, "
                         f"{s[f'regret_hi{c}']:.4f}]" if f"regret_at{c}" in s else "")
        cells.append(f"{s['top1_found']:.2f}")
        for c in cs:
            p = s.get(f"p_at{c}")
            cells.append("ref." if s["agent"] == REFERENCE else ("" if p is None else f"{p:.3g}"))
        cells.append(f"{s['rank']:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_regret(rows: list[dict[str, Any]], path: Path) -> None:
    """Anytime regret (mean over seeds, log scale) with 95% bootstrap bands, one panel per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = regret_curves(rows)
    envs = sorted({env for env, _ in curves})
    fig, axes = plt.subplots(1, len(envs), figsize=(7 * len(envs), 4.5), squeeze=False)
    rng = np.random.default_rng(0)
    for col, env in enumerate(envs):
        ax = axes[0][col]
        for (e, agent), regret in sorted(curves.items()):
            if e != env:
                continue
            xs = np.arange(1, regret.shape[1] + 1)
            lo, hi = bootstrap_ci(regret, rng, resamples=2000)
            floor = 1e-4  # log scale: a mean regret of 0 (every seed found the best) is drawn here
            line, = ax.plot(xs, np.maximum(regret.mean(0), floor), label=agent)
            ax.fill_between(xs, np.maximum(lo, floor), np.maximum(hi, floor), alpha=0.18,
                            color=line.get_color())
        ax.set_yscale("log")
        ax.set_title(f"{env}: regret (mean, 95% bootstrap band)")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best mean accuracy - incumbent's")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
