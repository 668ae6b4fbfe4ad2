"""ProgressiveNAS-v0 (EPNAS, SPEC §1.4): action modes, masks, per-step soft-violation reward, the
``"epnas"`` evaluator with its parameter-sharing dictionary, and an 8-copy vector env on digits."""

from __future__ import annotations

import json
import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import nas_gym
from nas_gym.arch import epnas_ops as E
from nas_gym.arch.epnas import Branch, EpnasLayer, LayerNet, ModuleNet
from nas_gym.costs import static_costs
from nas_gym.data import DataConfig, load_data
from nas_gym.errors import ConfigError, InvalidActionError
from nas_gym.evaluators import EVALUATORS
from nas_gym.evaluators.epnas import EpnasEvaluator, default_share_path, prediction_config
from nas_gym.evaluators.param_sharing import ParamShareDict
from nas_gym.store import EvaluationStore
from nas_gym.training import TrainConfig

L = EpnasLayer
FAST = {"store": ":memory:", "measure_latency": False}
START = LayerNet(layers=(L("conv2d", channels=16), L("max_pool", src1=1),
                         L("conv2d", channels=32, filter_width=5, src1=2, src2=1)))
MODULE_START = ModuleNet(branches=(Branch("conv-maxpool", channels=8),
                                   Branch("conv-none", channels=12, src1=1)), num_modules=2)


class Constant:
    """A cheap evaluator: no training, a fixed accuracy."""

    needs_model = False

    def __init__(self, accuracy: float = 0.8) -> None:
        self.accuracy = accuracy

    def fingerprint(self):
        return {"evaluator": "constant", "accuracy": self.accuracy}

    def evaluate(self, architecture, *, seed, model=None):
        return {"accuracy": self.accuracy}


def make(**kwargs):
    return gym.make("ProgressiveNAS-v0", **{"evaluator": Constant(), **FAST, **kwargs}).unwrapped


def masked_action(env, info, rng: np.random.Generator):
    if env.action_mode == "token":
        return int(rng.choice(np.flatnonzero(info["action_mask"])))
    return np.array([rng.choice(np.flatnonzero(m)) for m in info["action_mask"]])


def transforms(env, rng: np.random.Generator, seed: int | None = None):
    """Run one episode with a masked random policy; yield (reward, info) of each transform."""
    obs, info = env.reset(seed=seed)
    while True:
        assert obs in env.observation_space
        obs, reward, term, trunc, info = env.step(masked_action(env, info, rng))
        assert not trunc
        if "costs" in info:
            yield reward, info
        else:
            assert reward == 0.0 and info["token_type"] != "done"
        if term:
            assert info["num_transforms"] == env.max_transforms and "costs" in info
            return


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.parametrize("mode", ["token", "multidiscrete"])
@pytest.mark.parametrize("pattern", ["layer", "module"])
def test_check_env_gymnasium_and_sb3(pattern, mode) -> None:
    env = make(pattern=pattern, action_mode=mode, max_transforms=3)
    gym_check_env(env, skip_render_check=True)  # the env as gym.make returns it, unwrapped
    sb3_check_env(env, warn=True)
    assert isinstance(env.action_space, gym.spaces.Discrete if mode == "token"
                      else gym.spaces.MultiDiscrete)


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.parametrize("pattern", ["layer", "module"])
def test_check_env_multidiscrete_with_real_epnas_training(pattern) -> None:
    """Every multidiscrete step trains a child; the check repeats the first step after a seeded
    reset (a store hit the second time) and needs the same info both times."""
    env = gym.make("ProgressiveNAS-v0", pattern=pattern, action_mode="multidiscrete",
                   evaluator="epnas", store=":memory:", train_size=200, epochs=1,
                   max_transforms=3, measure_latency=False)
    gym_check_env(env.unwrapped, skip_render_check=True)


