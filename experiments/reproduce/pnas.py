"""PNAS (Liu et al. 2018, "Progressive Neural Architecture Search"; ``agents/pnas.py``): progressive
growth with a learned surrogate against random search, on digits with real training. Config:
``experiments/configs/reproduce-pnas.yaml``.

PNAS is not among the project's seed papers and neither SPEC.md nor the README quotes its figures,
so its claims are stated qualitatively:

1. **The surrogate-guided progressive search beats random search at an equal number of trained
   models** (PNAS's headline: the same accuracy with fewer models evaluated). Best validation
   accuracy over each search's evaluations, PNAS vs random, per seed; and how many evaluations
   PNAS needed to reach random search's final best (same seed).
2. **The surrogate ranks held-out architectures.** Each PNAS search's final surrogate (its saved
   agent state) predicts the architectures the random searches trained that it never saw;
   Spearman correlation with their trained accuracy (as ``tests/test_pnas.py`` checks on a hidden
   formula), against a bound fixed in the config before measuring.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.stats import spearmanr

from nas_gym.agents.pnas import PNASAgent
from nas_gym.agents.state_file import read_state

from ..bench_stats import rank_test
from ..search_log import STATE, read_evaluations
from ._common import TINY, command_line, plot_mean_curves, run_searches, significance_note

#: Tiny-run overrides (smoke tests).
TINY_PNAS = {"episodes": 4, "seeds": [0], "agents": {
    "pnas": {"beam_size": 2, "candidates": 4},
    "pnas_no_surrogate": {"beam_size": 2, "candidates": 2}}}


def _sized(config: dict[str, Any], tiny: bool) -> dict[str, Any]:
    config = copy.deepcopy(config)
    if tiny:
        config["search"]["episodes"] = TINY_PNAS["episodes"]
        config["search"]["env_kwargs"].update(TINY["env_kwargs"])
        for name, kwargs in TINY_PNAS["agents"].items():
            if name in config["agents"]:
                config["agents"][name].update(kwargs)
        config["seeds"] = TINY_PNAS["seeds"]
    return config


def token_types(env: gym.Env, actions: list[int]) -> list[str]:
    """The ``info["token_type"]`` of each decision of ``actions``, by replaying them on ``env``
    through the public API without the last step (so nothing is trained)."""
    _, info = env.reset(seed=0)
    types = []
    for i, a in enumerate(actions):
        types.append(info["token_type"])
        if i < len(actions) - 1:
            _, _, done, _, info = env.step(int(a))
            if done:
                raise ValueError(f"actions {actions} end the episode at step {i}")
    return types


def load_pnas(folder: Path, kwargs: dict[str, Any]) -> PNASAgent:
    """The PNAS agent (keywords ``kwargs``) saved by the search in ``folder`` (its last update:
    the final surrogate)."""
    agent = PNASAgent(**kwargs)
    agent.load_state_dict(read_state(folder / STATE))
    return agent


def surrogate_ranking(folders: dict[str, dict[int, Path]], env: gym.Env,
                      kwargs: dict[str, Any]) -> list[dict]:
    """Per PNAS seed: Spearman correlation of its surrogate's predictions with the accuracy of the
    random searches' architectures it never saw (a distinct architecture counted once)."""
    held: dict[tuple[int, ...], float] = {}
    for folder in folders["random"].values():
        for r in read_evaluations(folder):
            if r.get("accuracy") is not None and r.get("status") == "ok":
                held.setdefault(tuple(r["actions"]), float(r["accuracy"]))
    rows = []
    for seed, folder in folders["pnas"].items():
        agent = load_pnas(folder, {**kwargs, "seed": seed})
        seen = {tuple(d["actions"]) for d in agent.data}
        keys = [k for k in held if k not in seen]
        seqs = [(token_types(env, list(k)), list(k)) for k in keys]
        pred = agent.surrogate.predict(seqs) if seqs else np.array([])
        rho = spearmanr(pred, [held[k] for k in keys]).statistic if len(keys) > 2 else float("nan")
        rows.append({"seed": seed, "held_out": len(keys), "trained_on": len(agent.data),
                     "spearman": float(rho)})
    return rows


def _best_curve(folder: Path) -> np.ndarray:
    acc = [r.get("accuracy") or 0.0 for r in read_evaluations(folder)]
    return np.maximum.accumulate(acc)


def search_quality(folders: dict[str, dict[int, Path]]) -> dict[str, Any]:
    """Best accuracy per seed and agent; evaluations PNAS needed to reach random's final best."""
    curves = {a: {s: _best_curve(f) for s, f in runs.items()} for a, runs in folders.items()}
    best = {a: np.array([c[-1] for c in runs.values()]) for a, runs in curves.items()}
    reach = []
    for seed, curve in curves["pnas"].items():
        hit = np.flatnonzero(curve >= curves["random"][seed][-1])
        reach.append(int(hit[0]) + 1 if hit.size else None)
    return {"curves": curves, "best": best, "reach": reach}


