"""The plots of a search (``best_so_far.png``, ``accuracy_vs_<metric>.png``), also drawn into
TensorBoard by :mod:`nas_gym.experiments.live`. "Best" is the highest reward everywhere (as in
``best.json``), never the highest accuracy (an over-budget architecture can have that)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nas_gym.rewards import parse_budget


def plot_search(out: str | os.PathLike, rows: list[dict[str, Any]], budget: Any,
                default_metric: str = "params") -> list[Path]:
    """Write the PNG plots of a search; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, paths = Path(out), []
    fig = best_so_far_figure(rows)
    paths.append(out / "best_so_far.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    constraints = parse_budget(budget, default_metric)
    metrics = [c.metric for c in constraints] or [default_metric]
    best = max(rows, key=lambda r: r["reward"]) if rows else None
    for metric in dict.fromkeys(metrics):
        fig = scatter_figure(rows, metric, constraints, best)
        paths.append(out / f"accuracy_vs_{metric}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def best_so_far_figure(rows: list[dict[str, Any]]) -> Any:
    """Reward per evaluation and the best reward so far ("best" = highest reward, as in
    ``best.json``), with the validation accuracy of that best architecture; integer x ticks."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    reward = np.array([r["reward"] for r in rows], dtype=float)
    acc = np.array([r.get("accuracy") or 0.0 for r in rows], dtype=float)
    best = np.zeros(len(rows), dtype=int)
    for i in range(1, len(rows)):
        best[i] = i if reward[i] > reward[best[i - 1]] else best[i - 1]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(1, len(rows) + 1)
    ax.scatter(x, reward, s=10, alpha=0.4, label="reward")
    if len(rows):
        ax.step(x, reward[best], where="post", color="C3", label="best reward so far")
        ax.step(x, acc[best], where="post", color="C2", linestyle="--",
                label="its validation accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="evaluations", ylabel="reward / accuracy", title="Best so far (by reward)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def scatter_figure(rows: list[dict[str, Any]], metric: str, constraints: list[Any],
                   best: dict[str, Any] | None) -> Any:
    """Validation accuracy vs ``metric``: every architecture, the Pareto front, the budget lines
    and the best-reward architecture."""
    import matplotlib.pyplot as plt

    acc = np.array([r.get("accuracy") or 0.0 for r in rows], dtype=float)
    cost = np.array([(r.get("costs") or {}).get(metric, np.nan) for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(cost, acc, s=12, alpha=0.5, label="architectures")
    front = pareto_front(cost, acc)
    if len(front):
        ax.step(cost[front], acc[front], where="post", color="C2", label="Pareto front")
    for c in constraints:
        if c.metric != metric:
            continue
        for bound, name in ((c.upper, "budget"), (c.lower, "lower bound")):
            if bound is not None:
                ax.axvline(bound, color="C3", linestyle="--", label=f"{name} {bound:g}")
    if best is not None and metric in (best.get("costs") or {}):
        ax.scatter([best["costs"][metric]], [best.get("accuracy") or 0.0], marker="*",
                   s=150, color="C1", label="best reward", zorder=3)
    finite = cost[np.isfinite(cost)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_xscale("log")
    ax.set(xlabel=metric, ylabel="validation accuracy", title=f"Accuracy vs {metric}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (lower cost, higher accuracy), by increasing cost."""
    order = [i for i in np.argsort(cost, kind="stable") if np.isfinite(cost[i])]
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, dtype=int)
