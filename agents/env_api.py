"""What an agent reads from an env through the public Gymnasium API (the next decision, the
action space, the env copies) and the checks of :meth:`nas_gym.agents.base.Agent.learn`'s arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from nas_gym.errors import bad_value


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

