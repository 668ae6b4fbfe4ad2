"""Two separate processes (not vector env copies) searching into one store file at the same time
lose no evaluation and never fail with "database is locked" (issue 19): this test's process and
a second Python process each play episodes on their own env over the same SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.store import EvaluationStore

ROOT = Path(__file__).resolve().parents[1]
CHEAP = {"evaluator": "table", "max_layers": 2, "epochs": 1, "measure_latency": False}
EPISODES = 150


def search(path: str, seed: int, ready: str, other: str) -> list[list]:
    """Open the store (both processes at once), wait for the other, then play ``EPISODES``
    random episodes; the (key, accuracy) of each."""
    env = gym.make("MacroNAS-v0", store=path, seed=0, **CHEAP)
    Path(ready).touch()
    end = time.monotonic() + 300
    while not os.path.exists(other) and time.monotonic() < end:
        time.sleep(0.01)
    rng, out = np.random.default_rng(seed), []
    for episode in range(EPISODES):
        _, info = env.reset(seed=seed * 100_000 + episode)
        while True:
            _, _, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
            if term or trunc:
                break
        out.append([info["store_key"], info["accuracy"]])
    env.close()
    return out


def test_two_processes_share_one_store_file(tmp_path) -> None:
    path, ready = str(tmp_path / "evals.sqlite"), [str(tmp_path / f"ready{i}") for i in (0, 1)]
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from test_store_processes import search; "
            "print(json.dumps(search(sys.argv[2], 2, sys.argv[3], sys.argv[4])))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "tests"), path, ready[1],
                             ready[0]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        mine = search(path, 1, ready[0], ready[1])
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "locked" not in err, err[-3000:]
    theirs = json.loads(out.splitlines()[-1])
    assert len(mine) == len(theirs) == EPISODES
    store = EvaluationStore(path)
    reported = {key: acc for key, acc in mine + theirs}
    assert len(reported) > 50  # many distinct architectures, written from both sides
    for key, acc in mine + theirs:  # every evaluation either process saw is in the file
        assert store.get(key)["accuracy"] == acc
    assert len(store) == len(reported) and store.in_flight() == []
