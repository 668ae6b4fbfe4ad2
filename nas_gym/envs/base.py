"""The shared glue of every env: common arguments, masks, the invalid-action rule, and the
terminal evaluation. A token env subclasses :class:`TokenEnv` and describes only its grammar."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..arch.base import Architecture
from ..errors import InvalidActionError, ResetNeeded, bad_value
from .common import INVALID_ACTION_MODES, Components, build_components
from .grammar import TokenGrammar


class NasEnv(gym.Env):
    """Base of the nas_gym envs: builds the shared components and applies the action rule.

    Invalid actions (masked out): with ``invalid_action="remap"`` (default) action ``a`` becomes
    ``valid[a % len(valid)]``, where ``valid`` lists the allowed actions in increasing order, and
    ``info["invalid_action"]`` is True; with ``"raise"`` an :class:`InvalidActionError` is raised.
    """

    metadata = {"render_modes": ["ansi"]}
    default_metric = "params"
    default_penalty = "benas"
    default_accuracy_transform = "identity"
    supports_hard_budget = False  # envs that mask by a hard budget (SPEC §3.5) set True

    def __init__(self, *, invalid_action: str = "remap", render_mode: str | None = None,
                 accuracy_transform: str | None = None, hard_budget: bool = False,
                 **common: Any) -> None:
        if invalid_action not in INVALID_ACTION_MODES:
            raise bad_value("invalid_action", invalid_action, INVALID_ACTION_MODES)
        if not isinstance(hard_budget, bool) or (hard_budget and not self.supports_hard_budget):
            raise bad_value("hard_budget", hard_budget,
                            "True or False" if self.supports_hard_budget else "False")
        self.hard_budget = hard_budget
        if render_mode is not None and not isinstance(render_mode, str):
            raise bad_value("render_mode", render_mode, f"None or a string; this env renders "
                                                        f"{self.metadata['render_modes']}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            # Gymnasium's convention (gym.make warns the same way): an unknown mode is a warning,
            # so wrappers that ask for one (SB3's make_vec_env: "rgb_array") still work
            gym.logger.warn(f"render_mode={render_mode!r} is not one of this env's render modes "
                            f"{self.metadata['render_modes']}: render() returns None")
        self.invalid_action, self.render_mode = invalid_action, render_mode
        self.components: Components = build_components(
            default_metric=self.default_metric, default_penalty=self.default_penalty,
            accuracy_transform=accuracy_transform or self.default_accuracy_transform, **common)
        self.last_info: dict[str, Any] = {}
        self._was_reset = False
        self._on_child: Callable[[Architecture], dict[str, Any]] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._was_reset = True
        return super().reset(seed=seed, options=options)

    def _check_can_step(self, done: bool) -> None:
        """The misuse errors of ``step()`` (the bare env too, without Gymnasium's wrappers)."""
        if not self._was_reset:
            raise ResetNeeded("step() called before reset(): call env.reset(seed=...) first")
        if done:
            raise ResetNeeded("step() called after the episode ended (terminated=True was "
                              "returned); call env.reset() to start the next episode")

    # -- shared pieces -------------------------------------------------------------------------
    @property
    def data(self):
        return self.components.data

    @property
    def store(self):
        return self.components.store

    @property
    def reward_fn(self):
        return self.components.reward

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.components.data.input_shape

    @property
    def num_classes(self) -> int:
        return self.components.data.num_classes

    def _check_action(self, action: Any, mask: np.ndarray) -> tuple[int, bool]:
        """The action to apply and whether the given one was invalid (see the class doc)."""
        try:
            arr = np.asarray(action)
        except (TypeError, ValueError):
            arr = np.asarray(None)
        if arr.size != 1 or arr.dtype.kind not in "iu":  # floats, bools, objects, several values
            raise InvalidActionError(f"action={action!r} is not an integer (a Discrete action: an "
                                     "int or a one-element integer array)")
        a = int(arr.reshape(()))
        if 0 <= a < mask.shape[0] and mask[a]:
            return a, False
        valid = np.flatnonzero(mask)
        if self.invalid_action == "raise":
            raise InvalidActionError(
                f"action={a} is not allowed now ({self._decision()}); allowed: {valid.tolist()}")
        return int(valid[a % len(valid)]), True

    def _decision(self) -> str:
        return "this step"

    @contextmanager
    def sampling(self, on_child: Callable[[Architecture], dict[str, Any]]) -> Iterator[None]:
        """While active, an episode's terminal evaluation is ``on_child(arch)`` instead of the
        pipeline's: reward 0, the terminal info is ``{"architecture": ..., **on_child(arch)}``.
        The episodes are then only samples of a policy (B-ENAS's Algorithms 2 and 3 train or
        score the sampled children themselves); nothing is trained, stored or counted."""
        if self._on_child is not None:
            raise RuntimeError("sampling() is already active on this env")
        self._on_child = on_child
        try:
            yield
        finally:
            self._on_child = None

    def evaluate_architecture(self, arch: Architecture, **kwargs: Any) -> dict[str, Any]:
        """Terminal info of ``arch`` through the shared pipeline (store, costs, reward), or the
        sampling hook's (:meth:`sampling`)."""
        if self._on_child is not None:
            return {"reward": 0.0, "architecture": arch.to_dict(), **self._on_child(arch)}
        info, _ = self.components.pipeline.evaluate(arch, seed=self.components.seed, **kwargs)
        return info

    def close(self) -> None:
        """Stops the env's evaluation worker (``evaluator_backend="process"``), if any."""
        stop = getattr(self.components.evaluator, "close", None)
        if callable(stop):
            stop()
        super().close()


class TokenEnv(NasEnv):
    """An env whose episode emits one token per step (SPEC §0), then evaluates the architecture.

    A subclass sets ``self.grammar`` (a :class:`~nas_gym.envs.grammar.TokenGrammar`: pure
    functions of a frozen state) and ``self.max_tokens``, then calls :meth:`_init_spaces`; the env
    holds the grammar's state (:attr:`state`) and the tokens emitted so far. A hard budget (SPEC
    §3.5) narrows the grammar's mask through :meth:`_extra_mask`; :meth:`allowed_actions` is the
    resulting mask of any state, what the table builder and look-ahead agents read.
    Observation: ``MultiDiscrete([n_actions + 1] * max_tokens)``, the tokens emitted so far plus 1,
    padded with 0.
    """

    grammar: TokenGrammar
    max_tokens: int

    def _init_spaces(self) -> None:
        self.n_actions = self.grammar.n_actions
        self.action_space = spaces.Discrete(self.n_actions)
        self.observation_space = spaces.MultiDiscrete(
            np.full(self.max_tokens, self.n_actions + 1, dtype=np.int64))
        self._tokens: list[int] = []
        self._state = self.grammar.start()
        self._mask = np.ones(self.n_actions, dtype=bool)
        self._done = True

    @property
    def state(self) -> Hashable:
        """The grammar state of the tokens emitted so far (immutable)."""
        return self._state

    @property
    def tokens(self) -> tuple[int, ...]:
        """The actions applied so far in this episode (after any remapping)."""
        return tuple(self._tokens)

    def allowed_actions(self, state: Hashable | None = None) -> np.ndarray:
        """Boolean mask of the actions allowed after ``state`` (default: the current one): the
        grammar's mask, narrowed by the hard budget when it is on."""
        state = self._state if state is None else state
        valid = self.grammar.valid(state)
        return valid & self._extra_mask(state, valid)

    def _extra_mask(self, state: Hashable, valid: np.ndarray) -> np.ndarray:
        """Hook ANDed into the grammar's mask (the hard budget, SPEC §3.5); default: ``valid``."""
        return valid

    def _token_type(self) -> str:
        return self.grammar.token_type(self._state)

    # -- gymnasium API ---------------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """The mask of the next decision as ``np.int8`` 0/1 (what ``Discrete.sample(mask=)``
        takes; sb3-contrib MaskablePPO reads it too)."""
        return self._mask.astype(np.int8)

    def _decision(self) -> str:
        return f"token {len(self._tokens)}: {self._token_type()}"

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.max_tokens, dtype=np.int64)
        obs[: len(self._tokens)] = np.asarray(self._tokens, dtype=np.int64) + 1
        return obs

    def _step_info(self, invalid: bool) -> dict[str, Any]:
        return {"action_mask": self._mask.astype(np.int8),
                "token_type": "done" if self._done else self._token_type(),
                "invalid_action": invalid, "num_tokens": len(self._tokens)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._tokens = []
        self._state = self.grammar.start()
        self._done = False
        self._mask = self.allowed_actions()
        return self._obs(), self._step_info(False)

    def step(self, action: Any):
        self._check_can_step(self._done)
        a, invalid = self._check_action(action, self._mask)
        self._tokens.append(a)
        self._state = self.grammar.apply(self._state, a)
        reward = 0.0
        if self.grammar.done(self._state):
            self._done = True
            self._mask = np.ones(self.n_actions, dtype=bool)
            info = self._step_info(invalid)
            terminal = self.evaluate_architecture(self.grammar.architecture(self._state))
            reward = terminal.pop("reward")
            info.update(terminal)
            self.last_info = info
        else:
            self._mask = self.allowed_actions()
            info = self._step_info(invalid)
        return self._obs(), float(reward), self._done, False, info

    def render(self) -> str | None:
        """``render_mode="ansi"``: the architecture built so far, in words, and what comes next."""
        if self.render_mode == "ansi":
            nxt = "complete" if self._done else f"next decision: {self._token_type()}"
            return "\n".join([*self._describe(), nxt])
        return None

    def _describe(self) -> list[str]:
        """Hook: the architecture built so far in words (default: the raw tokens)."""
        return [f"tokens: {self._tokens}"]
