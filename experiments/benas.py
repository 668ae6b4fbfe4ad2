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
decay 1e-4), the REINFORCE-LSTM controller :class:`agents.reinforce.ReinforceAgent` (one update
per sampled cell, as Algorithm 3), and :func:`nas_gym.training.train` / ``evaluate`` for the final
model (the only place the test split is read).

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

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_gym
from agents.episode import Episode
from agents.reinforce import ReinforceAgent
from nas_gym.arch.base import Architecture, architecture_from_dict
from nas_gym.arch.cell import CellArchitecture
from nas_gym.costs import count_params, static_costs
from nas_gym.errors import ConfigError, bad_value
from nas_gym.evaluators.shared import SharedEvaluator
from nas_gym.rewards import parse_budget
from nas_gym.training import evaluate, train

SELECT_RULES = ("accuracy_x_cost", "accuracy_per_cost", "accuracy")
DERIVABLE_METRICS = ("params", "flops", "memory_bytes")  # known from the built model
#: env keywords that also shape Omega (passed on to the shared evaluator).
SPACE_KEYS = ("ops", "max_blocks", "filters", "kernels", "strides", "max_layers")


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
        arch = architecture_from_dict(architecture)
        final = self.config.final_architecture(arch)
        model = nas_gym.build_model(final, self.data.input_shape, self.data.num_classes,
                                    seed=self.config.seed)
        costs = static_costs(model, self.data.input_shape)
        config = self.train_config.replace(epochs=self.config.final_epochs,
                                           drop_path=self.config.final_drop_path)
        run = train(model, self.data, config, seed=self.config.seed)
        costs["train_seconds"] = run.train_seconds
        val_acc, _ = evaluate(model, self.data.val_x, self.data.val_y, config.eval_batch_size)
        test_acc, _ = evaluate(model, self.data.test_x, self.data.test_y, config.eval_batch_size)
        return {"architecture": final.to_dict(), "epochs": config.epochs, "status": run.status,
                "val_accuracy": val_acc, "test_accuracy": test_acc, "costs": costs}

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


# -- command line: ``nas-gym search --method benas`` -----------------------------------------------
def add_benas_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--method`` and the B-ENAS options to the ``search`` parser of ``experiments.cli``;
    ``--method benas`` maps the search options (``--env``, ``--budget``, ``--env-kwargs`` and
    shortcuts, ``--agent-kwargs`` -> controller, ``--seed``, ``--final-epochs``, ``--out``,
    ``--threads``) onto :class:`BenasConfig`."""
    parser.add_argument("--method", choices=("agent", "benas"), default="agent",
                        help="agent: run --agent on --env (default); benas: the B-ENAS pipeline "
                             "on shared weights (experiments/benas.py)")
    group = parser.add_argument_group("B-ENAS (--method benas)")
    group.add_argument("--benas-epochs", type=int, default=10, help="e, epochs (paper: 150)")
    group.add_argument("--child-steps", type=int, default=None,
                       help="b, TrainChild mini-batches per epoch (default 2|D|/batch)")
    group.add_argument("--controller-steps", type=int, default=30, help="s (paper: 30)")
    group.add_argument("--benas-batch-size", type=int, default=160, help="mini-batch (160)")
    group.add_argument("--select", choices=SELECT_RULES, default="accuracy_x_cost",
                       help="SelectCell rule (default: the paper's accuracy x cost)")
    group.add_argument("--final-n", type=int, default=3, help="N of the final model (3)")
    group.add_argument("--final-channels", type=int, default=None,
                       help="first-stage width of the final model (default: the search width)")
    group.add_argument("--final-drop-path", type=float, default=0.0,
                       help="ScheduledDropPath of the final retraining (NASNet; default 0: off)")
    group.add_argument("--final-budget", default=None, metavar="METRIC=UPPER[,...]",
                       help="budget of the final model; the searched cell's budget is derived "
                            "from it (B-ENAS §4.1; replaces --budget)")
    parser.set_defaults(func=partial(_dispatch, fallback=parser.get_default("func")))


def _dispatch(args: argparse.Namespace, fallback: Callable[[argparse.Namespace], int]) -> int:
    if getattr(args, "method", "agent") != "benas":
        return fallback(args)
    from .cli import search_config  # the search options, resolved as for --method agent

    sc = search_config(args)
    if sc.agent != "reinforce":
        raise bad_value("--agent", sc.agent, "'reinforce' (B-ENAS's controller) with --method benas")
    if sc.workers != 1 or sc.backend not in ("auto", "local"):
        raise bad_value("--workers / --backend", (sc.workers, sc.backend),
                        "1 / local with --method benas (one super-network, in this process)")
    torch.set_num_threads(sc.threads)
    final_budget = None
    if args.final_budget is not None:
        from .cli import parse_budget as parse_budget_text

        try:
            final_budget = parse_budget_text(args.final_budget)
        except ValueError:
            raise bad_value("--final-budget", args.final_budget,
                            "metric=upper[,metric=upper...] over params, flops, memory_bytes") \
                from None
    config = BenasConfig(env=sc.env, budget=sc.budget, epochs=args.benas_epochs,
                         child_steps=args.child_steps, controller_steps=args.controller_steps,
                         batch_size=args.benas_batch_size, select=args.select,
                         final_n=args.final_n, final_epochs=sc.final_epochs,
                         final_channels=args.final_channels, final_budget=final_budget,
                         final_drop_path=args.final_drop_path,
                         env_kwargs=dict(sc.env_kwargs), controller_kwargs=dict(sc.agent_kwargs),
                         seed=sc.seed, out=sc.out)
    try:
        report = run_benas(config)
    except TypeError as exc:  # an unknown env keyword
        raise ConfigError(f"--env-kwargs: {sc.env} does not accept one of "
                          f"{sorted(sc.env_kwargs)} ({exc})") from None
    sel = report["selected"]
    if report["budget_derivation"]:
        print(f"cell budget {config.budget} = final budget "
              f"{report['budget_derivation']['final_budget']} / the median final/search cost "
              f"ratio {report['budget_derivation']['ratio']}")
    print(f"B-ENAS: {config.epochs} epochs in {report['search_seconds']:.1f}s, super-network "
          f"{report['supernet']['params']:,} params; selected ({sel['rule']}): shared-weight "
          f"accuracy {sel['accuracy']:.4f}, {sel['metric']} {sel['cost']:,.6g}, "
          f"feasible {sel['feasible']}")
    final = report.get("final")
    if final:
        c = final["costs"]
        print(f"final N={config.final_n}: test accuracy {final['test_accuracy']:.4f}, params "
              f"{int(c['params']):,}, train_seconds {c['train_seconds']:.1f}")
    print(f"report: {Path(sc.out) / 'benas.json'}")
    return 0