def test_token_sequence_observation_and_terminal_info() -> None:
    env = make(start_net=START, num_parts=2, max_transforms=2, budget={"params": 1e4})
    obs, info = env.reset(seed=0)
    assert env.pattern == "layer" and env.action_space.n == E.MAX_LAYERS + 5
    assert info["action_mask"].dtype == np.int8 and info["architecture"] == START.to_dict()
    # observation: 20 slots x 7 fields, transforms done, decision index, 2*2+2+7 decisions taken
    assert obs.shape == (20 * 7 + 1 + 1 + 13,)
    assert obs[:7].tolist() == [1, 1, 0, 0, 0, 0, 0]  # conv2d, k=3, pool 2, 16 ch, relu, 0, -1
    assert obs[14:21].tolist() == [1, 2, 0, 1, 0, 2, 2]  # conv2d, k=5, 32 ch, src1 2, src2 1
    assert obs[21:140].sum() == 0
    # channels: part 0 up, part 1 stay; filter width: stay, down; insert at 1 an add layer
    plan = [("scale_channels", 2), ("scale_channels", 1), ("scale_filter_width", 1),
            ("scale_filter_width", 0), ("op", 1), ("position", 1), ("type", 4),
            ("filter_width", 0), ("pool_width", 0), ("channels", 0), ("activation", 0),
            ("src1", 1), ("src2", 1)]
    for i, (kind, action) in enumerate(plan):
        assert info["token_type"] == kind
        assert info["action_mask"][action] == 1
        obs, reward, term, trunc, info = env.step(action)
        if i < len(plan) - 1:
            assert reward == 0.0 and "costs" not in info
            assert obs[141] == i + 1 and obs[142 + i] == action + 1
    layers = info["architecture"]["layers"]
    assert [x["type"] for x in layers] == ["conv2d", "add", "max_pool", "conv2d"]
    assert layers[0]["channels"] == 32 and layers[3]["filter_width"] == 3
    assert layers[1]["src1"] == 1 and layers[1]["src2"] == 0 and layers[2]["src1"] == 2
    assert info["transform"]["op"] == "insert" and info["transform"]["index"] == 1
    for key in ("accuracy", "costs", "penalty", "reward_parts", "architecture", "status",
                "store_key"):
        assert key in info, key
    for key in ("cache_hit", "eval_seconds", "evaluations"):  # measurements: terminal info only
        assert key not in info, key
    first_key = info["store_key"]
    assert "violation/params" in info["reward_parts"] and not term
    assert reward == pytest.approx(info["reward_parts"]["reward"]) and obs[140] == 1
    assert info["token_type"] == "scale_channels" and obs[141] == 0
    for kind, action in [("scale_channels", 1)] * 2 + [("scale_filter_width", 1)] * 2 + [
            ("op", 0), ("position", 0)]:  # keep: the transform ends after its position
        assert info["token_type"] == kind
        obs, reward, term, trunc, info = env.step(action)
    assert term and not trunc and info["token_type"] == "done"
    # the second transform (keep, scale "stay") reached the same network: served by the store
    assert [(e["store_key"], e["cache_hit"], e["status"]) for e in info["evaluations"]] == [
        (first_key, False, "ok"), (first_key, True, "ok")]
    assert not info["cache_hit"]  # the episode trained its first network
    assert info["eval_seconds"] == pytest.approx(sum(e["eval_seconds"]
                                                     for e in info["evaluations"]))
    assert info["eval_seconds"] >= info["evaluations"][0]["eval_seconds"] > 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


@pytest.mark.parametrize("evaluator", ["train", "epnas"])
def test_same_seed_same_episode_with_real_training(evaluator) -> None:
    kw = {"evaluator": evaluator, "pattern": "module", "max_transforms": 2, "train_size": 200,
          "epochs": 1, "num_modules": 1, "stem_channels": 8, "start_size": 2}
    runs = []
    for _ in range(2):
        env, rng = make(**kw), np.random.default_rng(5)
        runs.append([(r, i["architecture"], i["accuracy"], i["costs"]["params"])
                     for r, i in transforms(env, rng, seed=11)])
    assert runs[0] == runs[1] and len(runs[0]) == 2
    assert all(0 <= acc <= 1 and math.isfinite(r) for r, _, acc, _ in runs[0])
    other = make(**kw).reset(seed=12)[1]["architecture"]
    assert other != make(**kw).reset(seed=11)[1]["architecture"]  # the start net is seeded


@pytest.mark.parametrize("pattern, episodes", [("layer", 50), ("module", 100)])
def test_every_reached_network_builds_and_reports_its_costs(pattern, episodes) -> None:
    """>= 500 random masked transforms: every network rebuilt from its JSON runs forward (in
    ``static_costs``) with the params / FLOPs the env reported. Small start nets, a narrow stem
    and one module copy keep it quick (stacking is covered by tests/test_epnas_arch.py)."""
    env = make(pattern=pattern, stem_channels=8, start_size=2, num_modules=1)
    rng = np.random.default_rng(0)
    shape, seen, n = env.input_shape, {}, 0
    for episode in range(episodes):
        for _, info in transforms(env, rng, seed=episode):
            n += 1
            arch = json.loads(json.dumps(info["architecture"]))
            key = json.dumps(arch, sort_keys=True)
            if key not in seen:
                seen[key] = static_costs(nas_gym.build_model(arch, shape, 10), shape)
            assert info["costs"]["params"] == seen[key]["params"]
            assert info["costs"]["flops"] == seen[key]["flops"]
    assert n >= 500


