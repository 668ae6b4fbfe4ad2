"""Each reward against values computed by hand from the formulas of SPEC §3."""

from __future__ import annotations

import math

import pytest

from nas_gym.errors import ConfigError
from nas_gym.rewards import (
    Constraint,
    Reward,
    benas_penalty,
    epnas_violation,
    parse_budget,
    tan_transform,
)


@pytest.mark.parametrize(
    ("c", "beta", "expected"),
    [
        (0.0, 1.0, 0.0),
        (29_999, 1.0, 0.0),
        (30_000, 1.0, 1.0),  # c = U: beta * 1 + (1 - beta) = 1, the designed jump from 0
        (60_000, 1.0, 2.0),
        (299_999, 1.0, 299_999 / 30_000),
        (300_000, 1.0, 10.0),  # c = 10U: the cap 9 beta + 1
        (3_000_000, 1.0, 10.0),
        (30_000, 0.5, 0.5 * 1 + 0.5),
        (150_000, 0.5, 0.5 * 5 + 0.5),
        (300_000, 0.5, 9 * 0.5 + 1),  # cap, continuous with the linear branch at 10U
    ],
)
def test_benas_penalty_by_hand(c: float, beta: float, expected: float) -> None:
    assert benas_penalty(c, 30_000, beta) == pytest.approx(expected, abs=1e-12)


def test_benas_branch_meets_cap_at_10u() -> None:
    for beta in (0.3, 1.0, 2.5):
        below = benas_penalty(10 * 30_000 - 1e-6, 30_000, beta)
        assert below == pytest.approx(9 * beta + 1, abs=1e-9)


def test_benas_reward_by_hand() -> None:
    r = Reward("benas", parse_budget(30_000), alpha=0.1, beta=1.0)
    reward, parts = r(0.9, {"params": 60_000})
    assert reward == pytest.approx(0.9 - 0.1 * 2.0)
    assert parts["penalty/params"] == pytest.approx(2.0)
    assert parts["penalty"] == pytest.approx(0.2)
    two = Reward("benas", parse_budget({"params": 30_000, "flops": 1e6}))
    reward, _ = two(0.8, {"params": 15_000, "flops": 5e6})
    assert reward == pytest.approx(0.8 - 0.1 * 5.0)


@pytest.mark.parametrize(
    ("c", "lower", "upper", "expected"),
    [
        (1e6, None, 2e6, 1.0),
        (2e6, None, 2e6, 1.0),  # on the bound: no violation
        (3e6, None, 2e6, 0.9 ** 0.5),
        (20e6, None, 2e6, 0.9 ** 9),
        (80, 80, None, 1.0),
        (40, 80, None, 0.9 ** 1.0),  # lower bound: C_l / c - 1 = 1
        (20, 80, None, 0.9 ** 3.0),
        (50, 40, 100, 1.0),
        (150, 40, 100, 0.9 ** 0.5),
    ],
)
def test_epnas_violation_by_hand(c, lower, upper, expected) -> None:
    assert epnas_violation(c, lower, upper, 0.9) == pytest.approx(expected, rel=1e-12)


def test_epnas_reward_two_and_three_constraints() -> None:
    budget = {"params": (None, 2e6), "compute_intensity": (80, None)}
    r = Reward("epnas", parse_budget(budget))
    reward, parts = r(0.9, {"params": 3e6, "compute_intensity": 40})
    assert reward == pytest.approx(0.9 * 0.9 ** 0.5 * 0.9 ** 1.0)
    assert parts["violation/params"] == pytest.approx(0.9 ** 0.5)
    three = Reward("epnas", parse_budget({**budget, "flops": (None, 200e6)}), p=0.8)
    reward, _ = three(0.5, {"params": 1e6, "compute_intensity": 160, "flops": 400e6})
    assert reward == pytest.approx(0.5 * 0.8 ** 1.0)
    reward, parts = three(0.5, {"params": 4e6, "compute_intensity": 20, "flops": 100e6})
    assert reward == pytest.approx(0.5 * 0.8 ** 1.0 * 0.8 ** 3.0)
    assert parts["penalty"] == pytest.approx(0.5 - reward)


def test_linear_reward_by_hand() -> None:
    r = Reward("linear")
    reward, parts = r(0.7, {"params": 200_000, "flops": 10_000})
    assert reward == pytest.approx(0.7 - 1e-8 * 200_000 - 2.5e-6 * 10_000)
    assert parts["penalty/params"] == pytest.approx(0.002)
    custom = Reward("linear", weights={"latency_ms": 0.01})
    assert custom(0.5, {"latency_ms": 10.0})[0] == pytest.approx(0.4)
    relative = Reward("linear", weights="calibrated", references={"params": 100_000,
                                                                   "flops": 5_000})
    reward, parts = relative(0.7, {"params": 200_000, "flops": 10_000})
    assert reward == pytest.approx(0.7 - 0.05 * 2 - 0.05 * 2)
    assert relative.weight_set == "calibrated" and Reward("linear").weight_set == "printed"
    with pytest.raises(ConfigError, match="references"):
        Reward("linear", weights="calibrated")(0.7, {"params": 1, "flops": 1})


def test_tan_transform_composes_with_any_penalty() -> None:
    assert tan_transform(0.5) == pytest.approx(1.0)
    assert tan_transform(0.0) == 0.0
    assert math.isfinite(tan_transform(1.0))
    r = Reward("benas", parse_budget(100), accuracy_transform="tan")
    reward, parts = r(0.5, {"params": 200})
    assert parts["P"] == pytest.approx(1.0)
    assert reward == pytest.approx(1.0 - 0.1 * 2.0)
    e = Reward("epnas", parse_budget(100), accuracy_transform="tan")
    assert e(0.5, {"params": 200})[0] == pytest.approx(0.9)


def test_none_penalty_and_satisfied() -> None:
    r = Reward("none", parse_budget({"params": (10, 100)}))
    assert r(0.3, {"params": 1e9})[0] == 0.3
    assert r.satisfied({"params": 50}) and not r.satisfied({"params": 101})
    assert not r.satisfied({"params": 5})
    assert r.satisfied({"flops": 5})  # a metric not measured yet is not judged


@pytest.mark.parametrize(
    ("budget", "needle"),
    [
        (0, "budget"),
        (-5, "budget"),
        (float("nan"), "budget"),
        (float("inf"), "budget"),
        ({"parameters": 10}, "parameters"),
        ({"params": (200, 100)}, "lower <= upper"),
        ({"params": (None, None)}, "params"),
        ({}, "budget"),
        ("big", "budget"),
    ],
)
def test_bad_budgets(budget, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_budget(budget)


def test_bad_reward_arguments() -> None:
    with pytest.raises(ConfigError, match="penalty"):
        Reward("quadratic")
    with pytest.raises(ConfigError, match="accuracy_transform"):
        Reward("none", accuracy_transform="log")
    with pytest.raises(ConfigError, match="lower bound"):
        Reward("benas", (Constraint("params", 10, 100),))
    with pytest.raises(ConfigError, match="alpha"):
        Reward("benas", alpha=2)
