"""``nas-gym bench``: a tiny run on a table, its report recomputed from the raw CSV, resume,
third-party agents by import path."""

from __future__ import annotations

import csv
import math
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest

import nas_gym  # noqa: F401
from nas_gym.experiments.bench import run_bench
from nas_gym.experiments.bench_job import BenchConfig, make_bench_agent, make_bench_env
from nas_gym.table import COST_COLUMNS, enumerate_architectures, write_table

#: 1-2 layers, filters {4, 8}, kernels {1, 3}, stride 1: 4 + 16 = 20 architectures.
SPACE = {"filters": [4, 8], "kernels": [1, 3], "strides": [1], "max_layers": 2,
         "dataset": "digits", "epochs": 1, "train_size": 100}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """A table of the 20-architecture space with made-up accuracies (no training: the bench's
    logic is under test here; tests/test_table.py builds a real one) and real static costs."""
    env = gym.make("MacroNAS-v0", **SPACE, store=":memory:", measure_latency=False).unwrapped
    archs = enumerate_architectures(env)
    rng = np.random.default_rng(0)
    rows = []
    for arch in archs:
        costs = env.components.pipeline.costs(arch)
        quality = rng.uniform(0.3, 0.9)
        for seed in (0, 1):
            rows.append({"sha256": arch.sha256, "seed": seed, "status": "ok",
                         "accuracy": quality + rng.normal(0, 0.02),
                         "test_accuracy": quality + rng.normal(0, 0.02), "val_loss": 1.0,
                         "train_seconds": rng.uniform(0.1, 1.0), "epochs": 1.0,
                         **{c: costs.get(c) for c in COST_COLUMNS}})
    path = tmp_path_factory.mktemp("bench_table") / "toy.sqlite"
    fp = env.components.pipeline.fingerprint
    write_table(path, {"env_id": "MacroNAS-v0", "env_kwargs": SPACE, "seeds": [0, 1],
                       "fingerprint": {"data": fp["data"], "training": fp["training"]}},
                archs, rows)
    return path


