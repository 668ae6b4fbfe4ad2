"""The agent interface every search agent implements (SPEC §4; STYLE: the SB3 shape).

An agent drives an env through the **public Gymnasium API only**: ``reset`` / ``step``, the
spaces, ``info["action_mask"]`` (the legal actions of the next decision, ``np.int8``),
``info["token_type"]`` (the name of the next decision) and the terminal ``info``
(``architecture``, ``accuracy``, ``costs``, ...). It never reaches into ``env.unwrapped``, so any
nas_gym env - and any third-party agent with the same three methods - can take part in a search:

- ``learn(env, total_episodes, callback=None) -> self`` runs episodes until ``num_episodes``
  reaches ``total_episodes`` (a count that includes the episodes of a restored state, so a
  resumed search continues to the same total) or the callback asks to stop;
- ``predict(observation, info, state=None, deterministic=False) -> (action, state)`` chooses one
  action (``state`` carries a recurrent policy's context within an episode, as in SB3);
- ``best() -> Episode | None`` is the best finished episode seen (highest return).

``state_dict()`` / ``load_state_dict()`` (and :meth:`Agent.save` / :meth:`Agent.load`, atomic)
hold everything needed to continue a search exactly where it was (weights, optimizer, baseline,
random generator states, episode count, best).

**Concurrent evaluation.** The agents that sample several architectures per policy update
(REINFORCE's ``batch_episodes``, EAS's 10, EPNAS's ``branches``) also take a *list of env copies*
(:func:`nas_gym.vector.make_env_copies`): the episodes of a batch are then played at the same
time, one thread per copy, so the copies' children train concurrently (in worker processes with
``evaluator_backend="process"``, in Ray tasks with ``"ray"``). Each episode has its own seed
(:meth:`Agent.episode_seed`), so a search gives the same episodes whatever the number of copies
and their timing (:mod:`nas_gym.agents.batches`).

The pieces: :mod:`nas_gym.agents.episode` (:class:`~nas_gym.agents.episode.Episode`), :mod:`nas_gym.agents.callbacks`
(:class:`~nas_gym.agents.callbacks.Callback`), :mod:`nas_gym.agents.env_api` (the env's next decision and the
checks of ``learn``'s arguments), :mod:`nas_gym.agents.batches` (episode seeds, batches on env copies) and
:mod:`nas_gym.agents.state_file` (the state file of :meth:`Agent.save` / :meth:`Agent.load`).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from nas_gym.errors import bad_value

from .batches import BatchPlay
from .callbacks import Callback
from .env_api import decision
from .episode import Episode
from .state_file import read_state, write_state


class Agent(BatchPlay, ABC):
    """Base class: episode bookkeeping, best-so-far, seeding and the save / load protocol.

    Subclasses implement :meth:`predict` and :meth:`learn` (using :meth:`play_episode` and
    :meth:`_record`), and extend :meth:`state_dict` / :meth:`load_state_dict` with their own state.

    :param seed: seeds every random choice of the agent (``np.random.Generator`` / ``torch``).
    """

    name: ClassVar[str] = ""
    #: whether the agent only ever takes actions the mask allows (else the env's remap rule acts)
    respects_masks: ClassVar[bool] = True
    #: whether ``learn`` takes a list of env copies and plays the episodes of a batch on them
    #: concurrently (``nas-gym search --workers N``)
    concurrent_batches: ClassVar[bool] = False
    #: env ids the agent can drive (None: any env with a Discrete action space)
    supported_envs: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, *, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise bad_value("seed", seed, "an integer >= 0")
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.num_episodes = 0
        self.num_steps = 0
        self._best: Episode | None = None
        self._env_seeded = False  # the SB3 adapter seeds its VecEnv once
        self._stop = False
        self._policy_lock = threading.RLock()  # one decision at a time across copies
        self._local = threading.local()  # the sampling generator of this thread's episode

    # -- the interface ------------------------------------------------------------------------
    @abstractmethod
    def learn(self, env: gym.Env, total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None) -> Agent:
        """Run (and learn from) episodes until ``num_episodes == total_episodes`` or the callback
        returns ``False``."""

    @abstractmethod
    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        """One action for the decision described by ``info``; ``state`` is the recurrent context
        returned by the previous call of the same episode (``None`` at its start)."""

    @property
    def stopping(self) -> bool:
        """Whether a callback asked the running :meth:`learn` to stop."""
        return self._stop

    def best(self) -> Episode | None:
        """The finished episode with the highest return so far (``None`` before the first)."""
        return self._best

    def sample(self, env: gym.Env, n: int = 1, *, deterministic: bool = False) -> list[Episode]:
        """Play ``n`` episodes with the current policy, without learning or counting them."""
        return [self.play_episode(env, deterministic=deterministic, index=-1) for _ in range(n)]

    # -- helpers for subclasses -----------------------------------------------------------------
    def play_episode(self, env: gym.Env, *, deterministic: bool = False,
                     index: int | None = None,
                     choose: Callable[[Any, dict[str, Any], Any], tuple[int, Any]] | None = None,
                     first: tuple[Any, dict[str, Any]] | None = None,
                     on_step: Callable[[float, dict[str, Any]], None] | None = None,
                     ) -> Episode:
        """Play one episode with ``choose`` (default :meth:`predict`); masks come from ``info``.

        :param index: the episode number (None: ``num_episodes``; negative: not counted, sampled
            from the agent's running generator).
        :param first: the ``(obs, info)`` of a reset already done (else the env is reset here).
        :param on_step: called with ``(reward, info)`` after every step.
        """
        choose = choose or (lambda o, i, s: self.predict(o, i, s, deterministic))
        index = self.num_episodes if index is None else index
        counted = index >= 0
        self._local.gen = self.episode_generator(index) if counted else None
        try:
            obs, info = first if first is not None else self._reset(env, index=index)
            actions, types, masks, total, state = [], [], [], 0.0, None
            while True:
                mask, token_type = decision(info, env.action_space)
                info = {**info, "action_mask": mask, "token_type": token_type}
                with self._policy_lock:
                    action, state = choose(obs, info, state)
                    if counted:
                        self.num_steps += 1
                actions.append(int(action))
                types.append(token_type)
                masks.append(mask)
                obs, reward, terminated, truncated, info = env.step(int(action))
                total += float(reward)
                if on_step is not None:
                    on_step(float(reward), info)
                if terminated or truncated:
                    break
        finally:
            self._local.gen = None
        return Episode(index, total, actions, types, masks, dict(info))

    def _record(self, episode: Episode, callback: Callback) -> bool:
        """Count a finished episode, track the best, run the callback; False = stop."""
        self.num_episodes += 1
        if self._best is None or episode.reward > self._best.reward:
            self._best = episode
        if callback.on_episode(self, episode) is False:
            self._stop = True
        return not self._stop

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly here (extended by subclasses)."""
        return {"agent": self.name, "seed": self.seed, "num_episodes": self.num_episodes,
                "num_steps": self.num_steps, "rng": self.rng.bit_generator.state,
                "best": None if self._best is None else self._best.to_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("agent") != self.name:
            raise bad_value("state['agent']", state.get("agent"), f"{self.name!r} (this agent)")
        self.seed = int(state["seed"])
        self.num_episodes = int(state["num_episodes"])
        self.num_steps = int(state.get("num_steps", 0))
        self.rng.bit_generator.state = state["rng"]
        self._best = None if state["best"] is None else Episode.from_state(state["best"])
        # a restored agent reseeds its env once: the env's own generator restarts there too
        self._env_seeded = False

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file + ``os.replace``), so a
        kill during the write leaves the previous state intact. The file holds tensors and plain
        values only (:func:`~nas_gym.agents.state_file.plain_state`): :meth:`load` reads it with
        ``weights_only=True``."""
        write_state(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> Agent:
        """Restore the state written by :meth:`save`; returns ``self``. Nothing in the file is
        executed: it is read with ``weights_only=True`` (a results folder received from someone
        else may hold anything)."""
        self.load_state_dict(read_state(path))
        return self
