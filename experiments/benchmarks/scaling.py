"""Evaluations per minute with 1 and k parallel workers (SPEC §5, "Parallel evaluation").

Each worker is one copy of an ``AsyncVectorEnv`` (``--backend vector``: one process per copy, all
copies writing one store file) or one Ray task slot of a local Ray instance (``--backend ray``:
``num_cpus=k``, the driver writes the store). A random policy plays CellNAS-v0 on digits; every
architecture is new (fresh store per run), so each episode trains one child. The first round of
episodes (process start, data loading) is not timed. With GPUs, copy ``i`` gets ``cuda:i % k``.

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.scaling [--workers 1 2] [--episodes 6]
        [--epochs 2] [--train-size 600] [--backend vector|ray]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import gymnasium as gym
import numpy as np
import torch

import nas_gym  # noqa: F401
from nas_gym.vector import make_vector_env


def _env_kwargs(args: argparse.Namespace, store: str) -> dict:
    return {"store": store, "epochs": args.epochs, "train_size": args.train_size,
            "min_blocks": 2, "max_blocks": 3, "measure_latency": False}


def run_vector(k: int, args: argparse.Namespace) -> tuple[int, float]:
    """(timed evaluations, seconds) for ``k`` AsyncVectorEnv copies."""
    with tempfile.TemporaryDirectory() as tmp:
        vec = make_vector_env("CellNAS-v0", k, torch_threads=1,
                              **_env_kwargs(args, os.path.join(tmp, "s.sqlite")))
        rng = np.random.default_rng(k)
        try:
            _, info = vec.reset(seed=list(range(k)))
            finished, start, timed = 0, None, 0
            while timed < args.episodes:
                actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
                _, _, term, _, info = vec.step(np.asarray(actions))
                ended = int(term.sum())
                finished += ended
                if start is None and finished >= k:  # warm-up round done
                    start = time.perf_counter()
                elif start is not None:
                    timed += ended
            return timed, time.perf_counter() - start
        finally:
            vec.close()


def run_ray(k: int, args: argparse.Namespace) -> tuple[int, float]:
    """(timed evaluations, seconds) for ``k`` threads of one driver, each an env on Ray."""
    import ray

    ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kw = _env_kwargs(args, os.path.join(tmp, "s.sqlite"))
            envs = [gym.make("CellNAS-v0", evaluator_backend="ray", **kw) for _ in range(k)]
            per = -(-args.episodes // k) + 1  # + 1 warm-up episode per thread
            stamps: list[float] = []
            lock = threading.Lock()

            def play(i: int) -> None:
                rng = np.random.default_rng(100 + i)
                for e in range(per):
                    _, info = envs[i].reset(seed=e)
                    term = False
                    while not term:
                        _, _, term, _, info = envs[i].step(
                            int(rng.choice(np.flatnonzero(info["action_mask"]))))
                    with lock:
                        stamps.append(time.perf_counter())

            threads = [threading.Thread(target=play, args=(i,)) for i in range(k)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stamps.sort()
            return len(stamps) - k, stamps[-1] - stamps[k - 1]
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--episodes", type=int, default=6, help="timed evaluations per setting")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=600)
    p.add_argument("--backend", choices=("vector", "ray"), default="vector")
    args = p.parse_args()
    torch.set_num_threads(1)
    rates = {}
    for k in args.workers:
        n, secs = (run_vector if args.backend == "vector" else run_ray)(k, args)
        rates[k] = 60.0 * n / secs
        print(f"backend={args.backend} workers={k}: {n} evaluations in {secs:.1f} s "
              f"= {rates[k]:.1f} evaluations/min", flush=True)
    base = rates[min(rates)]
    for k in sorted(rates):
        print(f"speed-up workers={k}: {rates[k] / base:.2f}x (target {0.8 * k:.1f}x)")


if __name__ == "__main__":
    main()
