"""The B-ENAS search pipeline (Xu et al. 2019, seed 000, §3.4 Algorithms 1-4) on shared weights.

``run_benas(BenasConfig(...))`` (or ``nas-gym search --method benas ...``) runs::

    for epoch in range(e):                                       # Algorithm 1
        TrainChild: b mini-batches, a fresh child from the controller for each (Algorithm 2)
        TrainController: s REINFORCE steps, reward acc - alpha * penalty (Algorithm 3, eq. 2-5)
    SelectCell: sample 10 cells, keep the best feasible one by the selection rule (Algorithm 4)
    retrain the cell at N = 3 from scratch; report validation and test accuracy and its costs

Pieces reused, never copied: the env (``CellNAS-v0`` or ``MacroNAS-v0``) and its evaluation
pipeline (costs, B-ENAS reward, store) with ``evaluator="shared"``
(:class:`nas_gym.evaluators.shared.SharedEvaluator`, which holds Omega and trains it with the
``"benas"`` training preset: Nesterov SGD, cosine restarts 0.05 -> 0.001, T0 10, Tmul 2, weight
decay 1e-4), the REINFORCE-LSTM controller :class:`nas_gym.agents.reinforce.ReinforceAgent` (one update
per sampled cell, as Algorithm 3), and :func:`nas_gym.experiments.final_model.train_final` for the final
model (the final retraining of ``nas-gym search`` too; the only place the test split is read).
The configuration and the cell budget's derivation are :mod:`nas_gym.experiments.benas_config`, the command
line :mod:`nas_gym.experiments.benas_cli`.

TrainChild needs the controller's samples, not their evaluation: during it the env's terminal
evaluation (costs, store, reward) is replaced by one training step of Omega on the child, so a step
costs a mini-batch and not a cost measurement.

**SelectCell rules** (``select``): ``"accuracy_x_cost"`` (**default**): the paper's Algorithm 4,
the largest ``accuracy x cost`` among the cells meeting the budget: with few search epochs the
larger cells are the least trained by Omega, and the product compensates (§3.4); it reproduces
the method as published, but it favours the most expensive feasible cell. ``"accuracy_per_cost"``
favours cheaper cells (``accuracy / cost``); ``"accuracy"`` is ENAS's rule. The cost is the
budget's first metric (``params`` without a budget). If none of the samples meets the budget,
sampling continues up to ``max_select_samples``; failing that the highest-reward cell is kept and
the report says ``"feasible": false`` (the paper leaves that case open). The budget applies to the
searched (N = 1) model, as in B-ENAS, which derives the cell's budget from the final model's.

**Cell budget from the final model's** (``final_budget``; §4.1: "we have to estimate the U_c of the
cell according to the U_c of the complete model. Since the final model is stacked by the cell, the
U_c of the cell can be estimated based on the U_c of the final model"): for each metric,
``budget = final_budget / ratio`` with ``ratio`` the median over ``budget_samples`` cells (uniformly
random legal tokens, seed 0) of ``cost(final model) / cost(searched model)`` - the final model
being the cell at ``final_n`` (and ``final_channels``). Static metrics only (params, flops,
memory_bytes: counted on the built models), upper bounds only. ``final_channels`` (None: the
search width) widens the final model's first stage, as B-ENAS's final models are wider than the
searched one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from nas_gym.agents.episode import Episode
from nas_gym.agents.reinforce import ReinforceAgent
from nas_gym.arch.base import Architecture, architecture_from_dict
from nas_gym.errors import bad_value
from nas_gym.evaluators.shared import SharedEvaluator
from nas_gym.rewards import parse_budget

from .benas_config import SELECT_RULES, BenasConfig, derive_budget
from .final_model import train_final

__all__ = ["BenasSearch", "run_benas", "select_cell"]

#: env keywords that also shape Omega (passed on to the shared evaluator).
SPACE_KEYS = ("ops", "max_blocks", "filters", "kernels", "strides", "max_layers")


def select_cell(candidates: list[dict[str, Any]], rule: str = "accuracy_x_cost") -> int | None:
    """Index of the cell SelectCell keeps among ``candidates`` (dicts with ``accuracy``, ``cost``,
    ``feasible``), or None when none is feasible. Ties keep the first sampled (Algorithm 4's
    strict ``>``)."""
    if rule not in SELECT_RULES:
        raise bad_value("select", rule, SELECT_RULES)

    def score(c: dict[str, Any]) -> float:
        if rule == "accuracy":
            return c["accuracy"]
        if rule == "accuracy_x_cost":
            return c["accuracy"] * c["cost"]
        return c["accuracy"] / c["cost"] if c["cost"] > 0 else math.inf

    best, best_score = None, -math.inf
    for i, c in enumerate(candidates):
        if c["feasible"] and score(c) > best_score:
            best, best_score = i, score(c)
    return best


class BenasSearch:
    """The state of one B-ENAS run: the env (with Omega in its shared evaluator), the controller,
    and the phases of Algorithm 1 as methods."""

    def __init__(self, config: BenasConfig) -> None:
        self.config = config.validate()
        self.budget_derivation: dict[str, Any] | None = None
        if config.final_budget is not None:
            budget, self.budget_derivation = derive_budget(config)
            config.budget = budget
        self.constraints = parse_budget(config.budget)
        self.metric = self.constraints[0].metric if self.constraints else "params"
        kwargs = {"seed": config.seed, "store": ":memory:", "training": "benas",
                  **config.env_kwargs}
        space = {k: kwargs[k] for k in SPACE_KEYS if k in kwargs}
        kwargs.update(budget=config.budget, penalty="benas", batch_size=config.batch_size,
                      penalty_kwargs={"alpha": config.alpha, "beta": config.beta},
                      evaluator="shared",
                      evaluator_kwargs={**space, "batch_size": config.batch_size},
                      measure_latency="latency_ms" in [c.metric for c in self.constraints])
        self.env_kwargs = kwargs
        self.env = gym.make(config.env, **kwargs)
        components = self.env.unwrapped.components
        self.evaluator: SharedEvaluator = components.evaluator
        self.reward, self.data = components.reward, components.data
        self.train_config = components.train_config
        self.agent = ReinforceAgent(seed=config.seed,
                                    **{"batch_episodes": 1, **config.controller_kwargs})
        self.needs_train_seconds = "train_seconds" in self.reward.metrics
        n = self.data.train_x.shape[0]
        self.child_steps = config.child_steps if config.child_steps is not None else \
            max(1, 2 * n // self.evaluator.batch_size)
        self.history: list[dict[str, Any]] = []

    def _ensure_controller(self) -> None:
        self.agent.setup(self.env)  # Algorithm 1 line 1: initialise theta before sampling

    # -- Algorithm 2 ------------------------------------------------------------------------------
    def sample_architectures(self, n: int, on_child: Callable[[Architecture], dict] | None = None
                             ) -> list[Architecture]:
        """``n`` cells from the controller, not evaluated (``on_child(arch)``, when given, runs
        instead of the env's evaluation and may return terminal-info entries)."""
        self._ensure_controller()
        archs: list[Architecture] = []

        def visit(arch: Architecture) -> dict[str, Any]:
            archs.append(arch)
            return on_child(arch) if on_child is not None else {}

        with self.env.unwrapped.sampling(visit):
            self.agent.sample(self.env, n)
        return archs

    def train_child(self, steps: int) -> dict[str, float]:
        """TrainChild: ``steps`` mini-batches, one child sampled from the controller for each."""
        runs: list[Any] = []

        def one_step(arch: Architecture) -> dict[str, Any]:
            self.evaluator.build(arch, seed=self.config.seed)
            runs.append(self.evaluator.train_child(arch, 1))
            return {"accuracy": runs[-1].accuracy, "status": runs[-1].status}

        self.sample_architectures(steps, one_step)
        return {"child_steps": len(runs),
                "child_train_accuracy": _mean(r.accuracy for r in runs),
                "child_loss": _mean(r.loss for r in runs)}

    # -- Algorithm 3 ------------------------------------------------------------------------------
    def train_controller(self, steps: int) -> dict[str, float]:
        """TrainController: ``steps`` REINFORCE updates, each on one cell scored by Omega on one
        validation mini-batch with the B-ENAS reward."""
        self._ensure_controller()
        episodes: list[Episode] = []
        with self.evaluator.settings(train_steps=0, val_batches=1, score_children=True,
                                     measure_train_seconds=self.needs_train_seconds):
            if steps > 0:
                self.agent.learn(self.env, self.agent.num_episodes + steps,
                                 callback=lambda e: episodes.append(e))
        return {"controller_steps": len(episodes),
                "controller_accuracy": _mean(e.info.get("accuracy") for e in episodes),
                "controller_reward": _mean(e.reward for e in episodes),
                "feasible_fraction": _mean(float(self.reward.satisfied(e.costs))
                                           for e in episodes),
                f"mean_{self.metric}": _mean(e.costs.get(self.metric) for e in episodes)}

    # -- Algorithm 4 ------------------------------------------------------------------------------
    def sample_cells(self, n: int, *, val_batches: int | None = 1) -> list[dict[str, Any]]:
        """``n`` cells from the controller, each scored by Omega (``val_batches`` validation
        mini-batches; None: the whole split), with costs, reward and feasibility."""
        self._ensure_controller()
        with self.evaluator.settings(train_steps=0, val_batches=val_batches, score_children=True,
                                     measure_train_seconds=self.needs_train_seconds):
            episodes = self.agent.sample(self.env, n)
        return [{"architecture": e.architecture, "accuracy": float(e.accuracy or 0.0),
                 "cost": float(e.costs.get(self.metric, math.nan)), "costs": e.costs,
                 "reward": float(e.reward), "feasible": bool(self.reward.satisfied(e.costs))}
                for e in episodes]

    def select(self) -> dict[str, Any]:
        """SelectCell (Algorithm 4, rule ``config.select``; see the module doc)."""
        cfg = self.config
        cands = self.sample_cells(cfg.select_samples)
        while select_cell(cands, cfg.select) is None and len(cands) < cfg.max_select_samples:
            cands += self.sample_cells(1)
        i = select_cell(cands, cfg.select)
        if i is None:
            i = int(np.argmax([c["reward"] for c in cands]))
            warnings.warn(f"SelectCell: none of {len(cands)} sampled cells meets the budget "
                          f"{cfg.budget}; keeping the highest-reward one", stacklevel=2)
        return {"index": i, "rule": cfg.select, "metric": self.metric, "candidates": cands,
                **{k: cands[i][k] for k in ("architecture", "accuracy", "cost", "feasible")}}

    # -- the final model ---------------------------------------------------------------------------
    def retrain(self, architecture: dict[str, Any] | Architecture) -> dict[str, Any]:
        """Train the cell at ``final_n`` from scratch on the training split; report validation
        and **test** accuracy (the only read of the test split) and the costs."""
        final = train_final(self.config.final_architecture(architecture_from_dict(architecture)),
                            self.data, self.train_config, self.config.final_epochs,
                            seed=self.config.seed, drop_path=self.config.final_drop_path,
                            measure_costs=True)
        return {"architecture": final.architecture.to_dict(), "epochs": final.config.epochs,
                "status": final.run.status, "val_accuracy": final.val_accuracy,
                "test_accuracy": final.test_accuracy, "costs": final.costs}

    def run(self) -> dict[str, Any]:
        """Algorithm 1, SelectCell, then the final retraining; returns the JSON-able report."""
        start = time.perf_counter()
        for epoch in range(self.config.epochs):
            t = time.perf_counter()
            row = {"epoch": epoch, **self.train_child(self.child_steps),
                   **self.train_controller(self.config.controller_steps)}
            row["seconds"] = time.perf_counter() - t
            self.history.append(row)
        selected = self.select()
        search_seconds = time.perf_counter() - start
        report = {"config": asdict(self.config), "env_kwargs": _jsonable(self.env_kwargs),
                  "history": self.history, "selected": selected,
                  "search_seconds": search_seconds,
                  "budget_derivation": _jsonable(self.budget_derivation),
                  "supernet": {"params": self.evaluator.supernet_params,
                               "memory_bytes": self.evaluator.supernet_memory_bytes,
                               "steps": self.evaluator.state["steps"]}}
        if self.config.final_epochs > 0:
            report["final"] = self.retrain(selected["architecture"])
        if self.config.out:
            out = Path(self.config.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "benas.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
        return report


def run_benas(config: BenasConfig) -> dict[str, Any]:
    """Run B-ENAS as ``config`` says (see the module doc); returns the report."""
    return BenasSearch(config).run()


def _mean(values: Any) -> float:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else math.nan


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
