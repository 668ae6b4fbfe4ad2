"""Benchmark tables: build end to end (killed and resumed), the "table" evaluator, its env."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import nas_gym  # noqa: F401
from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.errors import ConfigError
from nas_gym.experiments.table_build import BuildConfig, build_table
from nas_gym.store import EvaluationStore
from nas_gym.table import ArchitectureNotInTable, Table

#: 1-2 layers of 4 filters, kernels {1, 3, 5}, stride 1: 3 + 9 = 12 architectures.
SPACE = {"filters": [4], "kernels": [1, 3, 5], "strides": [1], "max_layers": 2,
         "dataset": "digits", "epochs": 1, "train_size": 100}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Start a build in a subprocess, kill it (SIGKILL) once a few results are stored, resume it
    in-process to completion."""
    tmp = tmp_path_factory.mktemp("table")
    out, store = tmp / "tiny.sqlite", tmp / "store.sqlite"
    cmd = [sys.executable, "-c", "from nas_gym.experiments.cli import main; raise SystemExit(main())",
           "table", "build", "--env-kwargs", json.dumps(SPACE), "--out", str(out),
           "--store", str(store), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before: dict[str, float] = {}
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                before = {r["key"]: r["created"] for r in EvaluationStore(store).records()}
            except Exception:  # the file may be half-created
                before = {}
            if len(before) >= 3:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(before) < 24, "the build should be killed part-way"
    summary = build_table(BuildConfig(env_kwargs=SPACE, out=str(out), store=str(store),
                                      workers=1, progress=False))
    return {"summary": summary, "before": before, "store": store, "path": out}


def test_build_resumes_without_retraining(built):
    summary, before = built["summary"], built["before"]
    assert summary["reused"] >= len(before)
    after = {r["key"]: r["created"] for r in EvaluationStore(built["store"]).records()}
    assert all(after[k] == t for k, t in before.items())  # finished entries were not retrained
    assert summary["evaluations"] == 24 and summary["architectures"] == summary["space_size"] == 12


def test_table_contents(built):
    table = Table(built["path"])
    assert len(table) == 12 and table.seeds == [0, 1]
    assert table.env_id == "MacroNAS-v0" and table.env_kwargs == SPACE
    for rows in table.rows.values():
        assert [r["seed"] for r in rows] == [0, 1]
        for r in rows:
            assert r["status"] == "ok" and 0 <= r["accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
            assert r["train_seconds"] > 0 and r["params"] > 0 and r["flops"] > 0
            assert r["memory_bytes"] > 0 and r["latency_ms"] > 0


def _table_env(path, **kw):
    t = Table(path)
    return gym.make(t.env_id, **{**t.env_kwargs, "evaluator": "table", "store": ":memory:",
                                 "evaluator_kwargs": {"path": str(path), **kw}})


def _rewards(env, seed: int, episodes: int) -> list[float]:
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=seed)
    out = []
    for _ in range(episodes):
        while True:
            a = rng.choice(np.flatnonzero(info["action_mask"]))
            obs, r, term, trunc, info = env.step(a)
            if term:
                out.append(r)
                obs, info = env.reset()
                break
    return out


@pytest.mark.parametrize("noise", ["seed", "sample", "mean"])
def test_table_env_check_env_and_same_rewards(built, noise):
    env = _table_env(built["path"], noise=noise)
    check_env(env.unwrapped, skip_render_check=True)
    a, b = _rewards(_table_env(built["path"], noise=noise), 3, 8), \
        _rewards(_table_env(built["path"], noise=noise), 3, 8)
    assert a == b and len(a) == 8


def test_recorded_train_seconds_are_reported(built):
    env = _table_env(built["path"])
    obs, info = env.reset(seed=0)
    while True:
        obs, r, term, _, info = env.step(0)
        if term:
            break
    table = Table(built["path"])
    sha = MacroArchitecture.from_dict(info["architecture"]).sha256
    assert info["costs"]["train_seconds"] == table.lookup(sha)[0]["train_seconds"]
    assert info["eval_seconds"] == info["costs"]["train_seconds"] > 0  # simulated search time
    assert info["accuracy"] == table.lookup(sha)[0]["accuracy"]


def test_architecture_outside_table_raises(built):
    env = _table_env(built["path"]).unwrapped
    outside = MacroArchitecture((MacroLayer(32, 7, 1, ()),))
    with pytest.raises(ArchitectureNotInTable, match="not in table") as err:
        env.components.evaluator.evaluate(outside, seed=0)
    assert outside.sha256 in str(err.value) and isinstance(err.value, (ConfigError, KeyError))
    bigger = {**Table(built["path"]).env_kwargs, "filters": [4, 8]}  # the env emits 8 filters too
    with pytest.raises(ConfigError, match=r"filters=\[4, 8\].*expected \[4\] or nothing"):
        gym.make("MacroNAS-v0", **bigger, evaluator="table", store=":memory:",
                 evaluator_kwargs={"path": str(built["path"])})


def test_mismatched_training_is_refused(built):
    t = Table(built["path"])
    with pytest.raises(ConfigError, match="differs from the table"):
        gym.make(t.env_id, **{**t.env_kwargs, "lr": 0.5}, evaluator="table", store=":memory:",
                 evaluator_kwargs={"path": str(built["path"])})


def test_lookup_answers_the_recorded_result_every_time(built):
    """(How much faster than training: ``python -m nas_gym.experiments.benchmarks.store_speed``.)"""
    env = _table_env(built["path"]).unwrapped
    table_eval = env.components.evaluator
    arch = MacroArchitecture((MacroLayer(4, 3, 1, ()), MacroLayer(4, 5, 1, (0,))))
    first = table_eval.evaluate(arch, seed=0)
    assert first.status == "ok" and 0 < first.accuracy <= 1 and first.train_seconds > 0
    assert all(table_eval.evaluate(arch, seed=0) == first for _ in range(200))
