"""Seconds per child: 1 env copy alone vs 2 copies under ``gym.make_vec(..., "async")`` (issue 19).

Each copy plays ``--episodes`` random episodes of CellNAS-v0 on digits with a fresh store (every
child trains); the per-child time is the terminal ``info["eval_seconds"]`` (costs + training).
The copy alone runs in this process with the default ``torch_threads`` (the cores); each copy of the
vector env, a worker process, runs on 1 thread (its default). Settings alternate ``--rounds``
times in one run, so the ratio is measured side by side on the shared machine. With the copies
capped, 2 copies should train each child about as fast as 1 copy alone (ratio ~1), i.e. twice
the children per second on 2 cores.

    python -m nas_gym.experiments.benchmarks.vector_threads [--episodes 4] [--rounds 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import gymnasium as gym
import numpy as np

import nas_gym  # noqa: F401  (registers the env ids)


def _kwargs(args: argparse.Namespace, store: str) -> dict:
    return {"dataset": "digits", "epochs": args.epochs, "min_blocks": 2, "max_blocks": 3,
            "measure_latency": False, "store": store}


def alone(args: argparse.Namespace, store: str, seed: int) -> tuple[list[float], float]:
    env = gym.make("CellNAS-v0", **_kwargs(args, store))
    rng, times, start = np.random.default_rng(seed), [], time.perf_counter()
    for e in range(args.episodes):
        _, info = env.reset(seed=seed * 1000 + e)
        while True:
            _, _, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
            if term or trunc:
                times.append(info["eval_seconds"])
                break
    env.close()
    return times, time.perf_counter() - start


def vector(args: argparse.Namespace, store: str, seed: int) -> tuple[list[float], float]:
    vec = gym.make_vec("CellNAS-v0", num_envs=2, vectorization_mode="async",
                       **_kwargs(args, store))
    rng, times = np.random.default_rng(seed), []
    _, info = vec.reset(seed=[seed * 1000, seed * 1000 + 500])
    start = time.perf_counter()
    while len(times) < 2 * args.episodes:
        actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
        _, _, term, trunc, info = vec.step(np.asarray(actions))
        times += [float(info["eval_seconds"][i]) for i in np.flatnonzero(term | trunc)]
    seconds = time.perf_counter() - start
    vec.close()
    return times, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4, help="children per copy and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    per_child: dict[str, list[float]] = {"alone": [], "make_vec x2": []}
    wall: dict[str, float] = {"alone": 0.0, "make_vec x2": 0.0}
    counts: dict[str, int] = {"alone": 0, "make_vec x2": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, fn in (("alone", alone), ("make_vec x2", vector)):
                times, seconds = fn(args, os.path.join(tmp, f"{name}-{r}.sqlite"), r)
                per_child[name] += times
                wall[name] += seconds
                counts[name] += len(times)
                print(f"round {r} {name}: {np.median(times):.2f} s per child, "
                      f"{len(times)} children in {seconds:.1f} s", flush=True)
    a, v = np.median(per_child["alone"]), np.median(per_child["make_vec x2"])
    print(f"median seconds per child: alone {a:.2f}, each of 2 make_vec copies {v:.2f} "
          f"(ratio {v / a:.2f}); children per minute: alone "
          f"{60 * counts['alone'] / wall['alone']:.1f}, make_vec x2 "
          f"{60 * counts['make_vec x2'] / wall['make_vec x2']:.1f}")


if __name__ == "__main__":
    main()
