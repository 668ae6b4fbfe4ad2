"""Hard budgets (SPEC §3.5): masks after which every finished architecture meets the budget."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import nas_gym  # noqa: F401  (registers the envs)
from nas_gym.arch.macro import MacroArchitecture
from nas_gym.envs.masking import HardBudget
from nas_gym.errors import ConfigError
from nas_gym.rewards import Constraint

CELL = {"min_blocks": 1, "max_blocks": 2, "channels": 4}


class Constant:
    """No training: every child scores 0.5 (the masks are what is tested)."""

    needs_model = False

    def fingerprint(self):
        return {"evaluator": "constant-0.5"}

    def evaluate(self, architecture, *, seed, model=None):
        return {"accuracy": 0.5}


def make(env_id: str, **kwargs):
    return gym.make(env_id, evaluator=Constant(), store=":memory:", measure_latency=False,
                    **kwargs).unwrapped


def random_episodes(env, n: int, seed: int = 0):
    """Finished infos of ``n`` random masked episodes, and how many grammar-valid actions the
    hard budget masked on the way."""
    rng = np.random.default_rng(seed)
    infos, masked = [], 0
    for ep in range(n):
        _, info = env.reset(seed=ep)
        while True:
            mask = info["action_mask"]
            assert mask.any()  # a state reached through allowed actions always goes on
            masked += int(env.grammar.valid(env.state).sum() - mask.sum())
            _, _, term, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
            if term:
                infos.append(info)
                break
    return infos, masked


def assert_within(info, bounds: dict) -> None:
    for metric, upper in bounds.items():
        assert info["costs"][metric] <= upper, (metric, info["costs"], info["architecture"])


@pytest.mark.parametrize(
    "constraints",
    [(), (Constraint("params", 100.0, None),), (Constraint("latency_ms", None, 5.0),)],
)
def test_needs_an_upper_bound_on_a_pretraining_cost(constraints) -> None:
    with pytest.raises(ConfigError, match="budget"):
        HardBudget(constraints, lambda arch: {})


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("MacroNAS-v0", {}), ("CellNAS-v0", CELL)],
)
def test_unreachable_budget_raises_at_make_with_the_smallest_cost(env_id, kwargs) -> None:
    with pytest.raises(ValueError, match=r"budget=.*smallest architecture.*'params': \d+") as err:
        make(env_id, hard_budget=True, budget=10, **kwargs)
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("budget", [600, 1_500, {"params": 3_000, "flops": 10_000,
                                                 "memory_bytes": 12_000}])
def test_macro_masks_are_sound_and_exact_on_a_small_space(budget) -> None:
    """Enumerate every architecture of a small space: the ones the hard-budget masks let an agent
    finish are exactly the ones within the budget."""
    env = make("MacroNAS-v0", filters=(4, 8, 16), kernels=(1, 3), strides=(1, 4), max_layers=3,
               skip_connections=True, hard_budget=True, budget=budget)
    grammar = env.grammar

    def finish(state, out: set, hard: bool) -> None:
        if state.done:
            out.add(state.layers)
            return
        mask = env.allowed_actions(state) if hard else grammar.valid(state)
        for a in np.flatnonzero(mask):
            finish(grammar.apply(state, int(a)), out, hard)

    every, allowed = set(), set()
    finish(grammar.start(), every, hard=False)
    finish(grammar.start(), allowed, hard=True)
    fitting = {ls for ls in every if env.hard_budget_rule.fits(MacroArchitecture(ls, env.head))}
    assert len(every) == 2_712 and 0 < len(fitting) < len(every)
    assert allowed == fitting


def test_macro_loose_budget_masks_nothing() -> None:
    env = make("MacroNAS-v0", skip_connections=True, hard_budget=True, budget=10**9)
    _, masked = random_episodes(env, 10)
    assert masked == 0


def test_macro_every_finished_architecture_fits_with_three_bounds() -> None:
    bounds = {"params": 5_000, "flops": 30_000, "memory_bytes": 40_000}
    env = make("MacroNAS-v0", skip_connections=True, hard_budget=True, budget=bounds,
               penalty="epnas", reject_infeasible=True)
    infos, masked = random_episodes(env, 100)
    assert masked > 0
    for info in infos:
        assert_within(info, bounds)
        assert info["status"] == "ok" and info["penalty"] == 0  # never infeasible, never penalised


@pytest.mark.parametrize("budget", [{"params": 2_300}, {"params": 4_000, "flops": 60_000}])
def test_cell_every_finished_architecture_fits(budget) -> None:
    env = make("CellNAS-v0", hard_budget=True, budget=budget, **CELL)
    infos, masked = random_episodes(env, 3)
    assert masked > 0
    for info in infos:
        assert_within(info, budget)


def test_cell_hard_budget_changes_nothing_when_off() -> None:
    env = make("CellNAS-v0", budget=2_300, **CELL)
    assert not env.hard_budget and env.hard_budget_rule is None
    _, masked = random_episodes(env, 2)
    assert masked == 0
