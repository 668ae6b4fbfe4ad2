"""What a B-ENAS run is: :class:`BenasConfig` (the paper's settings, §4.1), the SelectCell rules, and
the searched cell's budget derived from the final model's (:func:`derive_budget`; the rules are
documented in :mod:`nas_gym.experiments.benas`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

import nas_gym
from nas_gym.arch.base import Architecture
from nas_gym.arch.cell import CellArchitecture
from nas_gym.costs import count_params, static_costs
from nas_gym.errors import bad_value
from nas_gym.rewards import parse_budget

__all__ = ["DERIVABLE_METRICS", "SELECT_RULES", "BenasConfig", "derive_budget"]

SELECT_RULES = ("accuracy_x_cost", "accuracy_per_cost", "accuracy")
DERIVABLE_METRICS = ("params", "flops", "memory_bytes")  # known from the built model


@dataclass
class BenasConfig:
    """One B-ENAS run; defaults are the paper's settings except the sizes (§4.1)."""

    env: str = "CellNAS-v0"
    """Env id: ``CellNAS-v0`` (B-ENAS) or ``MacroNAS-v0``."""
    budget: Any = field(default_factory=lambda: {"params": 30_000})
    """Budget of the B-ENAS penalty (eq. 3), e.g. ``{"params": 3e4}``, ``{"train_seconds": 5}``."""
    epochs: int = 10
    """e, epochs of Algorithm 1 (paper: 150)."""
    child_steps: int | None = None
    """b, mini-batches of TrainChild per epoch; None = the paper's 2 |D| / batch_size."""
    controller_steps: int = 30
    """s, REINFORCE steps of TrainController per epoch (paper: 30)."""
    batch_size: int = 160
    """Mini-batch of TrainChild and of the validation score (paper: 160)."""
    alpha: float = 0.1
    """Weight of the penalty in the reward (eq. 2; paper: 0.1)."""
    beta: float = 1.0
    """Slope of the penalty (eq. 3; paper: 1)."""
    select: str = "accuracy_x_cost"
    """SelectCell rule: accuracy_x_cost (paper, default), accuracy_per_cost or accuracy."""
    select_samples: int = 10
    """Cells sampled by SelectCell (paper: 10)."""
    max_select_samples: int = 100
    """Keep sampling up to this many cells while none meets the budget."""
    final_n: int = 3
    """N of the final model (paper: 3, the "11-layer" model)."""
    final_channels: int | None = None
    """First-stage width of the final model (None: the searched model's)."""
    final_drop_path: float = 0.0
    """ScheduledDropPath of the final retraining (NASNet; 0 = off): ``TrainConfig.drop_path``."""
    final_budget: Any = None
    """Budget of the final model; when given, ``budget`` is derived from it (module doc)."""
    budget_samples: int = 32
    """Cells sampled to derive the budget's cost ratio from ``final_budget``."""
    final_epochs: int = 10
    """Epochs of the final retraining from scratch (0: skip)."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"dataset": "digits"})
    """Other env keywords (dataset, channels, max_blocks, ops, device, ...)."""
    controller_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keywords of ReinforceAgent (default batch_episodes=1: one update per cell, Algorithm 3)."""
    seed: int = 0
    """Seed of Omega, the controller and the final model."""
    out: str | None = None
    """Folder for ``benas.json`` (None: write nothing)."""

    def validate(self) -> BenasConfig:
        if self.env not in nas_gym.ENV_IDS:
            raise bad_value("env", self.env, sorted(nas_gym.ENV_IDS))
        for name, low in (("epochs", 1), ("controller_steps", 0), ("batch_size", 1),
                          ("select_samples", 1), ("max_select_samples", 1), ("final_n", 1),
                          ("final_epochs", 0), ("seed", 0), ("budget_samples", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(name, v, f"an integer >= {low}")
        if self.child_steps is not None and (not isinstance(self.child_steps, int)
                                             or self.child_steps < 0):
            raise bad_value("child_steps", self.child_steps, "None or an integer >= 0")
        if self.select not in SELECT_RULES:
            raise bad_value("select", self.select, SELECT_RULES)
        if not (isinstance(self.final_drop_path, (int, float)) and 0 <= self.final_drop_path < 1):
            raise bad_value("final_drop_path", self.final_drop_path, "a probability in [0, 1)")
        if self.final_channels is not None and (isinstance(self.final_channels, bool) or not
                                                isinstance(self.final_channels, int)
                                                or self.final_channels < 1):
            raise bad_value("final_channels", self.final_channels, "None or an integer >= 1")
        parse_budget(self.budget)
        for c in parse_budget(self.final_budget):
            if c.metric not in DERIVABLE_METRICS or c.lower is not None:
                raise bad_value("final_budget", self.final_budget,
                                f"upper bounds on {DERIVABLE_METRICS} (known before training)")
        return self

    def final_architecture(self, arch: Architecture) -> Architecture:
        """The final model of a searched architecture: a cell at ``final_n`` (and
        ``final_channels``); any other architecture as it is."""
        if isinstance(arch, CellArchitecture):
            return arch.with_size(self.final_n, self.final_channels)
        return arch


def derive_budget(config: BenasConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """The searched model's budget from ``config.final_budget`` (module doc) and how it was
    derived: ``{"ratio": {metric: median}, "final_budget", "samples": [architecture dicts]}``."""
    constraints = parse_budget(config.final_budget)
    kwargs = {**config.env_kwargs, "seed": config.seed, "store": ":memory:",
              "measure_latency": False, "penalty": "none"}
    probe = gym.make(config.env, **kwargs)
    archs: list[Architecture] = []
    rng = np.random.default_rng(0)
    with probe.unwrapped.sampling(lambda arch: archs.append(arch) or {}):
        while len(archs) < config.budget_samples:
            obs, info = probe.reset(seed=len(archs))
            done = False
            while not done:
                action = int(rng.choice(np.flatnonzero(info["action_mask"])))
                obs, _, done, _, info = probe.step(action)
    shape, classes = probe.unwrapped.input_shape, probe.unwrapped.num_classes
    probe.close()
    ratios: dict[str, list[float]] = {c.metric: [] for c in constraints}
    def cost(arch: Architecture) -> dict[str, float]:
        model = nas_gym.build_model(arch, shape, classes)
        return {"params": count_params(model)} if list(ratios) == ["params"] \
            else static_costs(model, shape)  # FLOPs and memory need a counted forward pass

    for arch in archs:
        costs = [cost(a) for a in (arch, config.final_architecture(arch))]
        for m in ratios:
            ratios[m].append(costs[1][m] / costs[0][m])
    ratio = {m: float(np.median(v)) for m, v in ratios.items()}
    budget = {c.metric: c.upper / ratio[c.metric] for c in constraints}
    return budget, {"final_budget": {c.metric: c.upper for c in constraints}, "ratio": ratio,
                    "samples": [a.to_dict() for a in archs]}
