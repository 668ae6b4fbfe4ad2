"""What a search is: :class:`SearchConfig` (``nas-gym search``'s options, one field each) and the
fields a resume must match."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nas_gym
from nas_gym.agents import AGENTS
from nas_gym.costs import COST_METRICS
from nas_gym.errors import bad_value
from nas_gym.rewards import parse_budget

from .options import agent_class

__all__ = ["IDENTITY", "SEARCH_BACKENDS", "SearchConfig"]

#: ``--backend`` values (``auto``: local for one worker, else process).
SEARCH_BACKENDS = ("auto", "local", "process", "ray")
#: Fields that must match to resume a search in the same folder (not the backend or the worker
#: count: store keys do not depend on them, so a search may resume on a cluster and back).
IDENTITY = ("env", "agent", "env_kwargs", "agent_kwargs", "budget", "seed")


@dataclass
class SearchConfig:
    """One search (``nas-gym search``); every field is a command-line option of the same name."""

    env: str = "CellNAS-v0"
    """Env id (one of ``nas_gym.ENV_IDS``)."""
    agent: str = "reinforce"
    """Agent name (one of ``agents.AGENTS``) or a class by import path ``module:Class`` (the agent
    interface, or a plain SB3 algorithm class; the current folder is importable)."""
    episodes: int = 20
    """Total episodes (= evaluated architectures, cache hits included); a resume continues to it."""
    budget: Any = field(default_factory=lambda: {"params": 30_000})
    """Cost budget passed to the env: ``{metric: upper}`` / ``{metric: [lower, upper]}``, a number
    (upper bound on the env's default metric) or None."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"dataset": "digits", "epochs": 2})
    """Every other keyword of the env (dataset, epochs, penalty, channels, ...)."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keywords of the agent (e.g. ``batch_episodes``, ``prob_floor``, ``n_steps``)."""
    seed: int = 0
    """Seed of the agent and of child training (the env's ``seed`` unless env_kwargs sets it)."""
    final_epochs: int = 8
    """Retrain the best architecture at full size for this many epochs and report its test
    accuracy (0: skip)."""
    threads: int = 1
    """torch threads of this process (tiny children train fastest on one; parallel searches must
    not oversubscribe the cores)."""
    workers: int = 1
    """Children trained at the same time: the agent plays its batch (REINFORCE's
    batch_episodes, EAS's 10, EPNAS's branches) on this many env copies, each training in its own
    worker process (or Ray task)."""
    backend: str = "auto"
    """Where children train: auto (in this process for 1 worker, else worker processes),
    local, process (worker processes of this machine) or ray (tasks on a Ray cluster)."""
    address: str | None = None
    """Ray cluster address with --backend ray (e.g. auto, ray://head:10001); none: a local Ray
    instance is started."""
    out: str = "runs/search"
    """Output folder (a folder holding a search is resumed)."""
    progress: bool = True
    """Show a progress bar (on stderr)."""
    tensorboard: str | None = None
    """Also log every evaluation, the accuracy-vs-cost scatter and this config to a TensorBoard
    run in this folder (SB3 agents log their training curves there too); needs tensorboard."""

    def validate(self) -> SearchConfig:
        if self.env not in nas_gym.ENV_IDS:
            raise bad_value("--env", self.env, sorted(nas_gym.ENV_IDS))
        agent_cls = agent_class(self.agent)
        for name, low in (("episodes", 1), ("final_epochs", 0), ("threads", 1), ("seed", 0),
                          ("workers", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(f"--{name.replace('_', '-')}", v, f"an integer >= {low}")
        for name in ("env_kwargs", "agent_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise bad_value(f"--{name.replace('_', '-')}", getattr(self, name), "a mapping")
        if isinstance(self.budget, dict):
            for metric in self.budget:
                if metric not in COST_METRICS:
                    raise bad_value("--budget metric", metric, COST_METRICS)
        parse_budget(self.budget)
        if not isinstance(self.out, str) or not self.out:
            raise bad_value("--out", self.out, "a folder path")
        if self.backend not in SEARCH_BACKENDS:
            raise bad_value("--backend", self.backend, SEARCH_BACKENDS)
        if self.address is not None and self.backend != "ray":
            raise bad_value("--backend", self.backend, "ray when --address is given")
        if self.workers > 1 and not getattr(agent_cls, "concurrent_batches", False):
            batched = sorted(n for n in AGENTS.names()
                             if getattr(AGENTS.get(n, "--agent"), "concurrent_batches", False))
            raise bad_value("--workers", self.workers,
                            f"1 for agent {self.agent!r} (it plays one episode at a time); "
                            f"agents that evaluate a batch concurrently: {batched}")
        for key in ("evaluator_backend", "ray_address"):
            if key in self.env_kwargs:
                raise bad_value(f"--env-kwargs {key}", self.env_kwargs[key],
                                "no value: use --backend / --address")
        return self

    def evaluator_backend(self) -> str:
        """The env's ``evaluator_backend`` for this search."""
        if self.backend == "auto":
            return "local" if self.workers == 1 else "process"
        return self.backend
