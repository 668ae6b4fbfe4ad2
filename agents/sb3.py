"""Stable-Baselines3 algorithms as search agents: one thin adapter, no forked algorithm code.

PPO, A2C and DQN (stable-baselines3), MaskablePPO and RecurrentPPO (sb3-contrib) learn on the env
unchanged:
its ``Discrete`` actions and ``MultiDiscrete`` observation (the tokens so far, which SB3 one-hot
encodes) are spaces SB3 supports. The adapter only adds what a search needs around
``model.learn``:

- a wrapper that records every episode (actions, ``info["token_type"]``, ``info["action_mask"]``,
  terminal ``info``) for the agent interface, and serves the mask of the last ``info`` as
  ``action_masks()`` - so MaskablePPO gets its masks from the public ``info`` only. PPO, A2C and
  DQN cannot take masks, nor can RecurrentPPO (an LSTM policy, like the papers' controllers;
  sb3-contrib has no masked recurrent PPO): the env's documented remap rule handles their illegal
  actions;
- an SB3 callback that stops ``learn`` after ``total_episodes`` episodes (``learn`` itself counts
  timesteps) and reports every policy update to the search (checkpoints).

Defaults are sized for NAS, where an episode is one architecture and costs a child training:
small rollouts (``n_steps=64`` for PPO, 8 for A2C), DQN trains after every episode with
``learning_starts=32``, and ``gamma=1`` (the episode's only reward is the architecture's, at the
end; discounting would favour short token sequences). Every default can be overridden by keyword.

SB3 seeds the *global* torch / numpy generators (``set_random_seed``): the one place the project's
"no global random state" rule cannot hold. A saved state holds the model's tensors, spaces and
counters (plain values, loaded without unpickling) but not DQN's replay buffer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from nas_gym.errors import bad_value

from .base import Agent
from .callbacks import Callback, as_callback
from .env_api import check_discrete, check_episodes, decision
from .episode import Episode

_PPO = {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "gamma": 1.0, "ent_coef": 0.01}
#: algorithm name -> (class, NAS-sized default keyword arguments).
ALGORITHMS: dict[str, tuple[type[BaseAlgorithm], dict[str, Any]]] = {
    "ppo": (PPO, dict(_PPO)),
    "a2c": (A2C, {"n_steps": 8, "gamma": 1.0, "ent_coef": 0.01}),
    "dqn": (DQN, {"learning_starts": 32, "buffer_size": 10_000, "batch_size": 32,
                  "train_freq": (1, "episode"), "gradient_steps": -1,
                  "target_update_interval": 64, "exploration_fraction": 0.5,
                  "exploration_final_eps": 0.05, "gamma": 1.0}),
    "maskable_ppo": (MaskablePPO, dict(_PPO)),
    "recurrent_ppo": (RecurrentPPO, dict(_PPO)),
}


class TokenFlatten(FlattenExtractor):
    """SB3's ``FlattenExtractor`` with a Python ``int`` feature size. SB3 sums a ``MultiDiscrete``
    ``nvec`` into a numpy integer, which ``nn.LSTM`` refuses as ``input_size`` ("input_size should
    be of type int, got: int64"): every RecurrentPPO policy on a token env failed without this."""

    def __init__(self, observation_space: gym.Space) -> None:
        super().__init__(observation_space)
        self._features_dim = int(self._features_dim)


def default_policy(cls: type[BaseAlgorithm]) -> str:
    """``"MlpPolicy"``, or the algorithm's MLP-based alias (``"MlpLstmPolicy"`` for RecurrentPPO)."""
    aliases = list(getattr(cls, "policy_aliases", {}))
    if "MlpPolicy" in aliases or not aliases:
        return "MlpPolicy"
    return next((a for a in aliases if a.startswith("Mlp")), aliases[0])


def is_recurrent(cls: type[BaseAlgorithm]) -> bool:
    return issubclass(cls, RecurrentPPO)


class _Recorder(gym.Wrapper):
    """Records each episode from the public API and serves ``info["action_mask"]`` as
    ``action_masks()`` (what sb3-contrib's MaskablePPO asks the env for)."""

    def __init__(self, env: gym.Env, on_episode: Callable[[Episode], None]) -> None:
        super().__init__(env)
        self.on_episode = on_episode
        self._mask = np.ones(env.action_space.n, dtype=np.int8)
        self._start()

    def _start(self) -> None:
        self._actions, self._types, self._masks, self._return = [], [], [], 0.0
        self._token_type = "action"

    def _see(self, info: dict[str, Any]) -> None:
        self._mask, self._token_type = decision(info, self.env.action_space)

    def action_masks(self) -> np.ndarray:
        return self._mask

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._start()
        self._see(info)
        return obs, info

    def step(self, action: Any):
        self._actions.append(int(np.asarray(action).reshape(())))
        self._types.append(self._token_type)
        self._masks.append(self._mask)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._see(info)
        if terminated or truncated:
            self.on_episode(Episode(-1, self._return, self._actions, self._types, self._masks,
                                    dict(info)))
        return obs, reward, terminated, truncated, info


class _Hook(BaseCallback):
    """Stops SB3's ``learn`` after the episode budget; reports updates to the search."""

    def __init__(self, agent: SB3Agent, callback: Callback, total: int) -> None:
        super().__init__()
        self.agent, self.cb, self.total = agent, callback, total

    def _on_step(self) -> bool:
        return not self.agent.stopping and self.agent.num_episodes < self.total

    def _on_rollout_start(self) -> None:
        # a rollout starts after the previous one was trained on: a consistent state to save
        if self.agent.rollouts > 0:
            self.cb.on_update(self.agent)
        self.agent.rollouts += 1


class SB3Agent(Agent):
    """Any SB3 / sb3-contrib algorithm behind the agent interface.

    :param algorithm: ``"ppo"``, ``"a2c"``, ``"dqn"``, ``"maskable_ppo"`` or ``"recurrent_ppo"``.
    :param policy: SB3 policy name (default: ``"MlpPolicy"``; ``"MlpLstmPolicy"`` for
        RecurrentPPO).
    :param device: torch device of the policy (``"cpu"``: small MLPs run faster there).
    :param seed: passed to SB3 (``set_random_seed``) and seeds the env's first reset.
    :param algo_kwargs: keyword arguments of the algorithm, over the NAS-sized defaults
        (:data:`ALGORITHMS`), e.g. ``n_steps``, ``learning_rate``, ``policy_kwargs``.
    """

    name = "sb3"
    algorithm: ClassVar[str] = ""

    def __init__(self, algorithm: str | None = None, *, policy: str | None = None,
                 device: str = "cpu", seed: int = 0, **algo_kwargs: Any) -> None:
        super().__init__(seed=seed)
        algorithm = algorithm or self.algorithm
        if algorithm not in ALGORITHMS:
            raise bad_value("algorithm", algorithm, sorted(ALGORITHMS))
        self.algorithm, self.name = algorithm, algorithm
        self.cls, defaults = ALGORITHMS[algorithm]
        reserved = {"policy", "env", "seed", "device", "verbose"}  # set by the adapter
        accepted = [k for k in inspect.signature(self.cls).parameters
                    if k not in reserved and not k.startswith("_")]
        for key in algo_kwargs:
            if key not in accepted:
                raise bad_value(f"agent {algorithm!r} keyword", key, sorted(accepted))
        self.policy, self.device = policy or default_policy(self.cls), device
        self.algo_kwargs = {**defaults, **algo_kwargs}
        self.model: BaseAlgorithm | None = None
        self.rollouts = 0
        self._log_dir: str | None = None

    def log_to(self, folder: str) -> None:
        """Write SB3's training curves (``train/*``, ``rollout/*``) to a TensorBoard run in
        ``folder`` (what ``nas-gym search --tensorboard`` calls: one run with the search's own
        scalars)."""
        self._log_dir = str(folder)

    @property
    def uses_masks(self) -> bool:
        return self.cls is MaskablePPO

    @property
    def respects_masks(self) -> bool:  # type: ignore[override]
        return self.uses_masks

    def _episode_done(self, callback: Callback) -> Callable[[Episode], None]:
        def done(episode: Episode) -> None:
            episode.index = self.num_episodes
            self.num_steps += len(episode.actions)
            self._record(episode, callback)
        return done

    def learn(self, env: gym.Env, total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None) -> SB3Agent:
        total, cb = check_episodes(total_episodes), as_callback(callback)
        check_discrete(env, self.name)
        self._stop = False
        if self.num_episodes >= total:
            return self
        recorder = _Recorder(env, self._episode_done(cb))
        vec = DummyVecEnv([lambda: recorder])
        if self.model is None:
            self.model = self._build(vec)
        else:
            self.model.set_env(vec)
        if self._log_dir is not None:
            from stable_baselines3.common.logger import configure

            self.model.set_logger(configure(self._log_dir, ["tensorboard"]))
        if not self._env_seeded:
            vec.seed(self.seed)
            self._env_seeded = True
        hook = _Hook(self, cb, total)
        shape = env.observation_space.shape
        per_episode = int(shape[0]) if shape and len(shape) == 1 else 64  # token envs: max length
        while self.num_episodes < total and not self._stop:
            before = self.num_episodes
            self.model.learn(total_timesteps=(total - self.num_episodes) * per_episode,
                             callback=hook, reset_num_timesteps=False, progress_bar=False)
            if self.num_episodes == before:  # episodes longer than the estimate: give more steps
                per_episode *= 2
        cb.on_update(self)
        return self

    def _model_kwargs(self, env: gym.Env | DummyVecEnv) -> dict[str, Any]:
        kwargs = dict(self.algo_kwargs)
        if is_recurrent(self.cls) and isinstance(env.observation_space, gym.spaces.MultiDiscrete):
            policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
            policy_kwargs.setdefault("features_extractor_class", TokenFlatten)
            kwargs["policy_kwargs"] = policy_kwargs
        return kwargs

    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        if self.model is None:
            raise RuntimeError("the SB3 model is built by learn() (or load()); call it first")
        kwargs: dict[str, Any] = {}
        if self.uses_masks:
            kwargs["action_masks"] = np.asarray(info["action_mask"], dtype=bool)
        if is_recurrent(self.cls):  # the LSTM state restarts with each episode
            kwargs["episode_start"] = np.array([state is None])
        action, state = self.model.predict(observation, state=state, deterministic=deterministic,
                                           **kwargs)
        return int(np.asarray(action).reshape(())), state

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The policy's and optimizer's tensors, the spaces and SB3's counters: plain values, not
        ``model.save``'s zip (whose cloudpickled fields would run code when loaded)."""
        model = None
        if self.model is not None:
            model = {"spaces": [space_to_json(self.model.observation_space),
                                space_to_json(self.model.action_space)],
                     "parameters": self.model.get_parameters(),
                     "counters": {k: int(getattr(self.model, k)) for k in _COUNTERS}}
        return {**super().state_dict(), "algorithm": self.algorithm, "model": model,
                "rollouts": self.rollouts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["algorithm"] != self.algorithm:
            raise bad_value("state['algorithm']", state["algorithm"], repr(self.algorithm))
        self.rollouts = int(state.get("rollouts", 0))
        saved = state["model"]
        if saved is None:
            self.model = None
            return
        if not isinstance(saved, dict):  # bytes: model.save's zip, the pickling format
            raise bad_value("state['model']", type(saved).__name__,
                            "the parameters dict of this nas_gym (convert the file: "
                            "python -m nas_gym.agents.convert_state PATH)")
        spaces = [space_from_json(d) for d in saved["spaces"]]
        self.model = self._build(DummyVecEnv([lambda: _Spaces(*spaces)]))
        self.model.set_parameters(saved["parameters"], exact_match=True, device=self.device)
        for k, v in saved["counters"].items():
            if k in _COUNTERS:
                setattr(self.model, k, int(v))

    def _build(self, vec: DummyVecEnv) -> BaseAlgorithm:
        return self.cls(self.policy, vec, seed=self.seed, device=self.device, verbose=0,
                        **self._model_kwargs(vec))


#: SB3's counters that a resumed model continues from (schedules read ``num_timesteps``).
_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")


class _Spaces(gym.Env):
    """Holds the spaces a restored model is built on until ``learn`` gives it the real env."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        raise RuntimeError("a restored SB3 agent learns on the env given to learn()")

    def step(self, action: Any):
        raise RuntimeError("a restored SB3 agent learns on the env given to learn()")


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A JSON-able description of the spaces nas_gym envs use (no pickled objects)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(),
                "dtype": str(space.dtype)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(v) for k, v in space.spaces.items()}}
    raise bad_value("observation / action space", type(space).__name__,
                    "Discrete, MultiDiscrete, MultiBinary, Box or Dict (savable agent states)")


def space_from_json(d: dict[str, Any]) -> gym.Space:
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(d["nvec"]), dtype=d["dtype"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Box":
        return spaces.Box(np.asarray(d["low"]), np.asarray(d["high"]), dtype=d["dtype"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in d["spaces"].items()})
    raise bad_value("saved space type", kind, "Discrete, MultiDiscrete, MultiBinary, Box, Dict")


class PPOAgent(SB3Agent):
    """PPO (Schulman et al. 2017), stable-baselines3; illegal actions are remapped by the env."""

    name = algorithm = "ppo"


class A2CAgent(SB3Agent):
    """A2C (Mnih et al. 2016), stable-baselines3; illegal actions are remapped by the env."""

    name = algorithm = "a2c"


class DQNAgent(SB3Agent):
    """DQN (Mnih et al. 2015), stable-baselines3; illegal actions are remapped by the env."""

    name = algorithm = "dqn"


class MaskablePPOAgent(SB3Agent):
    """MaskablePPO (sb3-contrib): PPO that never samples an action the mask forbids."""

    name = algorithm = "maskable_ppo"


class RecurrentPPOAgent(SB3Agent):
    """RecurrentPPO (sb3-contrib): PPO with an LSTM policy (``MlpLstmPolicy``). It takes no masks
    (sb3-contrib has no masked recurrent PPO): illegal actions are remapped by the env."""

    name = algorithm = "recurrent_ppo"
