"""Hard budgets (SPEC §3.5, beyond the papers): mask the actions after which no completion meets
a budget known before training, so every finished architecture meets it.

All seeds treat their cost constraints as soft (a reward penalty). With ``hard_budget=True`` a
token env (CellNAS-v0, MacroNAS-v0) also masks actions: action ``a`` is allowed only if one of a
few **explicit completions** of ``tokens + [a]`` fits the budget. Each completion is the rollout of
a deterministic *cheap-token rule* (a function of the grammar state only: fewest blocks or layers,
smallest widths and kernels, parameter-free ops ...). That gives the guarantee:

- if some rule's completion of the current prefix fits, the action that rule takes next is
  allowed (its completion of ``prefix + [a]`` is the same architecture), so a state reached through
  allowed actions always has an allowed action;
- a finished architecture is its own completion, so it fits.

An action whose only fitting completions lie outside the rules' family is masked too: the mask is
conservative, never optimistic. If no rule's completion of the empty prefix fits, the env raises
:class:`~nas_gym.errors.ConfigError` at ``gym.make`` time, naming ``budget`` and the smallest cost
found.

Enforced: **upper** bounds on ``params``, ``flops`` and ``memory_bytes`` (monotone, known before
training). Lower bounds and every other metric stay soft (the reward's penalty still applies).
Costs are compared exactly as :func:`nas_gym.costs.static_costs` reports them for the built module:
:func:`module_cost_fn` counts them with :func:`nas_gym.costs.architecture_costs` (cached by
architecture sha256); a space may pass a closed-form function instead when a test proves it equal
(``nas_gym.models.macro.macro_costs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..arch.base import Architecture
from ..costs import architecture_costs, count_params
from ..errors import ConfigError
from ..models import COST_FORMS, build_model
from ..rewards import Constraint

#: Metrics a hard budget enforces (pre-training, monotone in the architecture's size).
HARD_METRICS: tuple[str, ...] = ("params", "flops", "memory_bytes")

CostFn = Callable[[Architecture], Mapping[str, float]]


def module_cost_fn(input_shape: tuple[int, int, int], num_classes: int,
                   metrics: Sequence[str] = HARD_METRICS) -> CostFn:
    """Costs of the module ``build_model`` makes for an architecture, as ``static_costs`` counts
    them: :func:`~nas_gym.costs.architecture_costs` (the space's closed form when it has one;
    only ``count_params`` of a built module when ``params`` is the only metric asked and there is
    none: no forward pass)."""

    def costs(arch: Architecture) -> dict[str, float]:
        if set(metrics) <= {"params"} and arch.kind not in COST_FORMS:
            return {"params": count_params(build_model(arch, input_shape, num_classes,
                                                       init=False))}
        return architecture_costs(arch, input_shape, num_classes)

    return costs


class HardBudget:
    """The upper bounds of a budget that can be enforced by masking, and the check itself.

    :param constraints: the budget's constraints (``Reward.constraints``).
    :param cost_fn: architecture -> costs holding at least the bounded metrics.
    :param cache: memoise ``cost_fn`` by architecture sha256 (for module-building cost functions).
    """

    def __init__(self, constraints: Iterable[Constraint], cost_fn: CostFn, *,
                 cache: bool = True) -> None:
        constraints = tuple(constraints)
        self.bounds: dict[str, float] = {c.metric: c.upper for c in constraints
                                         if c.metric in HARD_METRICS and c.upper is not None}
        if not self.bounds:
            got = {c.metric: (c.lower, c.upper) for c in constraints}
            raise ConfigError(
                f"hard_budget=True needs an upper bound on one of {list(HARD_METRICS)} in "
                f"`budget`; got budget constraints {got or None}")
        self.cost_fn, self.cache = cost_fn, cache
        self._costs: dict[str, Mapping[str, float]] = {}

    @classmethod
    def for_space(cls, constraints: Iterable[Constraint], input_shape: tuple[int, int, int],
                  num_classes: int, cost_fn: CostFn | None = None) -> HardBudget:
        """A hard budget over ``cost_fn`` (closed form, uncached) or, when None, over built
        modules (cached)."""
        if cost_fn is not None:
            return cls(constraints, cost_fn, cache=False)
        constraints = tuple(constraints)
        metrics = [c.metric for c in constraints if c.metric in HARD_METRICS]
        return cls(constraints, module_cost_fn(input_shape, num_classes, metrics))

    def costs(self, arch: Architecture) -> Mapping[str, float]:
        if not self.cache:
            return self.cost_fn(arch)
        key = arch.sha256
        if key not in self._costs:
            self._costs[key] = self.cost_fn(arch)
        return self._costs[key]

    def fits(self, arch: Architecture) -> bool:
        costs = self.costs(arch)
        return all(costs[m] <= upper for m, upper in self.bounds.items())

    def mask(self, valid: np.ndarray, completions: Callable[[int], Iterable[Architecture]]
             ) -> np.ndarray:
        """``valid`` with every action masked whose completions (``completions(a)``) all break
        the budget."""
        out = np.zeros_like(valid, dtype=bool)
        for a in np.flatnonzero(valid):
            out[a] = any(self.fits(arch) for arch in completions(int(a)))
        return out

    def check_start(self, completions: Iterable[Architecture]) -> None:
        """Raise :class:`ConfigError` naming ``budget`` when no completion of the empty prefix fits
        (so no episode could finish within it)."""
        archs = list(completions)
        if any(self.fits(a) for a in archs):
            return
        smallest = {m: min(self.costs(a)[m] for a in archs) for m in self.bounds}
        raise ConfigError(
            f"budget={self.bounds} cannot be met with hard_budget=True: the smallest architecture "
            f"this env can construct costs {smallest}; raise the budget or shrink the search space")