def test_multidiscrete_remaps_to_the_nearest_legal_value() -> None:
    env = make(start_net=START, action_mode="multidiscrete", num_parts=2)
    env.reset(seed=0)
    masks = env.action_masks()
    assert masks.dtype == np.int8 and masks.size == int(env.action_space.nvec.sum())
    # remove (op 2) at position 7 (legal only for insert): remapped to the last layer (2)
    action = [1] * 4 + [2, 7] + [0] * 7
    _, reward, _, _, info = env.step(action)
    assert info["invalid_action"] and info["transform"]["index"] == 2
    assert len(info["architecture"]["layers"]) == 2 and reward > 0
    # keep: its position and the insert fields are not read, so never invalid
    removed = info["store_key"]
    _, _, _, _, info = env.step([1] * 4 + [0, 9] + [4, 3, 1, 5, 4, 19, 20])
    assert not info["invalid_action"] and info["store_key"] == removed  # the same network
    # insert at 2 a max_pool: fields it ignores are free, src1=19 is remapped to 2
    _, _, _, _, info = env.step([1] * 4 + [1, 2] + [2, 3, 1, 5, 4, 19, 0])
    assert info["invalid_action"] and info["architecture"]["layers"][2]["src1"] == 2
    rng = np.random.default_rng(1)
    for _ in range(30):  # unmasked random vectors always give valid networks
        env.reset(seed=int(rng.integers(100)))
        info = env.step(env.action_space.sample())[-1]
        nas_gym.architecture_from_dict(info["architecture"]).validate()
    strict = make(start_net=START, action_mode="multidiscrete", num_parts=2,
                  invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(InvalidActionError, match="position"):
        strict.step(action)


def test_step_reward_is_accuracy_times_soft_violations() -> None:
    """EPNAS eq. 2-3 by hand: r_t = P * prod_i 0.9 ** max(max(0, U/C_u - 1), max(0, C_l/U - 1))."""
    keep = [1] * 8 + [0, 0] + [0] * 7  # no scaling, keep: the reward of START itself
    # START: 18762 params, 1053312 FLOPs; two constraints, over an upper and under a lower bound
    env = make(start_net=START, evaluator=Constant(0.75), action_mode="multidiscrete",
               budget={"params": (None, 10_000), "flops": (2e6, None)})
    env.reset(seed=0)
    _, reward, _, _, info = env.step(keep)
    assert (info["costs"]["params"], info["costs"]["flops"]) == (18762, 1053312)
    assert reward == pytest.approx(0.75 * 0.9 ** 0.8762 * 0.9 ** (2e6 / 1053312 - 1), rel=1e-12)
    # three constraints: params under its lower bound, intensity and FLOPs over their upper ones
    env = make(start_net=START, evaluator=Constant(0.75), action_mode="multidiscrete",
               budget={"params": (20_000, 50_000), "compute_intensity": (None, 5.0),
                       "flops": (None, 1e6)})
    env.reset(seed=0)
    _, reward, _, _, info = env.step(keep)
    ci = info["costs"]["compute_intensity"]
    assert ci > 5.0
    by_hand = 0.75 * 0.9 ** (20_000 / 18762 - 1) * 0.9 ** (ci / 5.0 - 1) * 0.9 ** 0.053312
    assert reward == pytest.approx(by_hand, rel=1e-12)
    assert info["reward_parts"]["violation/params"] == pytest.approx(0.9 ** (20_000 / 18762 - 1))
    assert info["penalty"] == pytest.approx(0.75 - by_hand)


@pytest.mark.parametrize("budget", [
    {"params": (None, 10_000), "flops": (2e5, None)},
    {"params": (5_000, 50_000), "compute_intensity": (None, 5.0), "flops": (None, 1e6)},
])
def test_every_step_reward_matches_the_costs_it_reports(budget) -> None:
    env = make(start_net=START, budget=budget, evaluator=Constant(0.75), max_transforms=8)
    rng, n = np.random.default_rng(3), 0
    for reward, info in transforms(env, rng, seed=0):
        expected = 0.75
        for metric, (low, high) in budget.items():
            u = info["costs"][metric]
            over = u / high - 1 if high is not None else 0.0
            under = low / u - 1 if low is not None else 0.0
            v = 0.9 ** max(0.0, over, under)
            assert info["reward_parts"][f"violation/{metric}"] == pytest.approx(v, rel=1e-12)
            expected *= v
        assert reward == pytest.approx(expected, rel=1e-12)
        n += 1
    assert n == 8


def test_epnas_evaluator_starts_from_shared_weights() -> None:
    data = load_data(DataConfig(train_size=300))
    ev = EVALUATORS.get("epnas")(data, TrainConfig(epochs=1))
    assert isinstance(ev, EpnasEvaluator) and ev.share is not None and ev.share.path is None
    a = LayerNet(layers=(L("conv2d", channels=16), L("max_pool", src1=1)))
    first = ev.evaluate(a, seed=0)
    assert first.status == "ok" and first.extra["share_loaded"]["exact"] == []
    assert set(first.extra["share_stored"]) == {"stem/conv3x3", "0/conv2d", "head/linear"}
    trained = {k: v.clone() for k, v in first.model.share_units()["0/conv2d"].state_dict().items()}
    # the second net keeps layers 0-1 and appends a conv: layer 0 must start from `trained`
    b = E.insert(a, 2, L("conv2d", channels=32, src1=2))
    model = nas_gym.build_model(b, data.input_shape, data.num_classes, seed=1)
    unit = model.share_units()["0/conv2d"]
    start: dict[str, torch.Tensor] = {}

    def capture(module, _inputs):
        if not start:  # the first forward of training
            start.update({k: v.clone() for k, v in module.state_dict().items()})

    unit.register_forward_pre_hook(capture)
    fresh = {k: v.clone() for k, v in unit.state_dict().items()}
    second = ev.evaluate(b, seed=1, model=model)
    loaded = second.extra["share_loaded"]
    assert {"stem/conv3x3", "0/conv2d"} <= set(loaded["exact"])
    assert loaded["missing"] == ["2/conv2d"] and "head/linear" in loaded["padded"]
    assert all(torch.equal(start[k], trained[k]) for k in trained)
    assert not torch.equal(fresh["op.0.weight"], trained["op.0.weight"])
    # a clash: layer 0's key keeps the weights of the more accurate of the two networks
    better = max(first.accuracy, second.accuracy)
    assert ev.share.variants("0/conv2d")[0].accuracy == better


def test_prediction_config_and_store_cache_decision(tmp_path) -> None:
    base = TrainConfig(batch_size=128, lr=0.05, epochs=20)
    cfg = prediction_config(base, 45_000)  # CIFAR-10: EPNAS's batch 1024, 10 of 20 epochs
    assert (cfg.batch_size, cfg.epochs, cfg.early_stop_patience, cfg.schedule) == (
        1024, 10, None, "cosine")
    assert cfg.lr == pytest.approx(0.5)  # EPNAS: x8 batch, x10 lr
    digits = TrainConfig(batch_size=64, lr=0.05, epochs=4)
    cfg = prediction_config(digits, 1079)  # 64 is already 6% of the set: kept; 2 epochs
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.early_stop_patience) == (64, 0.05, 2, None)
    cfg = prediction_config(digits, 1079, min_steps_per_epoch=8,  # 64 x 8 capped at 1079 // 8
                            lr_power=1.0)  # the linear rule of Smith et al.
    assert cfg.batch_size == 134 and cfg.lr == pytest.approx(0.05 * 134 / 64)
    store = tmp_path / "evals.sqlite"
    assert default_share_path(str(store)) == str((tmp_path / "evals.epnas_share.sqlite").resolve())
    assert default_share_path(":memory:") is None
    env = gym.make("ProgressiveNAS-v0", evaluator="epnas", store=str(store), start_net=START,
                   action_mode="multidiscrete", max_transforms=3, train_size=200, epochs=1,
                   measure_latency=False).unwrapped
    fp = env.components.pipeline.fingerprint
    assert fp["evaluator"] == "epnas" and fp["depends_on"] == "share_state"
    assert fp["share"] == f"file:{(tmp_path / 'evals.epnas_share.sqlite').resolve()}"
    env.reset(seed=0)
    keep = [1] * 8 + [0, 0] + [0] * 7
    first = env.step(keep)[-1]
    again = env.step(keep)[-1]  # the same network: answered by the store, not re-trained
    assert again["accuracy"] == first["accuracy"] and again["store_key"] == first["store_key"]
    end = env.step(keep)  # the third transform ends the episode (max_transforms=3)
    assert end[2] and [e["cache_hit"] for e in end[-1]["evaluations"]] == [False, True, True]
    assert len(env.components.evaluator.share) == 4  # stem, the two convs, the head
    with pytest.raises(ConfigError, match="batch_scale"):
        gym.make("ProgressiveNAS-v0", evaluator="epnas", evaluator_kwargs={"batch_scale": 0},
                 **FAST)


