"""Per-evaluation framework overhead: what nas_gym adds around a child's training.

Three figures, measured side by side in one process (targets of issue 15 in brackets):

1. **Search trials** (<= 10 ms after the first): a ``--trials``-trial random search
   (``nas_gym.agents.random_search``) on digits with a fixed cheap child: ``MacroNAS-v0`` in the committed
   table's space (``max_layers=2``), one epoch of ``--train-size`` samples; then the same on
   ``CellNAS-v0`` (one block, ``channels=4``), whose module build (~170 torch modules, copies of
   cached prototypes: ``nas_gym.models.builder.fresh``) is most of the framework's time. Per
   trial: its wall time (the agent's decisions, ``reset``, the token steps, store lookup and
   write, key hashing, model build, costs, reward, info) minus the time spent inside the
   evaluator's ``evaluate`` (the child's training and validation) = the framework's time, in wall
   and CPU seconds; ``train_seconds`` alone is printed too.
2. **Table episodes of new architectures** (>= 2,000 / s): ``MacroNAS-v0`` with
   ``evaluator="table"`` on the committed table: random masked episodes with distinct
   architectures, replayed on a fresh env with an in-memory store (every one new to it), then
   once more (every one a store hit); medians of ``--table-repeats`` fresh envs, each timed block
   after a full garbage collection.
3. **Pre-training costs of a new cell** (<= 5 ms): ``CellNAS-v0`` defaults (latency not asked),
   the pipeline's costs of fresh random cells (closed form), beside the previous way (a built
   module counted by ``FlopCounterMode``).

    python -m nas_gym.experiments.benchmarks.eval_overhead [--trials 20] [--table-episodes 1000]
        [--table-repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_gym
import nas_gym.table
from nas_gym.agents.random_search import RandomSearch
from nas_gym.costs import flop_counter_costs
from nas_gym.envs.grammar import rollout


class Timed:
    """Wraps an evaluator and adds up the wall and CPU seconds spent inside its ``evaluate``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.wall, self.cpu, self.last = inner, 0.0, 0.0, 0.0
        self.needs_model = getattr(inner, "needs_model", True)

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()

    def evaluate(self, architecture: Any, *, seed: int, model: Any = None) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self.inner.evaluate(architecture, seed=seed, model=model)
        finally:
            self.last = time.perf_counter() - wall
            self.wall += self.last
            self.cpu += time.process_time() - cpu


#: the searched envs: a cheap child (MacroNAS-v0 with the committed table's space) and a cell
SEARCHES: dict[str, dict[str, Any]] = {
    "MacroNAS-v0": {"max_layers": 2},
    "CellNAS-v0": {"min_blocks": 1, "max_blocks": 1, "channels": 4},
}


def search_trials(env_id: str, trials: int, train_size: int, seed: int = 0
                  ) -> list[dict[str, float]]:
    """Per trial of a random search: wall and CPU seconds in all, and inside ``evaluate``."""
    env = gym.make(env_id, store=":memory:", epochs=1, train_size=train_size, seed=seed,
                   **SEARCHES[env_id])
    pipeline = env.unwrapped.components.pipeline
    timed = pipeline.evaluator = Timed(pipeline.evaluator)
    rows: list[dict[str, float]] = []
    last = [time.perf_counter(), time.process_time(), 0.0, 0.0]

    def on_episode(episode: Any) -> None:
        now = [time.perf_counter(), time.process_time(), timed.wall, timed.cpu]
        total, cpu = now[0] - last[0], now[1] - last[1]
        child, child_cpu = now[2] - last[2], now[3] - last[3]
        rows.append({"total": total, "child": child, "framework": total - child,
                     "framework_cpu": cpu - child_cpu,
                     "train": episode.info["costs"]["train_seconds"],
                     "cache_hit": float(episode.info["cache_hit"])})
        last[:] = [time.perf_counter(), time.process_time(), timed.wall, timed.cpu]

    RandomSearch(seed=seed).learn(env, trials, callback=on_episode)
    env.close()
    return rows


