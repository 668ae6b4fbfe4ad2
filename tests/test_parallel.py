"""Parallel child training (SPEC §5): vector envs sharing one store file, the Ray backend on a real
local Ray instance (no mocks), and faults: a worker killed mid-evaluation is retried or recorded as
``failed`` while the search goes on."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

import nas_gym  # noqa: F401  (registers the env ids)
import nas_gym.agents as agents
from nas_gym.data import DataConfig
from nas_gym.errors import ConfigError
from nas_gym.evaluators import TrainEvaluator
from nas_gym.evaluators.remote import EvaluatorSpec, ProcessEvaluator, RayEvaluator
from nas_gym.store import EvaluationStore
from nas_gym.training import get_preset
from nas_gym.vector import copy_devices, make_env_copies, make_env_fns, make_vector_env

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


# -- the process backend and concurrent batches ----------------------------------------------------
def _spec(factory, **kwargs) -> EvaluatorSpec:
    return EvaluatorSpec(factory, DataConfig(name="digits", train_size=200),
                         dataclasses.replace(get_preset("digits"), epochs=1), kwargs=kwargs)


class RendezvousEvaluator(TrainEvaluator):
    """Trains the child, but first waits (up to ``wait`` s) until ``parties`` evaluations of the
    search have begun: the meeting happens only when evaluations run at the same time, so
    ``extra["met"]`` shows concurrency without timing anything."""

    def __init__(self, data, config, *, time_limit=None, folder: str, parties: int = 2,
                 wait: float = 120.0):
        super().__init__(data, config, time_limit=time_limit)
        self.folder, self.parties, self.wait = folder, parties, wait

    def evaluate(self, architecture, *, seed, model=None):
        open(os.path.join(self.folder, f"{os.getpid()}-{time.monotonic_ns()}"), "w").close()
        deadline = time.monotonic() + self.wait
        while len(os.listdir(self.folder)) < self.parties and time.monotonic() < deadline:
            time.sleep(0.01)
        met = len(os.listdir(self.folder)) >= self.parties
        result = super().evaluate(architecture, seed=seed, model=model)
        result.extra.update(met=met, pid=os.getpid())
        return result


def _play(env, actions_or_rng):
    """One episode on ``env`` from a seeded reset: masked random actions (or the given ones)."""
    obs, info = env.reset(seed=0)
    actions, done = [], False
    while not done:
        if isinstance(actions_or_rng, list):
            a = actions_or_rng[len(actions)]
        else:
            a = int(actions_or_rng.choice(np.flatnonzero(info["action_mask"])))
        actions.append(a)
        obs, reward, done, _, info = env.step(a)
    return actions, reward, info


def test_process_backend_trains_as_the_local_one_in_a_worker() -> None:
    env = gym.make("CellNAS-v0", store=":memory:", evaluator_backend="process",
                   worker_threads=1, **TINY)
    local = gym.make("CellNAS-v0", store=":memory:", **TINY)
    try:
        assert env.unwrapped.components.pipeline.fingerprint == \
            local.unwrapped.components.pipeline.fingerprint  # store keys do not change
        actions, reward, info = _play(env, np.random.default_rng(3))
        _, local_reward, local_info = _play(local, actions)
        assert info["status"] == "ok" and not info["cache_hit"]
        assert (info["accuracy"], reward) == (local_info["accuracy"], local_reward)
        record = env.unwrapped.store.get(info["store_key"])
        assert record["extra"]["worker"].split(":")[-1] != str(os.getpid())  # another process
    finally:
        env.close()
    with pytest.raises(ConfigError, match="worker_threads"):
        gym.make("CellNAS-v0", store=":memory:", evaluator_backend="process", worker_threads=0)
    with pytest.raises(ConfigError, match="evaluator_backend"):
        gym.make("CellNAS-v0", store=":memory:", worker_threads=2)  # local: no worker


def _copies(tmp_path, name: str, evaluator_factory, n: int = 2):
    path = str(tmp_path / f"{name}.sqlite")
    return [gym.make("CellNAS-v0", store=path, evaluator=evaluator_factory(),
                     evaluator_backend="process", **TINY) for _ in range(n)], path


def test_reinforce_batch_is_evaluated_concurrently_with_the_same_episodes(tmp_path) -> None:
    """Two copies, REINFORCE with batches of 2: the two children of a batch train at the same time
    in two worker processes, and the search makes the same decisions and gets the same rewards as
    one env playing the episodes one after another."""
    folder = tmp_path / "rendezvous"
    folder.mkdir()
    fingerprint = {"evaluator": "rendezvous"}
    copies, path = _copies(tmp_path, "concurrent", lambda: ProcessEvaluator(
        _spec(RendezvousEvaluator, folder=str(folder)), fingerprint=fingerprint))
    try:
        concurrent = _search(copies, 4)
    finally:
        for env in copies:
            env.close()
    store = EvaluationStore(path)
    extras = [store.get(e.info["store_key"])["extra"] for e in concurrent]
    assert extras[0]["met"] and extras[1]["met"]  # the first batch's children met: concurrent
    assert extras[0]["pid"] != extras[1]["pid"] and os.getpid() not in {x["pid"] for x in extras}
    assert [e.index for e in concurrent] == [0, 1, 2, 3]
    assert store.in_flight() == [] and all(e.info["status"] == "ok" for e in concurrent)

    sequential = _search(gym.make("CellNAS-v0", store=":memory:", **TINY), 4)
    assert [(e.actions, e.reward) for e in sequential] == \
        [(e.actions, e.reward) for e in concurrent]


def test_copies_are_validated() -> None:
    agent = agents.make_agent("reinforce", seed=0)
    with pytest.raises(ConfigError, match="env"):
        agent.learn([], 2)
    with pytest.raises(ConfigError, match=r"env\[1\]"):
        agent.learn([gym.make("CellNAS-v0", store=":memory:", **TINY),
                     gym.make("CellNAS-v0", store=":memory:", **{**TINY, "max_blocks": 3})], 2)
    with pytest.raises(ConfigError, match="store"):
        make_env_copies("CellNAS-v0", 2, store=":memory:")


@pytest.mark.slow
def test_vector_env_worker_killed_mid_evaluation_is_retried(tmp_path) -> None:
    """Gymnasium's AsyncVectorEnv, each copy sending its children to a worker process: the first
    worker to train a child is killed (SIGKILL, like a segfault); the copy survives, a fresh worker
    retrains the child, and every evaluation lands in the store."""
    markers = tmp_path / "markers"
    markers.mkdir()
    path = str(tmp_path / "evals.sqlite")
    evaluator = ProcessEvaluator(_spec(CrashingEvaluator, marker_dir=str(markers)),
                                 fingerprint={"evaluator": "crash-once"}, max_retries=1)
    vec = make_vector_env("CellNAS-v0", 2, store=path, torch_threads=1, evaluator=evaluator,
                          evaluator_backend="process", **TINY)
    try:
        rng = np.random.default_rng(0)
        obs, info = vec.reset(seed=[0, 1])
        for _ in range(TOKENS):
            actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
            obs, reward, term, trunc, info = vec.step(np.asarray(actions))
        assert term.all() and list(info["status"]) == ["ok", "ok"]
        keys = set(info["store_key"].tolist())
    finally:
        vec.close()
    assert os.listdir(markers) == ["crashed"]  # one worker did die
    store = EvaluationStore(path)
    assert all(k in store for k in keys) and store.in_flight() == []


def test_copies_whose_worker_always_dies_record_failed_and_go_on(tmp_path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    copies, path = _copies(tmp_path, "failed", lambda: ProcessEvaluator(
        _spec(CrashingEvaluator, marker_dir=str(markers), always=True),
        fingerprint={"evaluator": "crash-always"}, max_retries=1))
    try:
        episodes = _search(copies, 2)  # the search goes on
    finally:
        for env in copies:
            env.close()
    store = EvaluationStore(path)
    for e in episodes:
        assert e.info["status"] == "failed" and np.isfinite(e.reward)
        record = store.get(e.info["store_key"])
        assert record["status"] == "failed" and "1 retries" in record["message"]
    assert store.in_flight() == []


@pytest.mark.slow
def test_ray_copies_evaluate_a_batch_concurrently(ray_instance, tmp_path) -> None:
    """REINFORCE over two copies on the Ray backend: the children of a batch are Ray tasks in
    flight together on two workers; the driver writes every result to the store."""
    folder = tmp_path / "rendezvous"
    folder.mkdir()
    path = str(tmp_path / "ray-copies.sqlite")
    copies = [gym.make("CellNAS-v0", store=path, **TINY, evaluator=RayEvaluator(
        _spec(RendezvousEvaluator, folder=str(folder)), fingerprint={"evaluator": "rdv"}))
        for _ in range(2)]
    episodes = _search(copies, 4)
    store = EvaluationStore(path)
    extras = [store.get(e.info["store_key"])["extra"] for e in episodes]
    assert extras[0]["met"] and extras[1]["met"] and extras[0]["pid"] != extras[1]["pid"]
    assert all(e.info["status"] == "ok" for e in episodes) and store.in_flight() == []


VECTOR_ENVS = {
    "MacroNAS-v0": {"epochs": 1, "train_size": 200, "max_layers": 3, "measure_latency": False},
    "Net2Net-v0": {"epochs": 1, "train_size": 200, "start_epochs": 1, "max_deeper": 1,
                   "max_wider": 1, "measure_latency": False},
}


@pytest.mark.parametrize("kind", ["gymnasium", "sb3"])
@pytest.mark.parametrize("env_id", sorted(VECTOR_ENVS))
def test_other_envs_under_vector_envs_share_one_store(env_id, kind, tmp_path) -> None:
    """MacroNAS-v0 and Net2Net-v0 (CellNAS-v0 and ProgressiveNAS-v0 above and in their own
    tests) under Gymnasium's AsyncVectorEnv and SB3's SubprocVecEnv: each copy finishes an episode
    with real training in its own process, and every evaluation lands in the one store file."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    path = str(tmp_path / "evals.sqlite")
    fns = make_env_fns(env_id, 2, store=path, torch_threads=1, **VECTOR_ENVS[env_id])
    rng, keys, ended = np.random.default_rng(0), set(), np.zeros(2, dtype=bool)
    if kind == "gymnasium":
        vec = gym.vector.AsyncVectorEnv(fns)
        try:
            _, info = vec.reset(seed=[0, 1])
            while not ended.all():
                actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
                _, _, term, trunc, info = vec.step(np.asarray(actions))
                for i in np.flatnonzero((term | trunc) & ~ended):
                    keys.add(info["store_key"][i])
                    assert info["status"][i] == "ok" and np.isfinite(info["accuracy"][i])
                ended |= term | trunc
        finally:
            vec.close()
    else:
        vec = SubprocVecEnv(fns, start_method="fork")
        try:
            vec.seed(0)
            vec.reset()
            while not ended.all():
                masks = vec.env_method("action_masks")
                _, _, dones, infos = vec.step(
                    np.asarray([int(rng.choice(np.flatnonzero(m))) for m in masks]))
                for i in np.flatnonzero(dones & ~ended):
                    keys.add(infos[i]["store_key"])
                    assert infos[i]["status"] == "ok"
                ended |= dones
        finally:
            vec.close()
    store = EvaluationStore(path)
    assert keys and all(k in store for k in keys) and store.in_flight() == []
