"""CellNAS-v0 end to end: the SPEC §0 contract on real, trained children."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import nas_gym
from nas_gym.costs import count_params
from nas_gym.errors import ArchitectureError, ConfigError, InvalidActionError
from nas_gym.evaluators import TrainEvaluator
from nas_gym.training import TrainConfig

FAST = {"epochs": 1, "channels": 8, "measure_latency": False}


def run_episode(env, rng: np.random.Generator, seed: int | None = None):
    obs, info = env.reset(seed=seed)
    total = 0.0
    while True:
        mask = info["action_mask"]
        assert obs in env.observation_space
        action = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            return total, info


def test_check_env_gymnasium_and_sb3() -> None:
    env = gym.make("CellNAS-v0", store=":memory:", **FAST)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)


def test_token_grammar_and_masks() -> None:
    env = gym.make("CellNAS-v0", min_blocks=2, max_blocks=3, store=":memory:", **FAST).unwrapped
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 5 and info["token_type"] == "num_blocks"
    assert info["action_mask"].tolist() == [1, 1, 0, 0, 0]
    assert info["action_mask"].dtype == np.int8
    types = []
    obs, _, _, _, info = env.step(0)  # b = 2
    for _ in range(8):
        types.append(info["token_type"])
        mask = info["action_mask"]
        if info["token_type"] == "input":
            block = (len(types) - 1) // 4
            assert mask.sum() == block + 2  # cell k-2, k-1 and the earlier blocks
        if types[-1] != "done":
            obs, reward, term, trunc, info = env.step(int(np.flatnonzero(mask)[-1]))
    assert types == ["input", "input", "op", "op"] * 2
    assert term and not trunc and info["token_type"] == "done"
    assert obs.tolist()[:9] == [1, 2, 2, 5, 5, 3, 3, 5, 5]
    arch = info["architecture"]
    assert arch["normal"]["blocks"] == [[1, 1, "max_pool_3x3", "max_pool_3x3"],
                                        [2, 2, "max_pool_3x3", "max_pool_3x3"]]


def test_separate_reduction_cell_doubles_tokens() -> None:
    env = gym.make("CellNAS-v0", min_blocks=1, max_blocks=1, reduction="separate",
                   store=":memory:", **FAST)
    _, info = run_episode(env, np.random.default_rng(0), seed=0)
    assert info["num_tokens"] == 2 * (1 + 4 * 1)
    assert info["architecture"]["reduction"] is not None


def test_same_seed_same_architectures_and_rewards() -> None:
    runs = []
    for _ in range(2):
        env = gym.make("CellNAS-v0", budget=20_000, store=":memory:", **FAST)
        rng = np.random.default_rng(7)
        runs.append([run_episode(env, rng, seed=7) for _ in range(2)])
    for (r1, i1), (r2, i2) in zip(*runs, strict=True):
        assert i1["architecture"] == i2["architecture"]
        assert r1 == r2 and i1["accuracy"] == i2["accuracy"]
        assert not i1["cache_hit"] and not i2["cache_hit"]


def test_terminal_info_contract_and_round_trip() -> None:
    env = gym.make("CellNAS-v0", budget={"params": 5_000}, store=":memory:", epochs=1,
                   channels=8, measure_latency=True)  # "auto" would not: the budget is params
    reward, info = run_episode(env, np.random.default_rng(1), seed=1)
    for key in ("accuracy", "costs", "penalty", "reward_parts", "architecture", "eval_seconds",
                "cache_hit", "status"):
        assert key in info, key
    assert info["status"] == "ok" and 0 <= info["accuracy"] <= 1
    assert set(info["costs"]) >= {"params", "flops", "memory_bytes", "latency_ms",
                                  "train_seconds", "compute_intensity"}
    assert reward == pytest.approx(info["reward_parts"]["reward"])
    assert reward == pytest.approx(info["accuracy"] - info["penalty"])
    arch = json.loads(json.dumps(info["architecture"]))
    model = nas_gym.build_model(arch, (1, 8, 8), 10)
    assert count_params(model) == info["costs"]["params"]
    assert nas_gym.architecture_from_dict(arch).to_dict() == info["architecture"]


def test_repeated_architecture_is_served_from_store(tmp_path) -> None:
    path = tmp_path / "store.sqlite"
    env = gym.make("CellNAS-v0", store=str(path), **FAST).unwrapped
    _, first = run_episode(env, np.random.default_rng(3), seed=0)
    assert not first["cache_hit"]
    tokens = env.tokens  # how fast a hit is: python -m nas_gym.experiments.benchmarks.store_speed
    env.reset()
    for t in tokens[:-1]:
        env.step(t)
    _, reward, _, _, again = env.step(tokens[-1])
    assert again["cache_hit"]
    for key in ("accuracy", "costs", "architecture", "status", "penalty"):
        assert again[key] == first[key], key
    # a second env on the same file shares the results (another process would too)
    other = gym.make("CellNAS-v0", store=str(path), **FAST).unwrapped
    other.reset()
    for t in tokens:
        *_, info = other.step(t)
    assert info["cache_hit"] and info["accuracy"] == first["accuracy"]


def test_diverging_training_ends_normally() -> None:
    env = gym.make("CellNAS-v0", lr=1e12, store=":memory:", budget=10_000, **FAST)
    assert env.unwrapped.components.train_config.lr == 1e12  # validated at make time
    reward, info = run_episode(env, np.random.default_rng(0), seed=0)
    assert info["status"] == "diverged" and np.isfinite(reward)
    assert info["accuracy"] == 0.0


class OOMOnceEvaluator(TrainEvaluator):
    """The real training evaluator with an out-of-memory error injected into the child."""

    def evaluate(self, architecture, *, seed, model=None):
        model = nas_gym.build_model(architecture, self.data.input_shape, self.data.num_classes)

        def boom(*_):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.register_forward_hook(boom)
        return super().evaluate(architecture, seed=seed, model=model)


def test_injected_oom_gives_status_oom() -> None:
    probe = gym.make("CellNAS-v0", store=":memory:", **FAST).unwrapped
    evaluator = OOMOnceEvaluator(probe.data, TrainConfig(epochs=1))
    env = gym.make("CellNAS-v0", evaluator=evaluator, store=":memory:", **FAST)
    reward, info = run_episode(env, np.random.default_rng(0), seed=0)
    assert info["status"] == "oom" and np.isfinite(reward)


def test_custom_evaluator_object_is_used() -> None:
    class ParamScorer:
        needs_model = False

        def fingerprint(self):
            return {"evaluator": "param-scorer-v1"}

        def evaluate(self, architecture, *, seed, model=None):
            blocks = architecture.normal.blocks
            return {"accuracy": len(blocks) / 10}

    env = gym.make("CellNAS-v0", evaluator=ParamScorer(), store=":memory:", **FAST)
    _, info = run_episode(env, np.random.default_rng(0), seed=0)
    assert info["accuracy"] == len(info["architecture"]["normal"]["blocks"]) / 10
    assert info["costs"]["params"] > 0


def test_invalid_action_is_remapped_or_raises() -> None:
    env = gym.make("CellNAS-v0", min_blocks=2, max_blocks=3, store=":memory:", **FAST).unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(4)  # num_blocks allows 0..1: 4 -> valid[4 % 2] = 0
    assert info["invalid_action"] and env.tokens == (0,)
    _, _, _, _, info = env.step(1)
    assert not info["invalid_action"]
    strict = gym.make("CellNAS-v0", invalid_action="raise", store=":memory:", **FAST)
    strict.reset(seed=0)
    with pytest.raises(InvalidActionError, match="num_blocks"):
        strict.step(7)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": -1}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"budget": {"watts": 5}}, "watts"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"ops": ("identity", "conv_9x9")}, "conv_9x9"),
        ({"ops": "darts"}, "ops"),
        ({"penalty": "quadratic"}, "penalty"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": -2}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"evaluator": "magic"}, "evaluator"),
        ({"invalid_action": "ignore"}, "invalid_action"),
        ({"max_blocks": 1, "min_blocks": 2}, "max_blocks"),
        ({"reduction": "none"}, "reduction"),
        ({"device": "tpu"}, "device"),
        ({"store": 42}, "store"),
        ({"training": "fastest"}, "training"),
        ({"penalty_kwargs": {"gamma": 1}}, "penalty_kwargs"),
    ],
)
def test_bad_input_raises_at_make(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        gym.make("CellNAS-v0", **kwargs)
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize(
    "arch",
    [
        {"kind": "cell"},
        {"kind": "cell", "normal": {"blocks": [[0, 5, "identity", "identity"]]}},
        {"kind": "cell", "normal": {"blocks": [[0, 1, "identity", "conv_9x9"]]}},
        {"kind": "cell", "normal": {"blocks": []}},
        {"kind": "cell", "normal": {"blocks": [[0, 1, "identity"]]}},
        {"kind": "resnet"},
        {"normal": {}},
        "not json",
        [1, 2],
    ],
)
def test_build_model_rejects_malformed_architectures(arch) -> None:
    with pytest.raises(ArchitectureError):
        nas_gym.build_model(arch, (1, 8, 8), 10)


def test_build_model_checks_shapes() -> None:
    arch = {"kind": "cell", "normal": {"blocks": [[0, 1, "identity", "identity"]]}}
    with pytest.raises(ConfigError, match="input_shape"):
        nas_gym.build_model(arch, (8, 8), 10)
    with pytest.raises(ConfigError, match="num_classes"):
        nas_gym.build_model(arch, (1, 8, 8), 1)


@pytest.mark.slow
def test_random_policy_trains_real_children_to_085() -> None:
    """Done-when of the foundation: default settings, digits, a masked random policy, 20 episodes."""
    env = gym.make("CellNAS-v0", budget={"params": 30_000})
    rng = np.random.default_rng(0)
    infos = [run_episode(env, rng, seed=i)[1] for i in range(20)]
    assert all(i["status"] == "ok" and i["costs"]["train_seconds"] > 0 for i in infos)
    assert len({json.dumps(i["architecture"], sort_keys=True) for i in infos}) > 15
    assert max(i["accuracy"] for i in infos) >= 0.85
