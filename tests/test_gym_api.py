"""Gymnasium conventions: ``gym.make("nas_gym:CellNAS-v0")`` without importing nas_gym first,
``gymnasium.make_vec``, the standard wrappers, ``render_mode="ansi"`` in words, and the options for
other RL libraries (mask in the observation, a fixed set of info keys)."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import FlattenObservation, RecordEpisodeStatistics, TimeLimit

import nas_gym  # noqa: F401
from nas_gym.wrappers import FIXED_INFO_KEYS


class Formula:
    """A cheap deterministic evaluator (no training): these tests are about the API."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "gym-api-formula-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        return {"accuracy": float(len(architecture.sha256) % 7) / 10}


FAST = {"dataset": "digits", "max_blocks": 2, "store": ":memory:", "measure_latency": False,
        "evaluator": Formula()}


def _play(env, seed=0):
    obs, info = env.reset(seed=seed)
    rng, total, steps = np.random.default_rng(seed), 0.0, 0
    while True:
        valid = np.flatnonzero(info["action_mask"])
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(valid)))
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            return obs, total, steps, terminated, truncated, info


def test_make_with_module_prefix_imports_nas_gym_itself():
    code = ("import sys, gymnasium as gym\n"
            "assert 'nas_gym' not in sys.modules\n"
            "env = gym.make('nas_gym:CellNAS-v0', dataset='digits', store=':memory:')\n"
            "print(type(env.unwrapped).__name__, env.action_space)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("CellNASEnv Discrete(")


def test_make_vec_plays_both_copies():
    envs = gym.make_vec("CellNAS-v0", num_envs=2, vectorization_mode="sync", **FAST)
    obs, infos = envs.reset(seed=[0, 1])
    assert obs.shape == (2, *envs.single_observation_space.shape)
    rng, finished = np.random.default_rng(0), np.zeros(2, dtype=bool)
    for _ in range(50):
        actions = [int(rng.choice(np.flatnonzero(m))) for m in infos["action_mask"]]
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        finished |= terminated
        assert np.all(np.isfinite(rewards))
        if finished.all():
            break
    assert finished.all()
    envs.close()


def test_standard_wrappers():
    env = RecordEpisodeStatistics(gym.make("CellNAS-v0", **FAST))
    _, total, steps, terminated, _, info = _play(env)
    assert terminated and info["episode"]["r"] == pytest.approx(total)
    assert int(info["episode"]["l"]) == steps == 1 + 4 * info["architecture"]["normal"][
        "blocks"].__len__()
    flat = FlattenObservation(gym.make("CellNAS-v0", **FAST))
    obs, _ = flat.reset(seed=0)
    assert obs.shape == (gym.spaces.flatdim(flat.unwrapped.observation_space),)
    assert obs.sum() == flat.unwrapped.max_tokens  # one one-hot per token slot
    limited = TimeLimit(gym.make("CellNAS-v0", **FAST), max_episode_steps=2)
    _, total, steps, terminated, truncated, info = _play(limited)
    assert (steps, terminated, truncated, total) == (2, False, True, 0.0)
    assert "accuracy" not in info  # cut before the architecture was complete: nothing evaluated


def test_render_ansi_shows_the_architecture_in_words():
    env = gym.make("CellNAS-v0", render_mode="ansi", ops="enas", **FAST)
    env.reset(seed=0)
    assert "no block yet" in env.render() and "next decision: num_blocks" in env.render()
    for action in (0, 1, 0, 1, 4):  # 2 blocks; block 0: sep_conv_3x3(cell k-1) + max_pool(k-2)
        env.step(action)
    text = env.render()
    assert "normal cell, 2 blocks:" in text
    assert "block 0: sep_conv_3x3(cell k-1) + max_pool_3x3(cell k-2)" in text
    assert "next decision: input" in text
    macro = gym.make("MacroNAS-v0", render_mode="ansi", max_layers=2, store=":memory:",
                     measure_latency=False, evaluator=Formula())
    macro.reset(seed=0)
    for action in (1, 2):  # filters[1] = 8, kernels[2] = 5
        macro.step(action)
    assert "layer 0 (open): 8 filters, 5x5" in macro.render()


def test_mask_in_observation_and_fixed_info_keys():
    env = gym.make("CellNAS-v0", observation="dict", info_keys="fixed", **FAST)
    assert set(env.observation_space.spaces) == {"observation", "action_mask"}
    obs, info = env.reset(seed=0)
    infos = [info]
    while True:
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs["action_mask"], info["action_mask"])
        action = int(np.flatnonzero(obs["action_mask"])[-1])
        obs, reward, terminated, truncated, info = env.step(action)
        infos.append(info)
        if terminated:
            break
    assert all(tuple(i) == FIXED_INFO_KEYS for i in infos)
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for i in infos for v in i.values())
    assert infos[-1]["evaluated"] and not infos[0]["evaluated"]
    assert infos[-1]["cost_params"] > 0 and infos[-1]["accuracy"] == pytest.approx(
        reward + infos[-1]["penalty"])
    check_env(gym.make("CellNAS-v0", observation="dict", info_keys="fixed", **FAST).unwrapped,
              skip_render_check=True)
    with pytest.raises(ValueError, match="observation='mask'.*'tokens', 'dict'"):
        gym.make("CellNAS-v0", observation="mask", **FAST)
    with pytest.raises(ValueError, match="info_keys='some'"):
        gym.make("CellNAS-v0", info_keys="some", **FAST)
