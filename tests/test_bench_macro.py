"""NAS-Bench-Macro behind ``MacroNAS-v0``: the builder reproduces the published network (params
and FLOPs of all 6,561 architectures), the shipped table answers episodes exactly and losslessly,
with no CIFAR-10 on disk and no module built, and budgets (soft and hard) work on it."""

from __future__ import annotations

import importlib.resources
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import nas_gym  # noqa: F401
from nas_gym.arch.bench_macro import OPS, BenchMacroArchitecture, layer_plan
from nas_gym.costs import static_costs
from nas_gym.errors import ArchitectureError, ConfigError, DatasetNotFoundError
from nas_gym.evaluators.table import load_table
from nas_gym.models import build_model
from nas_gym.models.bench_macro import BenchMacroNetwork, _layer, bench_macro_costs
from nas_gym.table import enumerate_architectures

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def published():
    path = importlib.resources.files("nas_gym").joinpath("tables", "nas-bench-macro_cifar10.json")
    return json.loads(path.read_text())


def _count(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        y = module(x)
    return sum(p.numel() for p in module.parameters()), int(counter.get_total_flops()), y


def test_builder_matches_all_6561_published_params_and_flops(published):
    """Every architecture's parameters and FlopCounterMode FLOPs (= 2 x the table's MACs): the
    network is stem + 8 layers + head, each layer's module depending only on (layer, op), so the
    builder's own modules are counted once per (layer, op) on real tensors and summed per key;
    the closed form and full builds of a few architectures must agree with that sum."""
    net = BenchMacroNetwork(BenchMacroArchitecture((1,) * 8), SHAPE, 10).eval()
    x = torch.zeros(1, *SHAPE)
    stem_p, stem_f, x = _count(net.stem, x)
    parts, inputs = [], [x]
    for cin, cout, stride in layer_plan():
        counts = []
        for op in range(len(OPS)):
            m = _layer(op, cin, cout, stride)
            counts.append((0, 0) if m is None else _count(m.eval(), inputs[-1])[:2])
        parts.append(counts)
        inputs.append(_layer(1, cin, cout, stride).eval()(inputs[-1]).detach())
    head_p, head_f, _ = _count(net.head, inputs[-1])
    assert len(published) == 3 ** 8
    for key, rec in published.items():
        arch = BenchMacroArchitecture.from_key(key)
        params = stem_p + head_p + sum(parts[i][op][0] for i, op in enumerate(arch.ops))
        flops = stem_f + head_f + sum(parts[i][op][1] for i, op in enumerate(arch.ops))
        assert (params, flops) == (rec["params"], 2 * rec["flops"]), key
        closed = bench_macro_costs(arch, SHAPE, 10)
        assert (closed["params"], closed["flops"]) == (params, flops), key
    for key in ("00000000", "22222222", "02012100", "12021012"):
        arch = BenchMacroArchitecture.from_key(key)
        counted = static_costs(build_model(arch, SHAPE, 10), SHAPE)
        closed = bench_macro_costs(arch, SHAPE, 10)
        assert counted["params"] == published[key]["params"] == closed["params"]
        assert counted["flops"] == 2 * published[key]["flops"] == closed["flops"]
        assert counted["memory_bytes"] == closed["memory_bytes"]


def test_conversion_is_lossless(published):
    table = load_table("nas-bench-macro")
    assert len(table) == len(published) and table.seeds == [0, 1, 2]
    assert table.meta["input_shape"] == list(SHAPE) and table.meta["num_classes"] == 10
    by_key = {rows[0]["key"]: rows for rows in table.rows.values()}
    assert table.lookup(BenchMacroArchitecture.from_key("02012100").sha256)[0]["key"] == "02012100"
    for key, rec in published.items():
        rows = by_key[key]
        runs = [r["accuracy"] * 100 for r in rows]
        assert runs == pytest.approx(rec["test_acc"], abs=1e-9)
        assert rows[0]["test_accuracy"] * 100 == pytest.approx(rec["mean_acc"], abs=1e-9)
        assert np.std(runs) == pytest.approx(rec["std"], abs=1e-9)
        assert (rows[0]["params"], rows[0]["flops"]) == (rec["params"], 2 * rec["flops"])
    assert (importlib.resources.files("nas_gym") / "tables" / "LICENSE-nas-bench-macro").is_file()


def test_episodes_answer_the_published_numbers(published, tmp_path):
    """Fixed action sequences spell table keys; accuracy = run (seed % 3), costs from the table,
    with no CIFAR-10 on disk and no module built (no latency, no compute_intensity counted)."""
    env = gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table", seed=4,
                   data_root=str(tmp_path / "no-cifar"), store=":memory:",
                   penalty_kwargs={"weights": "printed"})
    assert env.unwrapped.input_shape == SHAPE and env.action_space.n == 3
    keys = np.random.default_rng(0).choice(sorted(published), size=300, replace=False)
    for key in keys:
        _, info = env.reset()
        assert info["token_type"] == "op"
        for a in map(int, key):
            _, reward, terminated, _, info = env.step(a)
        assert terminated and info["architecture"] == {"kind": "nas_bench_macro",
                                                       "ops": [int(c) for c in key]}
        rec = published[key]
        assert info["accuracy"] == rec["test_acc"][4 % 3] / 100
        assert info["costs"]["params"] == rec["params"]
        assert info["costs"]["flops"] == 2 * rec["flops"]
        assert "latency_ms" not in info["costs"] and "compute_intensity" not in info["costs"]
        assert reward == pytest.approx(info["accuracy"] - 10e-9 * rec["params"]
                                       - 2.5 * 10e-7 * 2 * rec["flops"])


