"""The second RL library: TorchRL's GymEnv, ProbabilisticActor and MaskedCategorical drive
CellNAS-v0 (real child training, tiny size) through the public API only."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

# a test extra (pip install -e ".[test]"); found, not imported: see SCRIPT
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchrl") is None,
                                reason="torchrl is not installed")


ROOT = Path(__file__).resolve().parents[1]
# in its own interpreter: importing torchrl sets the process-wide start method to "spawn", which
# would change how every later test's AsyncVectorEnv starts its workers
SCRIPT = """
import json
from nas_gym.experiments.examples.torchrl_cellnas import main
result = main(["--episodes", "4", "--epochs", "1", "--train-size", "64", "--max-blocks", "2",
               "--budget", "20000"])
print(json.dumps(result, default=float))
"""


def test_torchrl_masked_reinforce_searches_cellnas():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=600).stdout.strip().split("\n")
    result = json.loads(out[-1])
    rewards, best = result["rewards"], result["best"]
    assert len(rewards) == 4 and all(math.isfinite(r) for r in rewards)
    assert best["reward"] == max(rewards)
    assert best["invalid_actions"] == 0  # the masked distribution never needs the env's remap
    blocks = 2 + best["tokens"][0]  # min_blocks + the first token
    assert len(best["tokens"]) == 1 + 4 * blocks
    assert 0 < best["accuracy"] <= 1 and best["params"] > 0
    assert best["reward"] == pytest.approx(best["accuracy"] - best["penalty"], abs=1e-5)
    assert any("torchrl REINFORCE on CellNAS-v0: best reward" in line for line in out)
