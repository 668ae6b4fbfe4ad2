"""Overhead of an env evaluation against a minimal hand-written PyTorch loop.

For the same architecture, the same tensors and the same number of SGD steps, time
(a) one CellNAS-v0 evaluation with the env's defaults (key, store lookup, build, pre-training costs -
latency is not measured: the default reward does not read it -, training, validation, store write)
and
(b) a bare loop: build the model, SGD-Nesterov + cosine over the same batches, validation accuracy.
A warm-up pair is not counted; pairs run alternately in one process so machine noise hits both; prints the median ratio of
process CPU seconds (with one torch thread this is robust to other jobs on a shared machine) and,
beside it, of wall seconds.

    python -m nas_gym.experiments.benchmarks.overhead [--pairs 5] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import nas_gym
from nas_gym.arch import architecture_from_dict


def hand_loop(arch_dict: dict, data, epochs: int, batch: int, seed: int) -> float:
    """What a researcher would write by hand: no store, no costs, no fault handling."""
    model = nas_gym.build_model(arch_dict, data.input_shape, data.num_classes, seed=seed)
    n = data.train_x.shape[0]
    steps = n // batch
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps, eta_min=0.001)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps):
            idx = perm[i * batch:(i + 1) * batch]
            x = data.train_x[idx]
            loss = F.cross_entropy(model(x), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return float((model(data.val_x).argmax(1) == data.val_y).float().mean())


class _Zero:
    """A free evaluator: only used to draw random architectures through the env's grammar."""

    needs_model = False

    def evaluate(self, architecture, *, seed, model=None):
        return {"accuracy": 0.0}


def random_architecture(rng: np.random.Generator, seed: int):
    """A masked-random CellNAS-v0 architecture (drawn through the public env API)."""
    env = gym.make("CellNAS-v0", evaluator=_Zero(), store=":memory:", measure_latency=False)
    _, info = env.reset(seed=seed)
    while True:
        *_, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if terminated:
            return architecture_from_dict(info["architecture"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = gym.make("CellNAS-v0", store=":memory:", epochs=args.epochs).unwrapped
    data, cfg = env.data, env.components.train_config
    rng = np.random.default_rng(0)
    ratios = []
    walls = []
    print(f"{'pair':>4} {'env cpu s':>9} {'hand cpu s':>10} {'ratio':>6} {'wall ratio':>10} "
          f"{'env acc':>7} {'hand acc':>8}")
    for pair in range(-1, args.pairs):
        arch = random_architecture(rng, pair + 1)
        arch_dict = arch.to_dict()
        run_env = partial(env.evaluate_architecture, arch)  # what the env's terminal step runs
        run_hand = partial(hand_loop, arch_dict, data, cfg.epochs, cfg.batch_size,
                           env.components.seed)

        # alternate which side goes first, so neither always runs on warmer caches
        order = (run_env, run_hand) if pair % 2 == 0 else (run_hand, run_env)
        timings = {}
        for fn in order:
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            timings[fn] = (time.perf_counter() - w0, time.process_time() - c0, out)
        w_env, c_env, info = timings[run_env]
        w_hand, c_hand, acc = timings[run_hand]
        assert info["architecture"] == arch_dict and not info["cache_hit"]
        if pair < 0:  # the warm-up pair (first-use costs of torch's kernels) is not counted
            continue
        ratios.append(c_env / c_hand)
        walls.append(w_env / w_hand)
        print(f"{pair:>4} {c_env:9.2f} {c_hand:10.2f} {ratios[-1]:6.3f} {walls[-1]:10.3f} "
              f"{info['accuracy']:7.3f} {acc:8.3f}")
    print(f"median ratio env / hand-written loop over {len(ratios)} pairs: "
          f"{statistics.median(ratios):.3f} CPU time, {statistics.median(walls):.3f} wall time "
          "(target <= 1.05)")


if __name__ == "__main__":
    main()
