"""Episode seeds and the concurrent play of a batch's episodes on env copies (:class:`BatchPlay`,
a base of :class:`nas_gym.agents.base.Agent`).

The agents that sample several architectures per policy update (REINFORCE's ``batch_episodes``,
EAS's 10, EPNAS's ``branches``) also take a *list of env copies*
(:func:`nas_gym.vector.make_env_copies`): the episodes of a batch are then played at the same
time, one thread per copy (a free copy takes the batch's next episode). Decisions are serialised
by the agent's policy lock, episode ``i`` resets its env with and samples from its own seed
(:meth:`BatchPlay.episode_seed`, a function of the seed and ``i``) and copies reset in episode
order: a search gives the same episodes whatever the number of copies and their timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from .callbacks import Callback


class BatchPlay:
    """Episode seeding and batch play, for :class:`nas_gym.agents.base.Agent` (which sets the attributes
    below in its ``__init__``); the agents with batches call :meth:`_batch_step`,
    :meth:`_play_many` and :meth:`_close_batch` from their ``learn``."""

    name: ClassVar[str]
    seed: int
    num_episodes: int
    _stop: bool
    _local: threading.local
    # and, in the agents that call _close_batch: batch_episodes and _update(batch)

    # -- episode seeds ---------------------------------------------------------------------
    def _reset(self, env: gym.Env, options: dict[str, Any] | None = None,
               index: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset for episode ``index``: seeded with :meth:`episode_seed` (the env's randomness,
        e.g. a random start network, is then the same whichever copy plays the episode);
        ``None`` / negative: the env's generator continues."""
        if index is None or index < 0:
            return env.reset(options=options)
        return env.reset(seed=self.episode_seed(index), options=options)

    def episode_seed(self, index: int) -> int:
        """The seed of episode ``index`` (its env reset and its sampling): a function of
        ``(seed, index)`` only."""
        state = np.random.SeedSequence([self.seed, int(index)]).generate_state(1, np.uint64)[0]
        return int(state >> np.uint64(1))

    def episode_generator(self, index: int) -> torch.Generator:
        """The sampling generator of episode ``index``."""
        return torch.Generator().manual_seed(self.episode_seed(index))

    def _sampler(self, default: torch.Generator) -> torch.Generator:
        """The generator of the episode this thread plays (``default`` outside one)."""
        gen = getattr(self._local, "gen", None)
        return default if gen is None else gen

    # -- batches on env copies --------------------------------------------------------------
    def _batch_step(self, envs: list[gym.Env], size: int, open_: int, total: int) -> int:
        """How many episodes to play next: one with a single env (a callback can stop between
        any two), else the rest of the open batch (``open_`` of ``size`` played), capped at
        ``total``."""
        return 1 if len(envs) == 1 else min(size - open_, total - self.num_episodes)

    def _play_many(self, envs: list[gym.Env], count: int,
                   play: Callable[[gym.Env, tuple[Any, dict[str, Any]], int, int], Any],
                   options: Callable[[int], dict[str, Any] | None] | None = None) -> list[Any]:
        """Play episodes ``num_episodes + j`` for ``j < count`` on the copies, concurrently (one
        thread per copy): a copy that is free takes the next episode and resets for it (resets
        happen in episode order); episode seeds make the result independent of which copy plays.

        ``play(env, (obs, info), index, j)`` plays one episode from its reset; the results come
        back in episode order. An exception in any copy stops the others and is raised here.
        The first copy takes the first episode, so a copy the agent used between batches (PNAS's
        walks reset it without finishing an episode) is always reset again."""
        base, n = self.num_episodes, min(len(envs), count)
        opts = options or (lambda j: None)
        if n <= 1:
            return [play(envs[0], self._reset(envs[0], opts(j), base + j), base + j, j)
                    for j in range(count)]
        lock, state = threading.Lock(), {"next": 0, "error": False}
        results: list[Any] = [None] * count
        first_taken = threading.Event()

        def run(env: gym.Env) -> None:
            try:
                if env is not envs[0]:
                    first_taken.wait()
                while True:
                    with lock:  # take the next episode and reset for it, in episode order
                        j = state["next"]
                        if j >= count or state["error"]:
                            return
                        state["next"] += 1
                        first = self._reset(env, opts(j), base + j)
                    first_taken.set()
                    results[j] = play(env, first, base + j, j)
            except BaseException:
                state["error"] = True  # the other copies take no further episode
                raise
            finally:
                first_taken.set()

        with ThreadPoolExecutor(n, thread_name_prefix=f"{self.name or 'agent'}-copy") as pool:
            futures = [pool.submit(run, env) for env in envs[:n]]
        for f in futures:
            f.result()  # re-raises the first copy's exception
        return results

    def _close_batch(self, batch: list, total: int, cb: Callback) -> list:
        """Update the policy on ``batch`` (``self._update``) when it holds ``batch_episodes``
        episodes, the total is reached or learning stops; returns the batch still open."""
        if len(batch) == self.batch_episodes or self.num_episodes >= total or self._stop:
            self._update(batch)
            cb.on_update(self)
            return []
        return batch
