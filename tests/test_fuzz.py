"""Property-based fuzzing of every env (issue 19): random action sequences - legal, masked,
negative, out of range, floats, arrays, None - under both ``invalid_action`` modes, with
``reset(seed=...)`` determinism, raise nothing but the documented errors. A cheap evaluator
(a fixed score of the architecture; the table for MacroNAS-v0) keeps 500 sequences per env fast.
Also the order misuse: ``step()`` before ``reset()`` and after the episode ended."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas_gym
from nas_gym.arch.plain import DIGITS_START_NET
from nas_gym.errors import InvalidActionError, ResetNeeded

EXAMPLES = 250  # per env and invalid_action mode: 500 sequences per env
MAX_STEPS = 12


class Score:
    """A cheap deterministic evaluator: a fixed function of the architecture, no training."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "fuzz-score-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        return {"accuracy": int(architecture.sha256[:4], 16) / 65535}


def _net2net_start() -> dict:
    model = nas_gym.build_model(DIGITS_START_NET, (1, 8, 8), 10)
    return {"architecture": model.architecture.to_dict(), "state_dict": model.state_dict()}


COMMON = {"store": ":memory:", "measure_latency": False}
ENVS = {
    "CellNAS-v0": lambda: {"evaluator": Score(), "min_blocks": 1, "max_blocks": 2},
    "MacroNAS-v0": lambda: {"evaluator": "table", "max_layers": 2, "epochs": 1},
    "Net2Net-v0": lambda: {"evaluator": Score(), "start_net": _net2net_start(), "max_deeper": 1,
                           "max_wider": 1, "save_weights": False},
    "ProgressiveNAS-v0": lambda: {"evaluator": Score(), "max_transforms": 1},
}
_CACHE: dict[tuple[str, str], gym.Env] = {}


def _env(env_id: str, mode: str) -> gym.Env:
    if (env_id, mode) not in _CACHE:
        _CACHE[(env_id, mode)] = gym.make(env_id, invalid_action=mode, **COMMON,
                                          **ENVS[env_id]()).unwrapped
    return _CACHE[(env_id, mode)]


ACTIONS = st.one_of(
    st.integers(-3, 40),  # legal, masked, negative and out-of-range indices
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 40).map(lambda a: np.asarray([a])),  # one-element arrays
    st.integers(0, 40).map(np.int32),
    st.lists(st.integers(0, 5), min_size=2, max_size=3).map(np.asarray),
    st.sampled_from([None, "1", True]),
)


def _play(env: gym.Env, seed: int, actions: list) -> list:
    """The trajectory of ``actions`` from ``reset(seed)``; documented errors end it."""
    obs, info = env.reset(seed=seed)
    trace = [obs.tolist(), info["action_mask"].tolist()]
    for action in actions:
        try:
            obs, reward, term, trunc, info = env.step(action)
        except InvalidActionError as exc:  # the documented error for a bad action
            trace.append(f"invalid: {exc}")
            continue
        assert obs in env.observation_space and np.isfinite(reward)
        trace.append([obs.tolist(), float(reward), bool(term), info.get("status")])
        if term or trunc:
            with pytest.raises(ResetNeeded, match="episode ended"):
                env.step(0)
            break
    return trace


@pytest.mark.parametrize("mode", ["remap", "raise"])
@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_random_action_sequences(env_id: str, mode: str) -> None:
    env = _env(env_id, mode)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**31 - 1), actions=st.lists(ACTIONS, max_size=MAX_STEPS))
    def sequence(seed: int, actions: list) -> None:
        first = _play(env, seed, actions)
        assert _play(env, seed, actions) == first  # reset(seed=...) makes it repeat exactly

    sequence()


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_step_before_reset_is_a_clear_error(env_id: str) -> None:
    fresh = gym.make(env_id, **COMMON, **ENVS[env_id]())
    with pytest.raises(gym.error.ResetNeeded):  # Gymnasium's wrapper and the bare env agree
        fresh.step(0)
    with pytest.raises(ResetNeeded, match="before reset"):
        fresh.unwrapped.step(0)
