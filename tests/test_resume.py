"""A search killed mid-way resumes from the evaluation store without retraining anything it had
finished (SPEC §5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

SEARCH = r"""
import json, sys
import gymnasium as gym
import numpy as np
import nas_gym

env = gym.make("CellNAS-v0", store=sys.argv[1], epochs=1, train_size=300, max_blocks=3,
               measure_latency=False)
rng = np.random.default_rng(0)  # the same architecture sequence on every start
for episode in range(int(sys.argv[2])):
    obs, info = env.reset(seed=episode)
    while True:
        obs, reward, terminated, truncated, info = env.step(
            int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if terminated:
            break
    print(json.dumps({"key": info["store_key"], "cache_hit": info["cache_hit"],
                      "reward": reward}), flush=True)
"""


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_killed_search_resumes_without_retraining(tmp_path) -> None:
    store, n = str(tmp_path / "search.sqlite"), 8
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", SEARCH, store, str(n)], env=env,
                             stdout=subprocess.PIPE, text=True)
    done: list[dict] = []
    deadline = time.monotonic() + 240
    while len(done) < 3 and time.monotonic() < deadline:
        line = first.stdout.readline()
        if line.startswith("{"):
            done.append(json.loads(line))
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(done) >= 3, "the first run never finished 3 evaluations"

    second = subprocess.run([sys.executable, "-c", SEARCH, store, str(n)], env=env,
                            capture_output=True, text=True, timeout=600, check=True)
    resumed = _lines(second.stdout)
    assert len(resumed) == n
    for before, after in zip(done, resumed, strict=False):
        assert after["key"] == before["key"] and after["cache_hit"]
        assert after["reward"] == before["reward"]
    trained = Counter(r["key"] for r in done + resumed if not r["cache_hit"])
    assert trained and max(trained.values()) == 1, trained
