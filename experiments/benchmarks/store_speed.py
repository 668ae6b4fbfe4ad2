"""How fast a known result comes back (the timing claims the tests used to assert, moved here so a
loaded machine cannot fail a test):

1. ``EvaluationStore.get`` of a stored key, on a SQLite file of 500 records (claim: median < 5 ms);
2. a ``CellNAS-v0`` episode's last step when the store answers it (claim: median of 5 < 5 ms);
3. a table lookup (``evaluator="table"``, the committed digits table) against training the same
   child once with the table's own training config (claim: >= 1,000x faster).

Each figure is printed with its claim; all three are measured in one run.

    python -m nas_gym.experiments.benchmarks.store_speed
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import nas_gym  # noqa: F401
from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.evaluators import TrainEvaluator
from nas_gym.store import EvaluationStore, evaluation_key

ARCH, FP = {"kind": "plain", "width": 8}, {"evaluator": "train", "epochs": 1}
FAST_CELL = {"train_size": 128, "epochs": 1, "min_blocks": 2, "max_blocks": 2, "channels": 4,
             "measure_latency": False}


def store_get_ms(folder: Path, n: int = 500) -> float:
    with EvaluationStore(folder / "store.sqlite") as store:
        keys = [evaluation_key(ARCH, FP, s) for s in range(n)]
        for s, key in enumerate(keys):
            store.put(key, {"accuracy": s / n, "status": "ok"}, architecture=ARCH, fingerprint=FP,
                      seed=s)
        times = []
        for key in keys[::10]:
            start = time.perf_counter()
            assert store.get(key) is not None
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def cell_store_hit_ms(folder: Path) -> float:
    env = gym.make("CellNAS-v0", store=str(folder / "cell.sqlite"), **FAST_CELL).unwrapped
    rng = np.random.default_rng(0)
    _, info = env.reset(seed=0)
    done = False
    while not done:
        _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
    tokens, times = env.tokens, []
    for _ in range(5):
        env.reset()
        for t in tokens[:-1]:
            env.step(t)
        start = time.perf_counter()
        *_, again = env.step(tokens[-1])
        times.append(time.perf_counter() - start)
        assert again["cache_hit"]
    return statistics.median(times) * 1e3


def table_vs_training(n: int = 2000) -> tuple[float, float]:
    env = gym.make("MacroNAS-v0", evaluator="table", store=":memory:", max_layers=2).unwrapped
    table_eval = env.components.evaluator
    arch = MacroArchitecture((MacroLayer(4, 3, 1, ()), MacroLayer(4, 5, 1, (0,))))
    trainer = TrainEvaluator(env.components.data, env.components.train_config)
    start = time.perf_counter()
    trainer.evaluate(arch, seed=0)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n):
        table_eval.evaluate(arch, seed=0)
    return train_s, (time.perf_counter() - start) / n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        get_ms = store_get_ms(Path(tmp))
        hit_ms = cell_store_hit_ms(Path(tmp))
    train_s, lookup_s = table_vs_training()
    print(f"store get of a stored key (500 records, median): {get_ms:.3f} ms  (claim < 5 ms)")
    print(f"CellNAS-v0 last step answered by the store (median of 5): {hit_ms:.3f} ms  "
          f"(claim < 5 ms)")
    print(f"table lookup {lookup_s * 1e6:.1f} us vs training the child {train_s:.2f} s: "
          f"{train_s / lookup_s:,.0f}x  (claim >= 1,000x)")


if __name__ == "__main__":
    main()
