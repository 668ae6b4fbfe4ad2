"""Parallel child training (SPEC §5): vector envs sharing one store file, the Ray backend on a real
local Ray instance (no mocks), and faults: a worker killed mid-evaluation is retried or recorded as
``failed`` while the search goes on."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

import gymnasium as gym
import numpy as np
import pytest

import agents
import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.data import DataConfig
from nas_gym.errors import ConfigError
from nas_gym.evaluators import TrainEvaluator
from nas_gym.parallel import EvaluatorSpec, RayEvaluator
from nas_gym.store import EvaluationStore
from nas_gym.training import get_preset
from nas_gym.vector import copy_devices, make_env_fns, make_vector_env

TINY = {"epochs": 1, "train_size": 200, "min_blocks": 2, "max_blocks": 2,
        "measure_latency": False}
TOKENS = 9  # 1 + 4 * b tokens with b = 2


# -- vector envs ---------------------------------------------------------------------------------
def test_copy_devices_round_robin() -> None:
    assert copy_devices(3, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1", "cuda:0"]
    assert copy_devices(2, "cpu") == ["cpu", "cpu"]
    with pytest.raises(ConfigError, match="devices"):
        copy_devices(2, [])
    with pytest.raises(ConfigError, match="store"):
        make_env_fns("CellNAS-v0", 2, store=":memory:")


def test_async_vector_env_copies_share_one_store(tmp_path) -> None:
    path = str(tmp_path / "evals.sqlite")
    vec = make_vector_env("CellNAS-v0", 2, store=path, torch_threads=1, **TINY)
    try:
        pids = {p.pid for p in vec.processes}
        assert len(pids) == 2 and os.getpid() not in pids  # each copy trains in its own process
        rng = np.random.default_rng(0)
        obs, info = vec.reset(seed=[0, 1])
        for _ in range(TOKENS):
            actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
            obs, reward, term, trunc, info = vec.step(np.asarray(actions))
        assert term.all() and info["_store_key"].all()
        keys = set(info["store_key"].tolist())
    finally:
        vec.close()
    store = EvaluationStore(path)
    assert keys and all(k in store for k in keys) and len(store) == len(keys)
    assert store.in_flight() == []


def test_sb3_subproc_vec_env(tmp_path) -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    path = str(tmp_path / "evals.sqlite")
    vec = SubprocVecEnv(make_env_fns("CellNAS-v0", 2, store=path, torch_threads=1, **TINY),
                        start_method="fork")
    try:
        vec.seed(3)
        vec.reset()
        rng = np.random.default_rng(1)
        for _ in range(TOKENS):
            masks = vec.env_method("action_masks")
            actions = np.asarray([int(rng.choice(np.flatnonzero(m))) for m in masks])
            _, rewards, dones, infos = vec.step(actions)
        assert dones.all()
        keys = {i["store_key"] for i in infos}
    finally:
        vec.close()
    store = EvaluationStore(path)
    assert all(k in store for k in keys) and len(store) == len(keys)


def test_backend_arguments_validated_at_make() -> None:
    with pytest.raises(ConfigError, match="evaluator_backend"):
        gym.make("CellNAS-v0", store=":memory:", evaluator_backend="dask")
    with pytest.raises(ConfigError, match="ray_resources"):
        gym.make("CellNAS-v0", store=":memory:", evaluator_backend="ray",
                 ray_resources={"gpus": 1})
    with pytest.raises(ConfigError, match="max_retries"):
        gym.make("CellNAS-v0", store=":memory:", evaluator_backend="ray", max_retries=-1)
    with pytest.raises(ConfigError, match="evaluator"):
        gym.make("CellNAS-v0", store=":memory:", evaluator_backend="ray", evaluator="shared")


# -- Ray -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the crashing evaluator below lives in this test module: ship it by value to the workers
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _search(env, episodes: int, batch: int = 2) -> list:
    seen: list = []
    agent = agents.make_agent("reinforce", seed=0, batch_episodes=batch)
    agent.learn(env, total_episodes=episodes, callback=lambda e: seen.append(e) and None)
    assert len(seen) == episodes
    return seen


def test_ray_reinforce_search_lands_in_store(ray_instance, tmp_path) -> None:
    path = str(tmp_path / "evals.sqlite")
    env = gym.make("CellNAS-v0", store=path, evaluator_backend="ray", **TINY)
    local = gym.make("CellNAS-v0", store=":memory:", **TINY)
    # the store key does not depend on the backend: a search can move between them
    assert env.unwrapped.components.pipeline.fingerprint == \
        local.unwrapped.components.pipeline.fingerprint
    episodes = _search(env, 4)
    store = EvaluationStore(path)
    for e in episodes:
        assert e.info["store_key"] in store and e.info["status"] == "ok"
        assert np.isfinite(e.reward)
    assert store.in_flight() == []
    assert {r["result"]["status"] for r in store.records()} == {"ok"}


class CrashingEvaluator(TrainEvaluator):
    """Kills its own worker process (SIGKILL: no Python cleanup, like a segfault) on the first
    attempt of the search (``always=False``) or on every attempt."""

    def __init__(self, data, config, *, time_limit=None, marker_dir: str, always: bool = False):
        super().__init__(data, config, time_limit=time_limit)
        self.marker_dir, self.always = marker_dir, always

    def evaluate(self, architecture, *, seed, model=None):
        marker = os.path.join(self.marker_dir, "crashed")
        if self.always or not os.path.exists(marker):
            open(marker, "a").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(architecture, seed=seed, model=model)


def _crashing_env(tmp_path, name: str, *, always: bool, max_retries: int):
    markers = tmp_path / f"markers-{name}"
    markers.mkdir()
    spec = EvaluatorSpec(CrashingEvaluator, DataConfig(name="digits", train_size=200),
                         dataclasses.replace(get_preset("digits"), epochs=1),
                         kwargs={"marker_dir": str(markers), "always": always})
    evaluator = RayEvaluator(spec, fingerprint={"evaluator": "crashing", "always": always},
                             max_retries=max_retries)
    path = str(tmp_path / f"{name}.sqlite")
    return gym.make("CellNAS-v0", store=path, evaluator=evaluator, **TINY), path, markers


def test_ray_killed_worker_is_retried(ray_instance, tmp_path) -> None:
    env, path, markers = _crashing_env(tmp_path, "retry", always=False, max_retries=1)
    episodes = _search(env, 2)
    assert os.listdir(markers) == ["crashed"]  # the first attempt did die
    store = EvaluationStore(path)
    for e in episodes:  # ... and the retry trained the child
        assert e.info["status"] == "ok" and e.info["store_key"] in store
    assert store.in_flight() == []


def test_ray_worker_dying_every_time_is_recorded_failed(ray_instance, tmp_path) -> None:
    env, path, _ = _crashing_env(tmp_path, "failed", always=True, max_retries=0)
    episodes = _search(env, 2)  # the search goes on
    store = EvaluationStore(path)
    for e in episodes:
        assert e.info["status"] == "failed" and e.info["accuracy"] == 0.0
        assert np.isfinite(e.reward)  # a defined reward: the controller never misses one
        record = store.get(e.info["store_key"])
        assert record["status"] == "failed" and "retries" in record["message"]
    assert store.in_flight() == []
