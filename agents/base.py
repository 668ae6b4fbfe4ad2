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
time, one thread per copy (a free copy takes the batch's next episode), so the copies' children
train concurrently (in worker processes with ``evaluator_backend="process"``, in Ray tasks with
``"ray"``). Decisions are serialised by one policy lock, episode ``i`` resets its env with and
samples from its own seed (:meth:`Agent.episode_seed`, a function of the seed and ``i``) and
copies reset in episode order: a search gives the same episodes whatever the number of copies
and their timing.
"""

from __future__ import annotations

import io
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from nas_gym.errors import ConfigError, bad_value

#: Terminal-info keys copied into :meth:`Episode.summary` (JSON-able; never test accuracy).
SUMMARY_KEYS = ("accuracy", "costs", "penalty", "reward_parts", "status", "cache_hit",
                "eval_seconds", "store_key", "architecture")


@dataclass
class Episode:
    """One finished episode: the decisions taken and what the env reported at the end.

    :param index: 0-based episode number within the agent's life (continues across resumes).
    :param reward: the return (sum of the step rewards).
    :param actions: the actions taken, in order.
    :param token_types: ``info["token_type"]`` of each decision (``"action"`` when absent).
    :param masks: the action mask each decision was taken under (``np.int8``).
    :param info: the terminal ``info`` (architecture, accuracy, costs, penalty, status, ...).
    """

    index: int
    reward: float
    actions: list[int]
    token_types: list[str]
    masks: list[np.ndarray] = field(repr=False)
    info: dict[str, Any] = field(repr=False)

    @property
    def architecture(self) -> dict[str, Any] | None:
        return self.info.get("architecture")

    @property
    def accuracy(self) -> float | None:
        return self.info.get("accuracy")

    @property
    def costs(self) -> dict[str, float]:
        return dict(self.info.get("costs") or {})

    def summary(self) -> dict[str, Any]:
        """A JSON-able record of the episode (what ``evaluations.jsonl`` holds)."""
        out: dict[str, Any] = {"episode": self.index, "reward": float(self.reward)}
        out.update({k: _jsonable(self.info[k]) for k in SUMMARY_KEYS if k in self.info})
        out["actions"] = [int(a) for a in self.actions]
        return out

    def to_state(self) -> dict[str, Any]:
        """Compact, picklable form (masks packed into one int8 array)."""
        width = max((len(m) for m in self.masks), default=0)
        masks = np.zeros((len(self.masks), width), dtype=np.int8)
        for i, m in enumerate(self.masks):
            masks[i, : len(m)] = m
        return {"index": self.index, "reward": float(self.reward), "actions": list(self.actions),
                "token_types": list(self.token_types), "masks": masks,
                "info": _jsonable(self.info)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Episode:
        return cls(state["index"], state["reward"], list(state["actions"]),
                   list(state["token_types"]), list(np.asarray(state["masks"], dtype=np.int8)),
                   dict(state["info"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class Callback:
    """Hooks a search loop passes to :meth:`Agent.learn` (SB3's ``BaseCallback``, smaller).

    ``on_episode`` runs after every finished episode; returning ``False`` stops learning.
    ``on_update`` runs after every policy update: the state is consistent there, so that is where a
    search saves it (a resumed search replays the episodes after it from the evaluation store).
    """

    def on_episode(self, agent: Agent, episode: Episode) -> bool | None:
        return True

    def on_update(self, agent: Agent) -> None:
        return None


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[Episode], bool | None]) -> None:
        self.fn = fn

    def on_episode(self, agent: Agent, episode: Episode) -> bool | None:
        return self.fn(episode)


def as_callback(callback: Callback | Callable[[Episode], bool | None] | None) -> Callback:
    """``None`` -> a no-op, a function ``fn(episode) -> bool | None`` -> its ``on_episode``."""
    if callback is None:
        return Callback()
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return _FunctionCallback(callback)
    raise bad_value("callback", callback, "None, a Callback or a function of the episode")


def decision(info: dict[str, Any], action_space: gym.Space) -> tuple[np.ndarray, str]:
    """The mask and the token type of the next decision, from the public ``info``.

    Envs without ``info["action_mask"]`` allow every action; without ``info["token_type"]`` every
    decision is of type ``"action"``.
    """
    mask = info.get("action_mask")
    if mask is None:
        mask = np.ones(action_space.n, dtype=np.int8)
    return np.asarray(mask, dtype=np.int8), str(info.get("token_type", "action"))


def check_discrete(env: gym.Env, agent: str) -> int:
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise bad_value("env.action_space", env.action_space,
                        f"a Discrete space (agent {agent!r} emits one token per step)")
    return int(env.action_space.n)


def as_envs(env: gym.Env | Sequence[gym.Env]) -> list[gym.Env]:
    """``env`` as a list of copies: one env, or a non-empty list of copies with equal spaces."""
    if isinstance(env, gym.Env):
        return [env]
    if isinstance(env, (list, tuple)) and env and all(isinstance(e, gym.Env) for e in env):
        first = env[0]
        for i, e in enumerate(env[1:], 1):
            if e.action_space != first.action_space or \
                    e.observation_space != first.observation_space:
                raise bad_value(f"env[{i}]", e, "a copy of env[0] (the same spaces)")
        return list(env)
    raise bad_value("env", env, "a gymnasium Env or a non-empty list of copies of one")


def check_episodes(total_episodes: Any) -> int:
    if isinstance(total_episodes, bool) or not isinstance(total_episodes, (int, np.integer)) \
            or total_episodes < 1:
        raise bad_value("total_episodes", total_episodes, "an integer >= 1")
    return int(total_episodes)


class Agent(ABC):
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

    def _close_batch(self, batch: list, total: int, cb: Callback) -> list:
        """Update the policy on ``batch`` (``self._update``) when it holds ``batch_episodes``
        episodes, the total is reached or learning stops; returns the batch still open."""
        if len(batch) == self.batch_episodes or self.num_episodes >= total or self._stop:
            self._update(batch)
            cb.on_update(self)
            return []
        return batch

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
        values only (:func:`plain_state`): :meth:`load` reads it with ``weights_only=True``."""
        path = os.fspath(path)
        buffer = io.BytesIO()
        torch.save({"format": STATE_FORMAT, "state": plain_state(self.state_dict())}, buffer)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> Agent:
        """Restore the state written by :meth:`save`; returns ``self``. Nothing in the file is
        executed: it is read with ``weights_only=True`` (a results folder received from someone
        else may hold anything)."""
        self.load_state_dict(read_state(path))
        return self


#: The format tag of an agent state file (tensors + plain values, ``weights_only``-readable).
STATE_FORMAT = "nas_gym.agent_state.v2"
_CONVERT = ("written by an older nas_gym, whose agent states were pickles that can run code when "
            "loaded. If you trust the file, convert it once: python -m agents.convert_state {path}")


def plain_state(value: Any, where: str = "state") -> Any:
    """``value`` as the types ``torch.load(weights_only=True)`` reads: dicts (str / int keys),
    lists, tuples, str, int, float, bool, None, bytes and tensors; numpy arrays become lists and
    numpy scalars Python numbers. Anything else (an object that would need code to rebuild) is
    refused with its place in the state."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor)):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}: agent "
                                "states take str or int keys")
        return {k: plain_state(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out = [plain_state(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if isinstance(value, tuple) else out
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}: agent "
                    "states hold tensors and plain values only (no pickled objects)")


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The state dict of an agent state file, read without running any code from it."""
    import pickle

    path = os.fspath(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"agent state {path!r} holds pickled objects, which are not loaded "
                          f"({first[:200]}); it was {_CONVERT.format(path=path)}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigError(f"agent state {path!r} is not a readable torch file ({exc}); "
                          "delete it to start the agent afresh") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ConfigError(f"agent state {path!r} has no {STATE_FORMAT!r} format tag; it was "
                          f"{_CONVERT.format(path=path)}")
    return data["state"]
