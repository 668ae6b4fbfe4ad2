"""The evaluation pipeline: store keys put together from parts, costs on demand
(``measure_latency="auto"``), and the one-off torch._dynamo import paid at ``gym.make``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import nas_gym  # noqa: F401  (registers the envs)
from nas_gym.arch import architecture_from_dict
from nas_gym.store import evaluation_key


class Constant:
    """A free evaluator (nothing trains): only the pipeline's own work is exercised."""

    needs_model = False

    def evaluate(self, architecture, *, seed, model=None):
        return {"accuracy": 0.5}


def episode(env, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    while True:
        *_, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if terminated:
            return info


def test_store_key_from_parts_equals_evaluation_key() -> None:
    env = gym.make("CellNAS-v0", evaluator=Constant(), store=":memory:").unwrapped
    pipeline = env.components.pipeline
    for n in range(5):
        info = episode(env, n)
        arch = architecture_from_dict(info["architecture"])
        fp = pipeline.fingerprint
        assert info["store_key"] == evaluation_key(arch.to_dict(), fp, 0) == pipeline.key(arch, 0)
        lineage = {"parent": "ab" * 32, "transform": {"op": "widen", "layer": n}}
        assert pipeline._key(arch.to_json(), 7 + n, lineage) == evaluation_key(
            arch.to_dict(), {**fp, "lineage": lineage}, 7 + n) == pipeline.key(arch, 7 + n, lineage)


@pytest.mark.parametrize(("kwargs", "measured"), [
    ({}, False),                                           # the default reward reads params
    ({"budget": {"latency_ms": 50.0}}, True),              # the budget reads latency
    ({"penalty": "linear", "penalty_kwargs": {"weights": {"latency_ms": 0.01}}}, True),
    ({"budget": {"latency_ms": 50.0}, "reject_infeasible": True}, True),
    ({"measure_latency": True}, True),                     # asked for
    ({"measure_latency": False, "budget": {"flops": 1e6}}, False),
])
def test_latency_is_measured_on_demand(kwargs: dict, measured: bool) -> None:
    env = gym.make("MacroNAS-v0", evaluator=Constant(), store=":memory:", max_layers=2,
                   **kwargs).unwrapped
    assert env.components.pipeline.measure_latency is measured
    info = episode(env, 0)
    assert ("latency_ms" in info["costs"]) is measured
    assert {"params", "flops", "memory_bytes", "compute_intensity"} <= set(info["costs"])


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_measure_latency_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="measure_latency"):
        gym.make("MacroNAS-v0", evaluator=Constant(), store=":memory:", measure_latency=value)
    with pytest.raises(ValueError, match="measure_latency"):
        gym.make("MacroNAS-v0", evaluator=Constant(), store=":memory:", measure_latency=False,
                 budget={"latency_ms": 5.0}, penalty="benas")


def test_dynamo_import_is_paid_at_make_not_in_episodes() -> None:
    """``torch._dynamo`` (~2 s, imported by the first optimizer or FlopCounterMode) is never
    imported by a table search, and a training env imports it at ``gym.make``."""
    script = textwrap.dedent("""
        import sys
        import gymnasium as gym
        import numpy as np
        import nas_gym.table
        env = gym.make("MacroNAS-v0", evaluator="table", store=":memory:",
                       **nas_gym.table.Table().env_kwargs)
        rng = np.random.default_rng(0)
        for seed in range(20):
            _, info = env.reset(seed=seed)
            done = False
            while not done:
                mask = info["action_mask"]
                *_, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        # the costs are the table's records (nothing counted, no latency timed)
        from nas_gym.arch.base import architecture_from_dict
        recorded = env.unwrapped.components.evaluator.known_costs(
            architecture_from_dict(info["architecture"]))
        assert info["costs"]["flops"] > 0 and recorded.items() <= info["costs"].items()
        print("table", "torch._dynamo" in sys.modules)
        gym.make("CellNAS-v0", store=":memory:", epochs=1)
        print("train", "torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split("\n")
    assert "table False" in out and "train True" in out