def test_vector_env_on_digits_with_epnas_evaluator(tmp_path) -> None:
    """8 copies in 8 processes share one store file and one sharing-dictionary file."""
    kw = {"pattern": "module", "action_mode": "multidiscrete", "max_transforms": 2,
          "evaluator": "epnas", "train_size": 256, "epochs": 2, "measure_latency": False,
          "start_size": 2, "num_modules": 1, "stem_channels": 8,
          "store": str(tmp_path / "store.sqlite"),
          "budget": {"params": (None, 2e4), "compute_intensity": (2, None), "flops": (None, 1e6)}}
    # warm this process (data, FlopCounterMode): the forked copies inherit it
    warm = gym.make("ProgressiveNAS-v0", **{**kw, "store": ":memory:"})
    warm.reset(seed=0)
    warm.step(warm.action_space.sample())
    start = time.perf_counter()
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make("ProgressiveNAS-v0", **kw)] * 8)
    try:
        envs.reset(seed=list(range(8)))
        envs.action_space.seed(0)
        episodes, autoreset, steps = np.zeros(8, int), np.zeros(8, bool), 0
        while episodes.min() < 2:
            _, reward, term, trunc, info = envs.step(envs.action_space.sample())
            live = ~autoreset  # copies that stepped (the others were reset by this call)
            if live.any():
                assert np.isfinite(reward[live]).all() and info["_costs"][live].all()
                for i in np.flatnonzero(live):
                    assert info["costs"]["params"][i] > 0 and info["costs"]["flops"][i] >= 0
                    for metric in kw["budget"]:
                        v = info["reward_parts"][f"violation/{metric}"][i]
                        assert 0 < v <= 1
            assert not trunc.any()
            episodes += term & live
            autoreset = term | trunc
            steps += 1
    finally:
        envs.close()
    assert steps == 5  # 2 transforms, the autoreset step, 2 transforms
    seconds = time.perf_counter() - start
    store = EvaluationStore(kw["store"])
    records = list(store.records())
    assert records and all(r["fingerprint"]["evaluator"] == "epnas" for r in records)
    # the copies shared weights: some network started from weights another one stored
    assert any(r["result"]["extra"]["share_loaded"]["exact"] for r in records)
    assert len(ParamShareDict(default_share_path(kw["store"]))) > 0
    print(f"8-copy AsyncVectorEnv, 2 episodes x 2 transforms: {seconds:.1f} s")


