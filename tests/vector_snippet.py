"""The snippet of issue 19 as a script (worker processes need the ``__main__`` guard), run by
``tests/test_processes.py`` under a time limit: ``python tests/vector_snippet.py METHOD KIND...``.

METHOD: a start method (``fork``, ``forkserver``, ``spawn``). KIND: ``gymnasium`` (``gym.vector.AsyncVectorEnv``, the snippet), ``make_vec``
(``gym.make_vec(..., vectorization_mode="async")``), ``sb3`` (``SubprocVecEnv``) or ``orphan``
(prints the worker pids while they train, then waits to be killed; last). Prints one JSON line
per KIND: the statuses of its finished episodes.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time

import gymnasium as gym
import numpy as np

import nas_gym  # noqa: F401  (registers the env ids)

KW = {"dataset": "digits", "epochs": 1, "store": ":memory:", "train_size": 200, "min_blocks": 2,
      "max_blocks": 2, "measure_latency": False}


def make() -> gym.Env:
    return gym.make("CellNAS-v0", **KW)


def play_gymnasium(vec: gym.vector.VectorEnv) -> list[str]:
    _, info = vec.reset(seed=0)
    rng, ended, statuses = np.random.default_rng(0), np.zeros(vec.num_envs, dtype=bool), []
    while not ended.all():
        actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
        _, _, term, trunc, info = vec.step(np.asarray(actions))
        statuses += [str(info["status"][i]) for i in np.flatnonzero((term | trunc) & ~ended)]
        ended |= term | trunc
    return statuses


def play_sb3(vec) -> list[str]:
    vec.seed(0)
    vec.reset()
    rng, ended, statuses = np.random.default_rng(0), np.zeros(vec.num_envs, dtype=bool), []
    while not ended.all():
        masks = vec.env_method("action_masks")
        _, _, dones, infos = vec.step(np.asarray([int(rng.choice(np.flatnonzero(m)))
                                                  for m in masks]))
        statuses += [str(infos[i]["status"]) for i in np.flatnonzero(dones & ~ended)]
        ended |= dones
    return statuses


def orphan(method: str) -> None:
    """Workers in the middle of a long training when the test kills this process."""
    kw = {**KW, "epochs": 50, "train_size": None}
    vec = gym.vector.AsyncVectorEnv([lambda: gym.make("CellNAS-v0", **kw)] * 2, context=method)
    _, info = vec.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(8):
        vec.step(np.asarray([int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]))
    vec.step_async(np.zeros(2, dtype=np.int64))  # the last token: both copies start training
    print(json.dumps({"workers": [p.pid for p in vec.processes]}), flush=True)
    time.sleep(600)


def run(kind: str, method: str) -> None:
    start = time.perf_counter()
    if kind == "orphan":
        orphan(method)
    elif kind == "gymnasium":  # the snippet
        vec = gym.vector.AsyncVectorEnv([lambda: gym.make("CellNAS-v0", **KW)] * 2,
                                        context=method)
        statuses = play_gymnasium(vec)
    elif kind == "make_vec":
        vec = gym.make_vec("CellNAS-v0", num_envs=2, vectorization_mode="async",
                           vector_kwargs={"context": method}, **KW)
        statuses = play_gymnasium(vec)
    else:
        from stable_baselines3.common.vec_env import SubprocVecEnv

        vec = SubprocVecEnv([make] * 2, start_method=method)
        statuses = play_sb3(vec)
    vec.close()
    print(json.dumps({"kind": kind, "statuses": statuses,
                      "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "forkserver":  # the server imports nas_gym once; its children fork from it
        multiprocessing.set_forkserver_preload(["nas_gym"])
    for name in sys.argv[2:]:
        run(name, sys.argv[1])
