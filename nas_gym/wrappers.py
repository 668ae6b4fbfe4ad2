"""API options for RL libraries other than SB3: the action mask inside the observation and a fixed
set of info keys. Both are plain Gymnasium wrappers, and ``gym.make`` options of every env::

    env = gym.make("CellNAS-v0", observation="dict", info_keys="fixed", ...)

- ``observation="dict"`` (:class:`MaskInObservation`): ``Dict({"observation": <the env's
  observation>, "action_mask": MultiBinary(n)})``, the PettingZoo / tianshou / RLlib / TorchRL
  convention for masked actions (the mask of the next decision, ``info["action_mask"]``;
  flattened per dimension for a ``MultiDiscrete`` action space);
- ``info_keys="fixed"`` (:class:`FixedInfoKeys`): every step's ``info`` has exactly the keys of
  :data:`FIXED_INFO_KEYS`, all numpy numbers or arrays (zeros until an evaluation reports
  them), so replay buffers that stack infos (tianshou's raises "NaNs in buffer" on keys that only
  terminal steps have) and TorchRL's info readers see one structure. The full terminal ``info``
  (architecture, reward parts, status) stays in the store (``store=``) and the default mode.

The defaults (``observation="tokens"``, ``info_keys="full"``) return the env itself, unwrapped.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator

from .costs import COST_METRICS
from .errors import bad_value

OBSERVATION_MODES = ("tokens", "dict")
INFO_MODES = ("full", "fixed")
#: The keys of every step's ``info`` with ``info_keys="fixed"`` (costs as ``cost_<metric>``).
FIXED_INFO_KEYS: tuple[str, ...] = ("action_mask", "invalid_action", "evaluated", "accuracy",
                                    "penalty", "eval_seconds", "cache_hit",
                                    *(f"cost_{m}" for m in COST_METRICS))


def _flat_mask(mask: Any, size: int) -> np.ndarray:
    if mask is None:
        return np.ones(size, dtype=np.int8)
    if isinstance(mask, (tuple, list)):
        mask = np.concatenate([np.asarray(m).reshape(-1) for m in mask])
    return np.asarray(mask, dtype=np.int8).reshape(-1)


def _mask_size(space: gym.Space) -> int:
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    raise bad_value("action_space", space, "Discrete or MultiDiscrete (a maskable space)")


class MaskInObservation(gym.Wrapper):
    """``{"observation": obs, "action_mask": mask of the next decision}`` (module docstring)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._size = _mask_size(env.action_space)
        self.observation_space = spaces.Dict({"observation": env.observation_space,
                                              "action_mask": spaces.MultiBinary(self._size)})

    def _obs(self, obs: Any, info: dict[str, Any]) -> dict[str, Any]:
        return {"observation": obs, "action_mask": _flat_mask(info.get("action_mask"),
                                                              self._size)}

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return self._obs(obs, info), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs(obs, info), reward, terminated, truncated, info


class FixedInfoKeys(gym.Wrapper):
    """Every step's ``info`` holds exactly :data:`FIXED_INFO_KEYS` (module docstring)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._size = _mask_size(env.action_space)

    def _fixed(self, info: dict[str, Any]) -> dict[str, Any]:
        costs = info.get("costs") or {}
        out: dict[str, Any] = {
            "action_mask": _flat_mask(info.get("action_mask"), self._size),
            "invalid_action": np.bool_(info.get("invalid_action", False)),
            "evaluated": np.bool_("accuracy" in info),
            "accuracy": np.float64(info.get("accuracy") or 0.0),
            "penalty": np.float64(info.get("penalty") or 0.0),
            "eval_seconds": np.float64(info.get("eval_seconds") or 0.0),
            "cache_hit": np.bool_(info.get("cache_hit", False)),
        }
        out.update({f"cost_{m}": np.float64(costs.get(m) or 0.0) for m in COST_METRICS})
        return out

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return obs, self._fixed(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._fixed(info)


class EnvFactory:
    """The ``gym.make`` entry point of a nas_gym env id: builds the env class (imported lazily)
    and applies the ``observation`` / ``info_keys`` options."""

    def __init__(self, entry_point: str) -> None:
        self.entry_point = entry_point

    @property
    def env_class(self) -> type[gym.Env]:
        return load_env_creator(self.entry_point)

    @property
    def metadata(self) -> dict[str, Any]:  # gym.make reads the render modes here
        return self.env_class.metadata

    def __call__(self, *, observation: str = "tokens", info_keys: str = "full",
                 **kwargs: Any) -> gym.Env:
        if observation not in OBSERVATION_MODES:
            raise bad_value("observation", observation, OBSERVATION_MODES)
        if info_keys not in INFO_MODES:
            raise bad_value("info_keys", info_keys, INFO_MODES)
        env = self.env_class(**kwargs)
        if info_keys == "fixed":
            env = FixedInfoKeys(env)
        if observation == "dict":
            env = MaskInObservation(env)
        return env

    def __repr__(self) -> str:
        return f"EnvFactory({self.entry_point!r})"