@pytest.mark.parametrize("kwargs, needle", [
    ({"pattern": "cell"}, "pattern"),
    ({"action_mode": "box"}, "action_mode"),
    ({"max_transforms": 0}, "max_transforms"),
    ({"num_parts": 0}, "num_parts"),
    ({"scale_fields": ("depth",)}, "scale_fields"),
    ({"scale_fields": ()}, "scale_fields"),
    ({"start_size": 21}, "start_size"),
    ({"start_net": {"kind": "epnas_layer", "layers": []}}, "start_net"),
    ({"start_net": MODULE_START, "pattern": "layer"}, "start_net"),
    ({"penalty": "quadratic"}, "penalty"),
    ({"budget": {"compute_intensity": (80, 10)}}, "budget"),
])
def test_bad_arguments_raise_at_make(kwargs, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        make(**kwargs)


def test_start_net_options_and_render() -> None:
    env = make(start_net=MODULE_START.to_dict(), render_mode="ansi")
    assert env.pattern == "module" and env.max_transforms == 5
    _, info = env.reset(seed=0)
    assert info["architecture"] == MODULE_START.to_dict()
    other = ModuleNet(branches=(Branch("avgpool-none"),), num_modules=1)
    _, info = env.reset(options={"start_net": other})
    assert info["architecture"] == other.to_dict() and "module net" in env.render()
    with pytest.raises(ConfigError, match="start_net"):
        env.reset(options={"start_net": START})