def plot_curves(curves: dict[str, dict[int, np.ndarray]], path: Path) -> None:
    """Mean (over seeds) best validation accuracy so far against the evaluations, per agent."""
    plot_mean_curves({agent: list(runs.values()) for agent, runs in curves.items()}, path,
                     xlabel="trained networks", ylabel="best validation accuracy so far (mean)",
                     title="PNAS vs random search (digits)")


def run(config: dict[str, Any], out: Path, tiny: bool) -> str:
    """Run the searches, compare them, score the surrogates; the report."""
    config = _sized(config, tiny)
    folders = run_searches(config, out)
    search = config["search"]
    env = gym.make(search["env"], budget=search["budget"],
                   **{**search["env_kwargs"], "store": ":memory:"})
    quality = search_quality(folders)
    ranking = surrogate_ranking(folders, env, config["agents"]["pnas"])
    plot_curves(quality["curves"], out / "best_so_far.png")
    return report(config, out, tiny, quality, ranking)


def _ablation(best: dict[str, np.ndarray]) -> list[str]:
    """The supporting line on the surrogate's share of the gain (when the config has the
    ablation)."""
    if "pnas_no_surrogate" not in best:
        return []
    ours, abl = best["pnas"], best["pnas_no_surrogate"]
    return ["", f"Supporting (ablation, the same progressive beam with no surrogate selection: "
            f"candidates = beam): mean best {abl.mean():.4f}; PNAS higher on "
            f"{int((ours > abl).sum())}, equal on {int((ours == abl).sum())} of {len(ours)} "
            f"seeds (one-sided Mann-Whitney p = {rank_test(-ours, -abl):.2g}). The gap between "
            "PNAS and this row is the surrogate's share; the gap between this row and random "
            "search comes from the beam growing the networks smallest first."]


def report(config: dict[str, Any], out: Path, tiny: bool, quality: dict[str, Any],
           ranking: list[dict]) -> str:
    search, best = config["search"], quality["best"]
    ours, rnd = best["pnas"], best["random"]
    wins, p = int((ours > rnd).sum()), rank_test(-ours, -rnd)
    ok1 = ours.mean() > rnd.mean() and wins > len(ours) / 2
    reached = [r for r in quality["reach"] if r is not None]
    rhos = [r["spearman"] for r in ranking]
    mean_rho = statistics.mean(rhos)
    ok2 = mean_rho >= config["min_spearman"]
    lines = ["# Reproducing PNAS (Liu et al. 2018): progressive search with a learned surrogate",
             "", f"Command: `{command_line('pnas', out, tiny, config)}` "
             f"(config `experiments/configs/reproduce-pnas.yaml`"
             f"{', tiny smoke run: not evidence' if tiny else ''}). {search['env']} "
             f"{search['env_kwargs']}, agents "
             f"{', '.join(f'{a} {kw}' for a, kw in config['agents'].items())}, seeds "
             f"{config['seeds']}, {search['episodes']} trained networks per search.", "",
             "PNAS is not a seed paper of the project and SPEC.md / the README quote none of its "
             "figures: its claims are checked qualitatively.", "",
             "## Claim 1: the surrogate-guided search beats random search at an equal number of "
             "trained models", "", "| agent | best validation accuracy per seed | mean |",
             "|---|---|---|"]
    for a, v in best.items():
        lines.append(f"| {a} | {', '.join(f'{x:.4f}' for x in v)} | {v.mean():.4f} |")
    lines += ["", f"- {'PASS' if ok1 else 'FAIL'}: PNAS's mean best accuracy above random's and "
              f"higher on most seeds (measured: {ours.mean():.4f} vs {rnd.mean():.4f}, higher on "
              f"{wins} of {len(ours)} seeds; one-sided Mann-Whitney p = {p:.2g})"]
    lines += significance_note(p, len(ours))
    lines += _ablation(best)
    lines += ["", f"Supporting (PNAS's headline, the same accuracy with fewer models): PNAS reached "
              f"random search's best-of-{search['episodes']} (same seed) on {len(reached)} of "
              f"{len(quality['reach'])} seeds, after "
              f"{', '.join('never' if r is None else str(r) for r in quality['reach'])} "
              "trained networks.", "", "![best so far](best_so_far.png)", "",
              "## Claim 2: the surrogate ranks held-out architectures", "",
              "| PNAS seed | trained on | held-out architectures (random searches', unseen) | "
              "Spearman |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['trained_on']} | {r['held_out']} | {r['spearman']:.3f} |"
              for r in ranking]
    lines += ["", f"- {'PASS' if ok2 else 'FAIL'}: mean Spearman correlation of the surrogate's "
              f"predictions with the held-out accuracies {mean_rho:.3f} (>= "
              f"{config['min_spearman']}, the config's bound)"]
    return "\n".join(lines) + "\n"
