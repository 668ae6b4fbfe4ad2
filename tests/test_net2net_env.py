"""Net2Net-v0 (EAS, SPEC §1.3): the env contract, weight lineage, stages, and that reuse pays."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import nas_gym
from nas_gym.agents import make_agent
from nas_gym.arch.plain import DIGITS_START_NET, ConvLayer, FCLayer, PlainCNN, PoolLayer
from nas_gym.checkpoint import load_model, save_model
from nas_gym.errors import ConfigError, InvalidActionError
from nas_gym.evaluation import EvaluationPipeline
from nas_gym.evaluators import TrainEvaluator
from nas_gym.experiments.eas_stages import run_eas_stages
from nas_gym.lineage import (
    best_child,
    export_model,
    load_weights,
    replay,
)
from nas_gym.models.net2net import legal_deepen_positions, legal_widen_layers
from nas_gym.store import EvaluationStore

# small and quick: 300 training digits, one fine-tuning epoch, a 2-epoch start net
FAST = {"train_size": 300, "epochs": 1, "start_epochs": 2, "measure_latency": False,
        "store": ":memory:"}


def make(**kwargs):
    return gym.make("Net2Net-v0", **{**FAST, **kwargs}).unwrapped


def rollout(env, actions_rng: np.random.Generator, seed: int | None = None, stop_p: float = 0.0):
    """A masked random episode that stops with probability ``stop_p`` per step."""
    obs, info = env.reset(seed=seed)
    rewards = []
    while True:
        assert obs in env.observation_space
        legal = np.flatnonzero(info["action_mask"][:-1])
        action = env.stop_action if actions_rng.random() < stop_p else int(actions_rng.choice(legal))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            return rewards, info


def test_check_env_gymnasium_and_sb3() -> None:
    env = make(max_deeper=2, max_wider=1)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


@pytest.mark.parametrize("algo", ["MaskablePPO", "PPO", "DQN"])
def test_sb3_algorithms_run_unchanged(algo: str) -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import DQN, PPO

    cls, kwargs = {"MaskablePPO": (MaskablePPO, {"n_steps": 16, "batch_size": 8}),
                   "PPO": (PPO, {"n_steps": 16, "batch_size": 8}),
                   "DQN": (DQN, {"learning_starts": 4})}[algo]
    env = gym.make("Net2Net-v0", **{**FAST, "max_deeper": 2, "max_wider": 1})
    cls("MlpPolicy", env, seed=0, **kwargs).learn(16)


def test_action_layout_and_masks() -> None:
    env = make(max_deeper=2, max_wider=3)
    L = env.max_layers
    assert L == len(DIGITS_START_NET.layers) + 2 and env.action_space.n == L + 4 * (L + 1) + 1
    assert env.stop_action == env.action_space.n - 1
    obs, info = env.reset(seed=0)
    mask = info["action_mask"]
    assert mask.dtype == np.int8 and info["token_type"] == "transform"
    assert np.array_equal(mask, env.action_masks())
    arch = env.start_arch  # C16 P C32 FC64
    expected = np.zeros_like(mask)
    expected[-1] = 1
    expected[legal_widen_layers(arch)] = 1
    for p in legal_deepen_positions(arch, "conv"):
        expected[L + 3 * p: L + 3 * p + 3] = 1
    expected[[L + 3 * (L + 1) + p for p in legal_deepen_positions(arch, "fc")]] = 1
    assert np.array_equal(mask, expected)
    assert obs[:12].tolist() == [1, 1, 1, 2, 0, 1, 1, 2, 1, 4, 1, 0] and obs[-2:].tolist() == [2, 3]
    # deepen conv at position 2 with kernel 5, then widen it, then an fc at the end
    _, _, term, _, info = env.step(L + 3 * 2 + 2)
    assert [layer["type"] for layer in info["architecture"]["layers"]] == \
        ["conv", "pool", "conv", "conv", "fc"]
    assert info["architecture"]["layers"][2] == {"type": "conv", "filters": 16, "kernel": 5,
                                                 "stride": 1}
    _, _, _, _, info = env.step(2)
    assert info["architecture"]["layers"][2]["filters"] == 32
    obs, _, term, _, info = env.step(L + 3 * (L + 1) + 5)
    assert info["architecture"]["layers"][-1] == {"type": "fc", "units": 64}
    # deepen allowance used up: only stop and widen remain
    assert not term and obs[-2:].tolist() == [0, 2]
    assert not info["action_mask"][L:-1].any() and info["action_mask"][:L].any()


def test_episode_ends_when_allowance_is_used_or_on_stop() -> None:
    env = make(max_deeper=1, max_wider=1)
    rewards, info = rollout(env, np.random.default_rng(0), seed=0)
    assert len(rewards) == 2 and rewards[0] == 0.0 and info["token_type"] == "done"
    assert [t["op"] for t in info["transforms"]] in (["widen", "deepen"], ["deepen", "widen"])
    assert info["status"] == "ok" and info["penalty"] == 0.0
    assert rewards[-1] == pytest.approx(np.tan(min(info["accuracy"], 1 - 1e-6) * np.pi / 2))
    for key in ("accuracy", "costs", "penalty", "reward_parts", "architecture", "eval_seconds",
                "cache_hit", "status", "parent", "store_key", "transforms"):
        assert key in info, key
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.stop_action)
    env.reset()
    _, reward, term, _, stop_info = env.step(env.stop_action)  # stop at once: the start net, fine-tuned
    assert term and stop_info["transforms"] == [] and stop_info["num_transforms"] == 0
    assert stop_info["architecture"] == DIGITS_START_NET.to_dict()


def test_same_seed_same_episode_on_cpu() -> None:
    runs = []
    for _ in range(2):
        env = make(max_deeper=2, max_wider=2)
        runs.append(rollout(env, np.random.default_rng(5), seed=3))
    (r1, i1), (r2, i2) = runs
    assert r1 == r2 and i1["accuracy"] == i2["accuracy"]
    for key in ("architecture", "transforms", "store_key", "parent", "reward_parts"):
        assert i1[key] == i2[key], key
    i1["costs"].pop("train_seconds"), i2["costs"].pop("train_seconds")  # wall-clock
    assert i1["costs"] == i2["costs"]


def test_transforms_preserve_the_start_net_function() -> None:
    env = make(max_deeper=3, max_wider=3)
    env.reset(seed=0)
    x = env.data.val_x[:32]
    start = env._start_model.eval()
    with torch.no_grad():
        before = start(x)
    rng = np.random.default_rng(1)
    info = {"action_mask": env.action_masks()}
    for _ in range(5):
        env.step(int(rng.choice(np.flatnonzero(info["action_mask"][:-1]))))
        info = {"action_mask": env.action_masks()}
    assert len(env._arch.layers) > len(DIGITS_START_NET.layers)
    with torch.no_grad():
        after = env._model.eval()(x)
    assert torch.max(torch.abs(after - before)).item() < 1e-4


def test_invalid_action_is_remapped_or_raises() -> None:
    env = make(max_deeper=1, max_wider=1)
    _, info = env.reset(seed=0)
    valid = np.flatnonzero(info["action_mask"])
    _, _, _, _, info = env.step(1)  # layer 1 is a pool: not widenable
    assert info["invalid_action"]
    expected = make(max_deeper=1, max_wider=1)  # the documented rule: valid[a % len(valid)]
    expected.reset(seed=0)
    _, _, _, _, ref = expected.step(int(valid[1 % len(valid)]))
    assert info["architecture"] == ref["architecture"] and not ref["invalid_action"]
    strict = make(invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(InvalidActionError, match="transform 0"):
        strict.step(1)


def test_step_reward_mode_telescopes() -> None:
    env = make(max_deeper=1, max_wider=1, reward_mode="step")
    rewards, info = rollout(env, np.random.default_rng(2), seed=0)
    episode = make(max_deeper=1, max_wider=1, store=env.store)  # same store: cache hits
    ep_rewards, ep_info = rollout(episode, np.random.default_rng(2), seed=0)
    assert ep_info["cache_hit"] and ep_info["store_key"] == info["store_key"]
    start_reward = env._start_reward
    assert sum(rewards) == pytest.approx(ep_rewards[-1] - start_reward)


def test_lineage_weights_and_replay() -> None:
    env = make(max_deeper=2, max_wider=1)
    _, info = rollout(env, np.random.default_rng(4), seed=0)
    chain = env.store.lineage(info["store_key"])
    assert [link["key"] for link in chain] == [env.start_key, info["store_key"]]
    assert chain[0]["parent"] is None and chain[1]["transform"] == info["transforms"]
    stored = load_weights(env.store, info["store_key"], env.input_shape, env.num_classes)
    replayed = replay(env.store, info["store_key"], env.data)  # parent + transforms + fine-tune
    for name, tensor in stored.state_dict().items():
        assert torch.equal(tensor, replayed.state_dict()[name].cpu()), name


def test_start_net_from_architecture_and_checkpoint(tmp_path) -> None:
    arch = PlainCNN((ConvLayer(16, 3), PoolLayer("avg", 2), ConvLayer(16, 1), FCLayer(64)))
    env = make(start_net=arch.to_dict(), max_deeper=1, max_wider=1)
    env.reset(seed=0)
    assert env.start_arch == arch and env.max_layers == 5
    path = save_model(env._start_model, tmp_path / "start" / "model.pt",
                      input_shape=env.input_shape, num_classes=env.num_classes)
    other = make(start_net=str(path.parent), max_deeper=1, max_wider=1)  # a new store
    other.reset(seed=0)
    x = env.data.val_x[:16]
    with torch.no_grad():
        assert torch.equal(env._start_model.eval()(x), other._start_model.eval()(x))
    root = [r for r in other.store.records() if r["key"] == other.start_key]  # a lineage root
    assert root[0]["parent"] is None and root[0]["fingerprint"]["evaluator"] == "checkpoint"
    assert root[0]["result"]["accuracy"] == env.store.get(env.start_key)["accuracy"]
    # an exported child of this store, used as a start net with the same store, is the parent
    _, info = rollout(env, np.random.default_rng(0), seed=0)
    exported = export_model(env.store, info["store_key"], tmp_path / "child" / "model.pt",
                            input_shape=env.input_shape, num_classes=env.num_classes)
    assert load_model(exported).architecture.to_dict() == info["architecture"]
    child = make(start_net=exported, store=env.store, max_deeper=1, max_wider=1)
    _, info2 = rollout(child, np.random.default_rng(0), seed=0)
    assert child.start_key == info["store_key"] and info2["parent"] == info["store_key"]
    assert len(env.store.lineage(info2["store_key"])) == 3


def test_start_weights_are_trained_once_per_store(tmp_path) -> None:
    path = str(tmp_path / "store.sqlite")
    first = make(store=path)
    first.reset(seed=0)
    second = make(store=path)
    second.reset(seed=0)  # loads the stored start weights: no second training
    assert second.start_key == first.start_key and len(second.store) == 1
    for (name, a), b in zip(first._start_model.state_dict().items(),
                            second._start_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_stages_chain_best_nets() -> None:
    """The EAS stage runner: the stage's best is retrained and starts the next stage; the store's
    lineage runs start net -> stage-1 best -> retrained best -> stage-2 best."""
    store = EvaluationStore(":memory:")
    stages = run_eas_stages(
        lambda start: make(start_net=start, store=store, max_deeper=1, max_wider=1,
                           protocol="eas"),
        make_agent("random", seed=0), nets=[2, 2], retrain_epochs=1)
    retrained = stages[0]["retrained"]
    assert retrained["result"]["status"] == "ok" and stages[1]["retrained"] is None
    assert stages[1]["start_key"] == retrained["key"]
    assert stages[1]["start_accuracy"] == retrained["result"]["accuracy"]
    assert [len(s["episodes"]) for s in stages] == [2, 2]
    best = stages[1]["best"]
    chain = store.lineage(best["key"])
    assert [link["key"] for link in chain] == [stages[0]["start_key"], stages[0]["best"]["key"],
                                               retrained["key"], best["key"]]
    children = [r for r in store.records() if r["parent"] == stages[1]["start_key"]]
    assert best["result"]["accuracy"] == max(r["result"]["accuracy"] for r in children)
    assert best_child(store, stages[1]["start_key"])["key"] == best["key"]  # no penalty: by acc


def test_stage_runner_refuses_bad_nets() -> None:
    with pytest.raises(ValueError, match="nets"):
        run_eas_stages(make, make_agent("random"), nets=[3, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reuse_pays_on_digits(seed: int) -> None:
    """Issue done-when: transforms from a trained start net + 1 epoch of fine-tuning are at least as
    accurate on validation as the same architecture trained from scratch for 1 epoch."""
    env = gym.make("Net2Net-v0", epochs=1, start_epochs=5, seed=seed, store=":memory:",
                   measure_latency=False).unwrapped
    _, info = rollout(env, np.random.default_rng(seed), seed=seed)
    assert info["num_transforms"] >= 3
    evaluator = TrainEvaluator(env.data, env.components.train_config)
    pipeline = EvaluationPipeline(evaluator, env.store, env.reward_fn, env.input_shape,
                                  env.num_classes, device=env.components.device,
                                  measure_latency=False)
    scratch, _ = pipeline.evaluate(nas_gym.architecture_from_dict(info["architecture"]),
                                   seed=seed)
    assert info["accuracy"] >= scratch["accuracy"], (info["accuracy"], scratch["accuracy"])


def test_reuse_benchmark_smoke(capsys) -> None:
    from nas_gym.experiments.benchmarks.net2net_reuse import main

    rows = main(["--seeds", "1", "--max-epochs", "1", "--start-epochs", "1", "--train-size", "100"])
    assert len(rows) == 1 and rows[0]["e_scratch"] == 1
    assert "ratio" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_deeper": -1}, "max_deeper"),
        ({"max_deeper": 0, "max_wider": 0}, "max_deeper"),
        ({"max_wider": 1.5}, "max_wider"),
        ({"reward_mode": "dense"}, "reward_mode"),
        ({"widen_noise": -0.1}, "widen_noise"),
        ({"start_epochs": 0}, "start_epochs"),
        ({"max_layers": 2}, "max_layers"),
        ({"start_net": "/nonexistent/start.pt"}, "start_net"),
        ({"start_net": {"kind": "cell", "normal": {"blocks": [[0, 1, "identity", "identity"]]}}},
         "start_net"),
        ({"start_net": {"kind": "plain", "layers": [{"type": "conv", "filters": 8, "kernel": 3},
                                                    {"type": "pool", "mode": "max", "size": 16}]}},
         "start_net"),
        ({"penalty": "quadratic"}, "penalty"),
    ],
)
def test_bad_input_raises_at_make(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        gym.make("Net2Net-v0", **{**FAST, **kwargs})
    assert isinstance(err.value, ConfigError)
