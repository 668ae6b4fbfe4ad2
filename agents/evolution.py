"""Regularized (aging) evolution, Real et al. 2019 "Regularized Evolution for Image Classifier
Architecture Search" (Algorithm 1), over any nas_gym env through the Gymnasium API.

An individual is the action sequence of an episode (tokens for token envs, transforms for transform
envs) with its return. The first ``population_size`` episodes are random; then every cycle samples
``sample_size`` individuals, takes the best as parent (tournament), **mutates one decision** and
evaluates the child, which joins the population while the **oldest** individual leaves (aging: a
good architecture must keep being rediscovered to survive, which regularizes against lucky
evaluations).

A mutation is played back through the env, so it needs no knowledge of the space: the agent
replays the parent's actions, at one decision (chosen uniformly among those that had more than one
legal action) picks a different legal action, and afterwards keeps each parental action that the
env's mask still allows, drawing a legal one uniformly where it does not (or where the child's
episode runs longer than the parent's).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from nas_gym.errors import bad_value

from .base import Agent
from .callbacks import Callback, as_callback
from .env_api import check_discrete, check_episodes
from .episode import Episode


@dataclass
class _Plan:
    """How one child episode is played: the parent's actions and the decision to mutate."""

    parent: list[int]
    position: int  # -1: no parent (random individual)
    step: int = 0


class RegularizedEvolution(Agent):
    """Aging evolution (Real et al. 2019).

    :param population_size: P, individuals kept alive (Real et al.: 100 for 20k evaluations;
        default 10, tuned for ~100-evaluation searches on NAS-Bench-Macro under ``flops <= 8e7``,
        not the bench's reported params budget: regret@100 0.0032 vs 0.0055 with P=20, S=5,
        random 0.0118, 20 seeds).
    :param sample_size: S, tournament size (Real et al.: 25 for P=100; default 3).
    :param seed: seeds every random choice.
    """

    name = "evolution"

    def __init__(self, *, population_size: int = 10, sample_size: int = 3, seed: int = 0) -> None:
        super().__init__(seed=seed)
        for arg, v in (("population_size", population_size), ("sample_size", sample_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad_value(arg, v, "an integer >= 1")
        if sample_size > population_size:
            raise bad_value("sample_size", sample_size, f"<= population_size={population_size}")
        self.population_size, self.sample_size = population_size, sample_size
        self.population: deque[tuple[list[int], list[int], float]] = deque()  # oldest first

    # -- evolution ------------------------------------------------------------------------------
    def _new_plan(self) -> _Plan:
        if len(self.population) < self.population_size:
            return _Plan(parent=[], position=-1)
        picks = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        actions, choices, _ = max((self.population[i] for i in sorted(picks)),
                                  key=lambda ind: ind[2])
        mutable = [t for t, n in enumerate(choices) if n > 1]
        position = int(self.rng.choice(mutable)) if mutable else -1
        return _Plan(parent=list(actions), position=position)

    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        """The next action of the current child; ``state`` is its plan (a new one at ``None``)."""
        plan: _Plan = state if state is not None else self._new_plan()
        valid = np.flatnonzero(np.asarray(info["action_mask"]))
        t, parent = plan.step, plan.parent
        if t == plan.position:
            others = valid[valid != parent[t]]
            action = self.rng.choice(others) if len(others) else valid[0]
        elif t < len(parent) and parent[t] in valid:
            action = parent[t]
        else:
            action = valid[0] if deterministic else self.rng.choice(valid)
        plan.step += 1
        return int(action), plan

    def learn(self, env: gym.Env, total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None,
              ) -> RegularizedEvolution:
        total, cb = check_episodes(total_episodes), as_callback(callback)
        check_discrete(env, self.name)
        self._stop = False
        while self.num_episodes < total and not self._stop:
            episode = self.play_episode(env)
            choices = [int(np.count_nonzero(m)) for m in episode.masks]
            self.population.append((list(episode.actions), choices, float(episode.reward)))
            if len(self.population) > self.population_size:
                self.population.popleft()  # aging: the oldest dies, not the worst
            self._record(episode, cb)
            cb.on_update(self)
        return self

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [list(map(list, ind[:2])) + [ind[2]]
                                                       for ind in self.population],
                "population_size": self.population_size, "sample_size": self.sample_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population_size = int(state["population_size"])
        self.sample_size = int(state["sample_size"])
        self.population = deque((list(a), list(c), float(r)) for a, c, r in state["population"])