@pytest.fixture(scope="module")
def bench(table_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(agents=("nas_gym.agents.random_search:RandomSearch", "reinforce"),
                      envs=(str(table_path),), seeds=2, evaluations=20,
                      budget={"params": 3000}, workers=1, out=str(out))
    return cfg, run_bench(cfg, progress=False)


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_files(bench):
    cfg, result = bench
    out = cfg.out
    for name in ("report.md", "results.csv", "summary.csv", "curves_evaluations.png",
                 "curves_time.png"):
        assert (__import__("pathlib").Path(out) / name).stat().st_size > 0
    rows = _read(f"{out}/results.csv")
    assert len(rows) == 2 * 2 * 20 and result["jobs"] == 4 and result["ran"] == 4


def test_regret_and_rank_recomputed_from_raw_csv(bench):
    cfg, result = bench
    rows = _read(f"{cfg.out}/results.csv")
    runs = defaultdict(list)
    for r in rows:
        runs[r["agent"], int(r["seed"])].append(r)
    regrets = defaultdict(list)
    for (agent, _), lines in runs.items():
        lines.sort(key=lambda r: int(r["evaluation"]))
        best_val, best_test = -1.0, 0.0  # recompute the incumbent from the raw columns
        for r in lines:
            if int(r["feasible"]) and float(r["val_accuracy"]) > best_val:
                best_val, best_test = float(r["val_accuracy"]), float(r["test_accuracy"])
            assert float(r["params"]) <= 3000 or not int(r["feasible"])
        last = lines[-1]
        inc = float(last["incumbent_test"])
        assert (math.isnan(inc) and best_val < 0) or inc == pytest.approx(best_test)
        regrets[agent].append(float(last["table_best_test"]) - best_test)
    mean = {a: float(np.mean(v)) for a, v in regrets.items()}
    order = sorted(mean, key=mean.get)
    summary = {s["agent"]: s for s in _read(f"{cfg.out}/summary.csv")}
    for agent, m in mean.items():
        assert float(summary[agent]["regret_mean"]) == pytest.approx(m)
        assert float(summary[agent]["rank"]) == (1.5 if len(set(mean.values())) == 1
                                                 else order.index(agent) + 1)
        assert m >= 0
        frac = np.mean([int(r["feasible"]) for r in rows if r["agent"] == agent])
        assert float(summary[agent]["feasible_fraction"]) == pytest.approx(frac)
    report = open(f"{cfg.out}/report.md").read()
    for agent, m in mean.items():
        assert f"| {agent} |" in report and f"{m:.4f}" in report


def test_resume_skips_finished_jobs(bench):
    cfg, _ = bench
    again = run_bench(cfg, progress=False)
    assert again["ran"] == 0 and again["jobs"] == 4


def test_plain_sb3_class_by_import_path(table_path):
    cfg = BenchConfig(envs=(str(table_path),), budget={"params": 3000})
    env = make_bench_env(table_path, cfg, seed=0)
    agent = make_bench_agent("stable_baselines3:A2C", 0, {"n_steps": 4})
    seen = []
    agent.learn(env, total_episodes=3, callback=lambda ep: seen.append(ep.info["accuracy"]))
    assert len(seen) == 3 and agent.best() is not None


@pytest.fixture(scope="module")
def macro_bench(tmp_path_factory):
    """The default benchmark's table and budget, tiny: 2 agents x 6 seeds x 30 evaluations."""
    out = tmp_path_factory.mktemp("macro_bench")
    cfg = BenchConfig(agents=("evolution", "random"), envs=("nas-bench-macro",), seeds=6,
                      evaluations=30, workers=1, out=str(out))
    return cfg, run_bench(cfg, progress=False)


def test_statistics_recomputed_from_raw_csv(macro_bench):
    """Regret at 25 evaluations, its bootstrap interval, the top-1% fraction and the one-sided
    rank test against random search, recomputed from results.csv alone."""
    from scipy.stats import mannwhitneyu

    cfg, _ = macro_bench
    rows = _read(f"{cfg.out}/results.csv")
    assert {r["env"] for r in rows} == {"nas-bench-macro_cifar10"}
    regret, found = defaultdict(dict), defaultdict(dict)
    for (agent, seed), lines in _runs(rows).items():
        best_val, best_test = -1.0, 0.0
        for r in lines[:25]:
            if int(r["feasible"]) and float(r["val_accuracy"]) > best_val:
                best_val, best_test = float(r["val_accuracy"]), float(r["test_accuracy"])
        regret[agent][seed] = float(lines[0]["table_best_test"]) - best_test
        cut = float(lines[0]["table_top1_test"])
        found[agent][seed] = any(int(r["feasible"]) and float(r["test_accuracy"]) >= cut
                                 for r in lines)
        assert float(lines[0]["table_best_test"]) == pytest.approx(0.9275, abs=5e-5)
    summary = {s["agent"]: s for s in _read(f"{cfg.out}/summary.csv")}
    ref = np.array([regret["random"][s] for s in sorted(regret["random"])])
    for agent in ("evolution", "random"):
        x = np.array([regret[agent][s] for s in sorted(regret[agent])])
        s = summary[agent]
        assert float(s["regret_at25"]) == pytest.approx(x.mean())
        assert float(s["regret_lo25"]) <= x.mean() <= float(s["regret_hi25"])
        assert float(s["top1_found"]) == pytest.approx(np.mean(list(found[agent].values())))
        if agent != "random":
            p = mannwhitneyu(x, ref, alternative="less").pvalue
            assert float(s["p_at25"]) == pytest.approx(p)
        else:
            assert s["p_at25"] == ""
    report = open(f"{cfg.out}/report.md").read()
    assert "regret @25 [95% CI]" in report and "p @25" in report
    assert (__import__("pathlib").Path(cfg.out) / "curves_evaluations.png").stat().st_size > 0


def _runs(rows):
    runs = defaultdict(list)
    for r in rows:
        runs[r["agent"], int(r["seed"])].append(r)
    for lines in runs.values():
        lines.sort(key=lambda r: int(r["evaluation"]))
    return runs