def table_episodes(episodes: int, seed: int = 0, repeats: int = 3) -> dict[str, float]:
    """Episodes per second (wall and CPU) on the committed table: ``episodes`` random episodes
    with distinct architectures are planned on one env, then replayed on a fresh env (every
    architecture new to its store), then replayed again there (every one a store hit); medians of
    ``repeats`` fresh envs. ``reset`` is seeded once (a seeded ``reset`` builds a new generator).
    A full garbage collection before each timed block: the garbage of the earlier phases (the
    searches, the planning) must not be collected inside it (one pass over the process's ~400k
    objects takes ~150 ms, a 1,000-episode block ~250 ms)."""
    table = nas_gym.table.Table()

    def make() -> gym.Env:
        return gym.make("MacroNAS-v0", evaluator="table", store=":memory:", **table.env_kwargs)

    rng, plan, seen = np.random.default_rng(seed), [], set()
    env = make()
    env.reset(seed=seed)
    for _ in range(20 * episodes):
        _, info = env.reset()
        actions, done = [], False
        while not done:
            valid = np.flatnonzero(info["action_mask"])
            actions.append(int(valid[rng.integers(len(valid))]))
            *_, done, _, info = env.step(actions[-1])
        if info["store_key"] not in seen:
            seen.add(info["store_key"])
            plan.append(actions)
        if len(plan) == episodes:
            break
    rates: dict[str, list[float]] = {}
    for _ in range(repeats):
        env = make()
        env.reset(seed=seed)
        for name in ("new", "hits"):
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            for actions in plan:
                env.reset()
                for a in actions:
                    *_, info = env.step(a)
                assert info["cache_hit"] is (name == "hits")
            rates.setdefault(f"{name}_per_s", []).append(len(plan) / (time.perf_counter() - wall))
            rates.setdefault(f"{name}_per_cpu_s", []).append(
                len(plan) / (time.process_time() - cpu))
    return {"episodes": len(plan), "table_size": len(table), "repeats": repeats,
            **{k: statistics.median(v) for k, v in rates.items()}}


def cell_costs(cells: int, seed: int = 0) -> dict[str, float]:
    env = gym.make("CellNAS-v0", store=":memory:").unwrapped
    pipeline = env.components.pipeline
    assert not pipeline.measure_latency  # the default reward does not read latency
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    archs = [rollout(env.grammar, env.grammar.start(),
                     lambda _, mask: int(rng.choice(np.flatnonzero(mask))))
             for _ in range(cells)]  # random cells of the env's grammar, not evaluated
    fast, slow = [], []
    for arch in archs:
        pipeline.clear_cost_cache()
        start = time.perf_counter()
        costs = pipeline.costs(arch)
        fast.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = flop_counter_costs(nas_gym.build_model(arch, env.input_shape, env.num_classes),
                                 env.input_shape)
        slow.append(time.perf_counter() - start)
        assert ref == costs, (ref, costs)
    return {"fast_ms": 1e3 * statistics.median(fast), "slow_ms": 1e3 * statistics.median(slow),
            "cells": len(archs)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--table-episodes", type=int, default=1000)
    ap.add_argument("--table-repeats", type=int, default=3)
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    for env_id in SEARCHES:
        rows = search_trials(env_id, args.trials, args.train_size)
        first, rest = rows[0], rows[1:]
        med = {k: 1e3 * statistics.median(r[k] for r in rest) for k in rest[0]}
        print(f"1. random search, {args.trials} trials on {env_id} {SEARCHES[env_id]} / digits, "
              f"1 epoch of {args.train_size} samples: first trial {1e3 * first['total']:.1f} ms "
              f"(framework {1e3 * first['framework']:.1f} ms); after it, median per trial: total "
              f"{med['total']:.1f} ms, inside evaluate {med['child']:.1f} ms (train_seconds "
              f"{med['train']:.1f} ms), framework {med['framework']:.2f} ms wall, "
              f"{med['framework_cpu']:.2f} ms CPU (target <= 10 ms); "
              f"{int(sum(r['cache_hit'] for r in rows))} store hits")

    tab = table_episodes(args.table_episodes, repeats=args.table_repeats)
    print(f"2. table episodes (MacroNAS-v0, committed table of {tab['table_size']} "
          f"architectures), {tab['episodes']} distinct architectures, median of "
          f"{tab['repeats']} fresh envs: new to the store "
          f"{tab['new_per_s']:,.0f} / s wall, {tab['new_per_cpu_s']:,.0f} / CPU s (target "
          f">= 2,000 / s); the same again, store hits: {tab['hits_per_s']:,.0f} / s wall, "
          f"{tab['hits_per_cpu_s']:,.0f} / CPU s")

    cc = cell_costs(args.cells)
    print(f"3. pre-training costs of a new CellNAS-v0 cell (defaults, latency not asked; median "
          f"of {cc['cells']}): {cc['fast_ms']:.2f} ms (target <= 5 ms); a built module counted "
          f"by FlopCounterMode: {cc['slow_ms']:.1f} ms ({cc['slow_ms'] / cc['fast_ms']:.0f}x)")


if __name__ == "__main__":
    main()