def test_preset_defaults_to_the_calibrated_reward(published, tmp_path):
    """The default linear weights are 0.05 per term relative to the space's median costs."""
    env = gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table", seed=4,
                   data_root=str(tmp_path / "no-cifar"), store=":memory:")
    ref = env.unwrapped.reference_costs
    flops = sorted(2 * r["flops"] for r in published.values())
    assert flops[0] < ref["flops"] < flops[-1]
    for key in sorted(published)[::700]:
        env.reset()
        for a in map(int, key):
            _, reward, terminated, _, info = env.step(a)
        rec = published[key]
        assert reward == pytest.approx(info["accuracy"] - 0.05 * rec["params"] / ref["params"]
                                       - 0.05 * 2 * rec["flops"] / ref["flops"])


def test_table_sets_env_defaults_and_refuses_conflicts():
    env = gym.make("MacroNAS-v0", evaluator="table", store=":memory:")  # the digits table
    assert env.unwrapped.max_layers == 2 and env.unwrapped.data.name == "digits"
    for bad, name in (({"dataset": "digits"}, "dataset"), ({"epochs": 3}, "epochs"),
                      ({"max_layers": 3}, "max_layers"),
                      ({"evaluator_kwargs": {"noise": "mean"}}, "noise")):
        with pytest.raises(ConfigError, match=name):
            gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table",
                     store=":memory:", **bad)


def test_train_evaluator_needs_the_data_and_really_trains(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        gym.make("MacroNAS-v0", preset="nas_bench_macro", data_root=str(tmp_path))
    env = gym.make("MacroNAS-v0", preset="nas_bench_macro", dataset="digits", training="digits",
                   epochs=1, train_size=64, store=":memory:", measure_latency=False)
    env.reset(seed=0)
    for a in (1, 0, 2, 0, 0, 1, 0, 0):
        _, _, done, _, info = env.step(a)
    arch = BenchMacroArchitecture((1, 0, 2, 0, 0, 1, 0, 0))
    assert done and info["status"] == "ok" and 0.0 <= info["accuracy"] <= 1.0
    assert info["costs"]["params"] == bench_macro_costs(arch, (1, 8, 8), 10)["params"]


def test_params_budget_hard_and_soft(published):
    within = [r["mean_acc"] for r in published.values() if r["params"] <= 1_000_000]
    assert len(within) == 790 and max(within) == pytest.approx(92.75, abs=5e-3)
    assert max(r["mean_acc"] for r in published.values()) == pytest.approx(93.13, abs=5e-3)
    env = gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table", store=":memory:",
                   budget={"params": 1_000_000}, hard_budget=True)
    found = enumerate_architectures(env)  # the masks are exact: exactly the 790 fit
    assert len(found) == 790
    assert all(published[a.key]["params"] <= 1_000_000 for a in found)


@pytest.mark.parametrize("penalty", ["benas", "linear", "epnas", "none"])
def test_flops_budget_with_every_penalty(penalty):
    env = gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table", store=":memory:",
                   budget={"flops": 8e7}, penalty=penalty, hard_budget=True)
    rng = np.random.default_rng(1)
    for _ in range(20):
        _, info = env.reset(seed=int(rng.integers(1 << 30)))
        done = False
        while not done:
            _, reward, done, _, info = env.step(env.action_space.sample(
                mask=info["action_mask"]))
        assert info["costs"]["flops"] <= 8e7 and math.isfinite(reward)
    with pytest.raises(ConfigError, match="budget"):
        gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table", store=":memory:",
                 budget={"params": 1000}, hard_budget=True)


def test_preset_refuses_space_arguments():
    with pytest.raises(ConfigError, match="filters"):
        gym.make("MacroNAS-v0", preset="nas_bench_macro", filters=[4], evaluator="table")
    with pytest.raises(ArchitectureError, match="ops"):
        BenchMacroArchitecture((0, 3, 0, 0, 0, 0, 0, 0)).validate()


def test_table_build_writes_to_the_current_folder_by_default():
    from pathlib import Path

    from nas_gym.experiments.table_build import BuildConfig

    assert Path(BuildConfig().out).parent == Path(".")
