"""Rewards (SPEC §3): accuracy transforms, budgets and cost penalties, composable.

A :class:`Reward` is ``accuracy transform`` + ``penalty`` over the ``constraints`` of a budget:

- ``"benas"`` (B-ENAS eq. 2-3): ``R = P - alpha * sum_i penalty(c_i, U_i)`` with
  ``penalty = 0`` if ``c < U``; ``beta * c/U + (1 - beta)`` if ``U <= c < 10U``; ``9 beta + 1`` if
  ``c >= 10U``. **Decision** (SPEC §3.1): the paper prints ``(1 - beta) U_c``; only ``(1 - beta)``
  meets the cap ``9 beta + 1`` at ``c = 10U``, so that is implemented. Upper bounds only.
- ``"linear"`` (seed 001 eq. 4): ``R = P - sum_m w_m * c_m``, or with reference costs
  ``R = P - sum_m w_m * c_m / ref_m``. Named weight sets (:data:`LINEAR_WEIGHTS`): ``"printed"``
  (absolute, ``{params: 10e-9, flops: 2.5 * 10e-7}`` as printed, i.e. 1e-8 and 2.5e-6; the default
  of a bare ``Reward("linear")``) and ``"calibrated"`` (SPEC §3.2 Decision: ``0.05`` per term,
  relative to ``references``, e.g. the median costs of an env's space - MacroNAS-v0's default).
- ``"epnas"`` (EPNAS eq. 2-3): ``R = P * prod_i V(c_i)``, ``V = p ** max(max(0, c/C_u - 1),
  max(0, C_l/c - 1))``, ``p = 0.9`` per constraint; lower and upper bounds.
- ``"none"``: ``R = P``.

``P`` is the accuracy after the accuracy transform: ``"identity"`` or ``"tan"`` (EAS:
``tan(acc * pi / 2)`` with acc clipped to ``[0, 1 - 1e-6]`` so it stays finite).
``info["penalty"]`` is always ``P - R``; ``info["reward_parts"]`` shows every term.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .costs import COST_METRICS
from .errors import ConfigError, bad_value
from .registry import Registry

PENALTIES = ("benas", "epnas", "linear", "none")
ACCURACY_TRANSFORMS = ("identity", "tan")
TAN_CLIP = 1.0 - 1e-6
#: Named weight sets of the linear penalty (seed 001 eq. 4). ``"printed"``: the paper's
#: coefficients as printed, per parameter and per FLOP; ``"calibrated"``: SPEC §3.2 Decision,
#: per reference cost (the reference architecture loses 5 points per term), needs ``references``.
LINEAR_WEIGHTS: dict[str, dict[str, float]] = {
    "printed": {"params": 10e-9, "flops": 2.5 * 10e-7},
    "calibrated": {"params": 0.05, "flops": 0.05},
}
RELATIVE_WEIGHT_SETS = ("calibrated",)


@dataclass(frozen=True)
class Constraint:
    """``lower <= cost[metric] <= upper``; either bound may be None."""

    metric: str
    lower: float | None = None
    upper: float | None = None


def _bound(arg: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_value(arg, value, "a positive finite number or None")
    if not math.isfinite(value) or value <= 0:
        raise bad_value(arg, value, "a positive finite number or None")
    return float(value)


def parse_budget(budget: Any, default_metric: str = "params") -> tuple[Constraint, ...]:
    """``None`` -> no constraint; a number -> upper bound on ``default_metric``; a dict
    ``{metric: upper}`` or ``{metric: (lower, upper)}``."""
    if budget is None:
        return ()
    if not isinstance(budget, Mapping):
        return (Constraint(default_metric, None, _bound("budget", budget)),)
    out = []
    for metric, bound in budget.items():
        if metric not in COST_METRICS:
            raise bad_value("budget metric", metric, COST_METRICS)
        if isinstance(bound, (tuple, list)):
            if len(bound) != 2:
                raise bad_value(f"budget[{metric!r}]", bound, "upper or a (lower, upper) pair")
            lower = _bound(f"budget[{metric!r}] lower", bound[0])
            upper = _bound(f"budget[{metric!r}] upper", bound[1])
            if lower is None and upper is None:
                raise bad_value(f"budget[{metric!r}]", bound, "at least one bound that is not None")
            if lower is not None and upper is not None and lower > upper:
                raise bad_value(f"budget[{metric!r}]", bound, "lower <= upper")
        else:
            lower, upper = None, _bound(f"budget[{metric!r}]", bound)
        out.append(Constraint(metric, lower, upper))
    if not out:
        raise bad_value("budget", budget, "a non-empty dict, a positive number or None")
    return tuple(out)


def benas_penalty(c: float, upper: float, beta: float = 1.0) -> float:
    """B-ENAS eq. 3 with the documented correction."""
    if c < upper:
        return 0.0
    if c < 10 * upper:
        return beta * c / upper + (1.0 - beta)
    return 9.0 * beta + 1.0


def epnas_violation(c: float, lower: float | None, upper: float | None, p: float = 0.9) -> float:
    """EPNAS soft violation ``V(U)`` of one constraint, in (0, 1]."""
    over = max(0.0, c / upper - 1.0) if upper is not None else 0.0
    if lower is not None:
        under = max(0.0, lower / c - 1.0) if c > 0 else math.inf
    else:
        under = 0.0
    return p ** max(over, under)


def tan_transform(accuracy: float) -> float:
    """EAS reward transform ``tan(acc * pi / 2)``, accuracy clipped below 1."""
    return math.tan(min(max(accuracy, 0.0), TAN_CLIP) * math.pi / 2)


PenaltyFn = Any
PENALTY_FNS: Registry[PenaltyFn] = Registry("penalty")


@PENALTY_FNS.register("none")
def _none(p: float, costs: Mapping[str, float], reward: Reward) -> tuple[float, dict[str, float]]:
    return p, {}


@PENALTY_FNS.register("benas")
def _benas(p: float, costs: Mapping[str, float], reward: Reward) -> tuple[float, dict[str, float]]:
    parts = {f"penalty/{c.metric}": benas_penalty(costs[c.metric], c.upper, reward.beta)
             for c in reward.constraints}
    return p - reward.alpha * sum(parts.values()), parts


@PENALTY_FNS.register("linear")
def _linear(p: float, costs: Mapping[str, float], reward: Reward) -> tuple[float, dict[str, float]]:
    refs = reward.references
    if refs is None and reward.weight_set in RELATIVE_WEIGHT_SETS:
        raise ConfigError(f"weights={reward.weight_set!r} is relative to reference costs: give "
                          "references={metric: cost} (MacroNAS-v0 derives them at gym.make)")
    parts = {f"penalty/{m}": w * costs[m] / (1.0 if refs is None else refs[m])
             for m, w in reward.weights.items()}
    return p - sum(parts.values()), parts


@PENALTY_FNS.register("epnas")
def _epnas(p: float, costs: Mapping[str, float], reward: Reward) -> tuple[float, dict[str, float]]:
    parts = {f"violation/{c.metric}": epnas_violation(costs[c.metric], c.lower, c.upper, reward.p)
             for c in reward.constraints}
    return p * math.prod(parts.values()), parts


@dataclass(frozen=True)
class Reward:
    """A composable reward: accuracy transform + penalty over a budget's constraints.

    :param penalty: ``"benas" | "epnas" | "linear" | "none"``.
    :param constraints: from :func:`parse_budget`.
    :param accuracy_transform: ``"identity"`` or ``"tan"`` (EAS).
    :param alpha: B-ENAS reward weight (0.1). :param beta: B-ENAS slope (1).
    :param p: EPNAS base penalty per constraint (0.9).
    :param weights: linear-penalty weight per metric, or the name of a set in
        :data:`LINEAR_WEIGHTS` (``"printed"``: seed 001's params 10e-9, flops 2.5*10e-7, the default;
        ``"calibrated"``: 0.05 per term relative to ``references``).
    :param references: None (each term is ``w_m * c_m``) or a reference cost per weighted metric
        (each term is ``w_m * c_m / ref_m``; SPEC §3.2 Decision).
    """

    penalty: str = "none"
    constraints: tuple[Constraint, ...] = ()
    accuracy_transform: str = "identity"
    alpha: float = 0.1
    beta: float = 1.0
    p: float = 0.9
    weights: Mapping[str, float] | str = "printed"
    references: Mapping[str, float] | None = None

    @property
    def weight_set(self) -> str | None:
        """The name of the weight set the weights came from (None: given as a dict)."""
        return self._weight_set

    def __post_init__(self) -> None:
        PENALTY_FNS.get(self.penalty, "penalty")
        name = None
        if isinstance(self.weights, str):
            if self.weights not in LINEAR_WEIGHTS:
                raise bad_value("weights", self.weights, sorted(LINEAR_WEIGHTS))
            name = self.weights
            object.__setattr__(self, "weights", dict(LINEAR_WEIGHTS[name]))
        elif not isinstance(self.weights, Mapping):
            raise bad_value("weights", self.weights,
                            f"a dict {{metric: weight}} or one of {sorted(LINEAR_WEIGHTS)}")
        object.__setattr__(self, "_weight_set", name)
        if self.references is not None:
            if not isinstance(self.references, Mapping):
                raise bad_value("references", self.references, "None or a dict {metric: cost}")
            for m in self.weights:
                ref = self.references.get(m)
                if (isinstance(ref, bool) or not isinstance(ref, (int, float))
                        or not math.isfinite(ref) or ref <= 0):
                    raise bad_value(f"references[{m!r}]", ref,
                                    "a finite cost > 0 for every weighted metric")
        if self.accuracy_transform not in ACCURACY_TRANSFORMS:
            raise bad_value("accuracy_transform", self.accuracy_transform, ACCURACY_TRANSFORMS)
        if not 0 <= self.alpha <= 1:
            raise bad_value("alpha", self.alpha, "a number in [0, 1] (B-ENAS eq. 2)")
        if not self.beta > 0:
            raise bad_value("beta", self.beta, "a number > 0 (B-ENAS eq. 3)")
        if not 0 < self.p <= 1:
            raise bad_value("p", self.p, "a number in (0, 1] (EPNAS eq. 3)")
        for m, w in self.weights.items():
            if m not in COST_METRICS:
                raise bad_value("weights metric", m, COST_METRICS)
            if not math.isfinite(w) or w < 0:
                raise bad_value(f"weights[{m!r}]", w, "a finite number >= 0")
        if self.penalty == "benas":
            for c in self.constraints:
                if c.lower is not None:
                    raise ConfigError(
                        f"budget[{c.metric!r}] has a lower bound {c.lower}, which penalty='benas' "
                        "does not support (upper bounds only); use penalty='epnas'"
                    )

    @property
    def metrics(self) -> tuple[str, ...]:
        """The cost metrics this reward reads."""
        if self.penalty == "linear":
            return tuple(self.weights)
        if self.penalty == "none":
            return ()
        return tuple(c.metric for c in self.constraints)

    def transform(self, accuracy: float) -> float:
        return tan_transform(accuracy) if self.accuracy_transform == "tan" else float(accuracy)

    def __call__(self, accuracy: float, costs: Mapping[str, float]) -> tuple[float, dict[str, float]]:
        """``(reward, parts)``; parts hold ``accuracy``, ``P``, each penalty term, ``penalty``."""
        p = self.transform(accuracy)
        reward, parts = PENALTY_FNS.get(self.penalty)(p, costs, self)
        return float(reward), {"accuracy": float(accuracy), "P": p, **parts,
                               "penalty": p - float(reward), "reward": float(reward)}

    def satisfied(self, costs: Mapping[str, float]) -> bool:
        """Whether ``costs`` meet every constraint of the budget whose metric they hold (so
        pre-training costs can be checked before ``train_seconds`` exists)."""
        return all(
            (c.lower is None or costs[c.metric] >= c.lower)
            and (c.upper is None or costs[c.metric] <= c.upper)
            for c in self.constraints if c.metric in costs
        )
