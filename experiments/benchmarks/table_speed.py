"""Table-mode episodes per second on one core (target >= 2,000 NAS-Bench-Macro episodes/s, cost
lookup included), side by side with the raw JSON lookup they wrap.

(a) ``gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table")`` with the default
bench's budget (params <= 1M, B-ENAS penalty) and an in-memory store: ``reset`` + 8 ``step`` calls
per episode, the terminal ``info`` carrying accuracy, costs (params, FLOPs, memory from the table:
no module built, no latency measured), penalty, reward and store key; a fresh env (empty store) per
block, so most episodes are new architectures; (b) the bare lookup a hand-written benchmark would
do: ``json[key]["test_acc"][run]``, ``["params"]``, ``["flops"]``. Blocks of (a) and (b) alternate
in one process (``--pairs``) so machine noise hits both; prints medians of process-CPU rates.

    python -m nas_gym.experiments.benchmarks.table_speed [--pairs 5] [--episodes 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import nas_gym  # noqa: F401
from nas_gym.table import table_path


def env_block(actions: np.ndarray) -> float:
    """Episodes per CPU second of the table env over ``actions`` ([episodes, 8])."""
    env = gym.make("MacroNAS-v0", preset="nas_bench_macro", evaluator="table", seed=0,
                   budget={"params": 1_000_000}, penalty="benas", store=":memory:",
                   evaluator_kwargs={"noise": "sample"})
    env.reset(seed=0)
    start = time.process_time()
    for seq in actions.tolist():
        env.reset()
        for a in seq:
            _, _, _, _, info = env.step(a)
        assert info["costs"]["params"] > 0
    seconds = time.process_time() - start
    env.close()
    return len(actions) / seconds


def raw_block(published: dict, keys: list[str], runs: np.ndarray) -> float:
    """Lookups per CPU second of the raw JSON dict (accuracy of one run, params, FLOPs)."""
    start = time.process_time()
    total = 0.0
    for _ in range(20):  # one pass is too short to time
        for key, run in zip(keys, runs.tolist(), strict=True):
            rec = published[key]
            total += rec["test_acc"][run] + rec["params"] + rec["flops"]
    return 20 * len(keys) / (time.process_time() - start)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--episodes", type=int, default=2000, help="episodes per env block")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    published = json.loads(table_path("nas-bench-macro").read_text())
    rng = np.random.default_rng(0)
    env_block(rng.integers(3, size=(200, 8)))  # warm-up: the table loads once per process
    env_rates, raw_rates = [], []
    for _ in range(args.pairs):
        actions = rng.integers(3, size=(args.episodes, 8))
        keys = ["".join(map(str, seq)) for seq in actions.tolist()]
        env_rates.append(env_block(actions))
        raw_rates.append(raw_block(published, keys, rng.integers(3, size=len(keys))))
    env_rate, raw_rate = statistics.median(env_rates), statistics.median(raw_rates)
    result = {"env_episodes_per_s": env_rate, "raw_lookups_per_s": raw_rate,
              "raw_over_env": raw_rate / env_rate, "pairs": args.pairs,
              "env_rates": env_rates, "raw_rates": raw_rates}
    print(f"NAS-Bench-Macro table episodes (reset + 8 steps, costs, reward, store): "
          f"{env_rate:,.0f} /s per CPU core (median of {args.pairs}; "
          f"{min(env_rates):,.0f}-{max(env_rates):,.0f}); raw JSON lookup: {raw_rate:,.0f} /s "
          f"({raw_rate / env_rate:,.0f}x)")
    return result


if __name__ == "__main__":
    main()
