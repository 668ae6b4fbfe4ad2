"""Random search: every decision uniform over the actions the mask allows (SPEC §4 baseline).

The baseline every NAS paper should beat (Liu et al. 2017 show how strong it is on good spaces).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from .base import Agent
from .callbacks import Callback, as_callback
from .env_api import check_discrete, check_episodes
from .episode import Episode


class RandomSearch(Agent):
    """Masked uniform random search.

    :param seed: seeds the ``np.random.Generator`` of every choice.
    """

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)

    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        valid = np.flatnonzero(np.asarray(info["action_mask"]))
        # "deterministic" has no meaning for a uniform policy: the lowest legal action
        action = valid[0] if deterministic else self.rng.choice(valid)
        return int(action), None

    def learn(self, env: gym.Env, total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None) -> RandomSearch:
        total, cb = check_episodes(total_episodes), as_callback(callback)
        check_discrete(env, self.name)
        self._stop = False
        while self.num_episodes < total and not self._stop:
            episode = self.play_episode(env)
            self._record(episode, cb)
            cb.on_update(self)  # nothing learns, but the state (rng, count) moved on
        return self
