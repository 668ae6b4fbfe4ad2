"""What every paper's reproduction shares: its shipped config, the tiny-run overrides, reading a
search's evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nas_gym.errors import bad_value

from ..search import run_search
from ..search_config import SearchConfig
from ..search_log import read_evaluations

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
    """Every agent of ``config["agents"]`` (name -> keywords; a name that is not the agent's
    gives it as keyword ``agent``, e.g. an ablation) once per seed of ``config["seeds"]``, with the
    shared ``config["search"]`` fields, each in ``out/<name>-seed<seed>``; the folders, by name
    and seed."""
    folders: dict[str, dict[int, Path]] = {}
    for name, given in config["agents"].items():
        kwargs = dict(given)
        agent = kwargs.pop("agent", name)
        for seed in config["seeds"]:
            folder = out / f"{name}-seed{seed}"
            sc = SearchConfig(**{**config["search"], "agent": agent, "agent_kwargs": kwargs,
                                 "seed": seed, "out": str(folder), "progress": False})
            run_search(sc)
            folders.setdefault(name, {})[seed] = folder
    return folders


def paper_sized(config: dict[str, Any], dataset: str, data_root: str | None) -> dict[str, Any]:
    """The paper-sized setting (``--dataset``): the config's ``paper`` section over it, one level
    down (``paper: {search: {episodes: 216}}`` replaces ``search.episodes``; a value there, e.g.
    ``search.env_kwargs``, is replaced as a whole), the dataset (and data root) set in the shared
    search's env keywords, and ``paper_sized`` recording both for the report's command line."""
    if not isinstance(config.get("paper"), dict) or not isinstance(config.get("search"), dict):
        raise bad_value("--dataset", dataset, "no value: this paper's config has no `paper` "
                        "section (the paper-sized setting)")
    sized = {k: v for k, v in config.items() if k != "paper"}
    for key, value in config["paper"].items():
        both = isinstance(value, dict) and isinstance(sized.get(key), dict)
        sized[key] = {**sized[key], **value} if both else value
    env_kwargs = {**sized["search"].get("env_kwargs", {}), "dataset": dataset}
    if data_root is not None:
        env_kwargs["data_root"] = data_root
    sized["search"] = {**sized["search"], "env_kwargs": env_kwargs}
    sized["paper_sized"] = {"dataset": dataset, "data_root": data_root}
    return sized


def command_line(paper: str, out: Path, tiny: bool, config: dict[str, Any]) -> str:
    """The ``nas-gym reproduce`` command that runs ``config`` (for the report)."""
    cmd = f"nas-gym reproduce {paper} --out {out}{' --tiny' if tiny else ''}"
    sized = config.get("paper_sized")
    if sized:
        cmd += f" --dataset {sized['dataset']}"
        cmd += f" --data-root {sized['data_root']}" if sized["data_root"] else ""
    return cmd


def significance_note(p: float, seeds: int) -> list[str]:
    """A report line saying how much a seed comparison's verdict rests on (one-sided p-value)."""
    if p < 0.05:
        return []
    return ["", f"Caveat: {seeds} seeds per agent; the difference is not significant "
            f"(p = {p:.2g} >= 0.05), so this verdict is weak evidence either way."]


def plot_mean_curves(curves: dict[str, list], path: Path, *, xlabel: str, ylabel: str,
                     title: str) -> None:
    """Per agent, the mean over seeds of its best-so-far curves (cut to the shortest), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, runs in curves.items():
        if not runs:
            continue
        k = min(len(c) for c in runs)
        ax.plot(np.arange(1, k + 1), np.mean([c[:k] for c in runs], axis=0),
                label=f"{agent} ({len(runs)} seeds)")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
