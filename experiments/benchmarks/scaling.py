"""Evaluations per minute with 1 and k parallel workers (SPEC §5, "Parallel evaluation").

A REINFORCE search (batches of ``--batch`` episodes) on CellNAS-v0 / digits, the way
``nas-gym search --workers k --backend B`` runs it: the agent plays each batch on ``k`` env copies
(:func:`nas_gym.vector.make_env_copies`) and their children train at the same time

- ``--backends process``: in ``k`` worker processes of this machine;
- ``--backends ray``: as tasks of a local Ray instance with ``num_cpus=k``;
- ``--backends vector``: for comparison, a random policy stepping a Gymnasium ``AsyncVectorEnv``
  of ``k`` copies in lockstep (a copy that finishes its episode first waits for the others).

The agent's episodes depend only on the seed (not on ``k``), so every setting trains the same
children. The first batch (process start, data loading) is not timed. All settings of a run are
measured one after another in the same process, and the speed-ups are ratios within the run.

    OMP_NUM_THREADS=1 python -m nas_gym.experiments.benchmarks.scaling [--workers 1 2]
        [--backends process ray vector] [--batches 3] [--batch 4] [--epochs 3] [--train-size 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

import nas_gym  # noqa: F401
import nas_gym.agents as agents
from nas_gym.vector import make_env_copies, make_vector_env


def _env_kwargs(args: argparse.Namespace, store: str) -> dict:
    return {"store": store, "epochs": args.epochs, "train_size": args.train_size,
            "min_blocks": 2, "max_blocks": 3, "measure_latency": False}


def run_agent(backend: str, k: int, args: argparse.Namespace) -> tuple[int, float, int]:
    """(timed evaluations, seconds, children trained among them) of a REINFORCE search."""
    with tempfile.TemporaryDirectory() as tmp:
        envs = make_env_copies("CellNAS-v0", k, torch_threads=1, evaluator_backend=backend,
                               **_env_kwargs(args, os.path.join(tmp, "s.sqlite")))
        try:
            agent = agents.make_agent("reinforce", seed=0, batch_episodes=args.batch)
            stamps: list[tuple[float, bool]] = []
            agent.learn(envs, args.batch * (args.batches + 1), callback=lambda e: stamps.append(
                (time.perf_counter(), bool(e.info["cache_hit"]))) and None)
        finally:
            for env in envs:
                env.close()
    timed = stamps[args.batch:]
    start = stamps[args.batch - 1][0]
    return len(timed), timed[-1][0] - start, sum(not hit for _, hit in timed)


def run_vector(k: int, args: argparse.Namespace) -> tuple[int, float, int]:
    """(timed evaluations, seconds, children trained) for ``k`` AsyncVectorEnv copies."""
    with tempfile.TemporaryDirectory() as tmp:
        vec = make_vector_env("CellNAS-v0", k, torch_threads=1,
                              **_env_kwargs(args, os.path.join(tmp, "s.sqlite")))
        rng = np.random.default_rng(0)
        try:
            _, info = vec.reset(seed=list(range(k)))
            finished, start, timed, trained = 0, None, 0, 0
            while timed < args.batch * args.batches:
                actions = [int(rng.choice(np.flatnonzero(m))) for m in info["action_mask"]]
                _, _, term, _, info = vec.step(np.asarray(actions))
                ended = int(term.sum())
                finished += ended
                if start is None and finished >= k:  # warm-up round done
                    start = time.perf_counter()
                elif start is not None:
                    timed += ended
                    if ended:
                        trained += int((term & ~info["cache_hit"].astype(bool)).sum())
            return timed, time.perf_counter() - start, trained
        finally:
            vec.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backends", nargs="+", choices=("process", "ray", "vector"),
                   default=["process", "ray", "vector"])
    p.add_argument("--batches", type=int, default=3, help="timed batches per setting")
    p.add_argument("--batch", type=int, default=4, help="REINFORCE batch_episodes")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    rates: dict[tuple[str, int], float] = {}
    for backend in args.backends:
        for k in args.workers:
            if backend == "ray":
                import ray

                ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False)
            try:
                n, secs, trained = run_vector(k, args) if backend == "vector" \
                    else run_agent(backend, k, args)
            finally:
                if backend == "ray":
                    ray.shutdown()
            rates[backend, k] = 60.0 * n / secs
            print(f"backend={backend} workers={k}: {n} evaluations ({trained} trained) in "
                  f"{secs:.1f} s = {rates[backend, k]:.1f} evaluations/min", flush=True)
    for backend in args.backends:
        base = rates[backend, min(args.workers)]
        for k in sorted(args.workers):
            target = "1.6x on 2 CPU cores" if k == 2 else f"{0.9 * k:.1f}x with {k} GPUs"
            print(f"speed-up {backend} workers={k}: {rates[backend, k] / base:.2f}x "
                  f"(target {target})" if k > min(args.workers) else
                  f"speed-up {backend} workers={k}: 1.00x (reference)")


if __name__ == "__main__":
    main()
