"""Worker processes under the ecosystem's own vector envs (issue 19): Gymnasium's
``AsyncVectorEnv`` and ``make_vec(..., "async")`` and SB3's ``SubprocVecEnv`` finish episodes with
every start method Linux offers (no OpenMP pool inherited through fork), their workers die with a
killed parent, and ``torch_threads`` is validated and applied."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from torch import nn

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.costs import measure_latency
from nas_gym.errors import ConfigError
from nas_gym.processes import default_threads, use_threads

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "vector_snippet.py"
LIMIT = 240  # seconds per vector env: generous for a loaded 2-core machine (a hang was forever)


def _start(method: str, *kinds: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_NUM_THREADS", None)  # the user's default: torch's own thread count in the parent
    return subprocess.Popen([sys.executable, str(SCRIPT), method, *kinds], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie has exited (nobody reaped it yet)
    except FileNotFoundError:
        return False


def _lines(proc: subprocess.Popen, count: int, deadline: float) -> list[dict]:
    out = []
    while len(out) < count:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the script ended early: {proc.stderr.read()[-3000:]}")
        if line.startswith("{"):
            out.append(json.loads(line))
        assert time.monotonic() < deadline, "no result within the time limit"
    return out


def _finish(proc: subprocess.Popen, kinds: tuple[str, ...]) -> list[dict]:
    try:
        out, err = proc.communicate(timeout=LIMIT * len(kinds))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{kinds} did not finish within {LIMIT * len(kinds)} s: "
                             f"{err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_snippet_finishes_and_workers_die_with_their_killed_parent() -> None:
    """The issue's snippet (AsyncVectorEnv, the platform's start method: fork) plays to finished
    episodes; then, in the same script, two workers in the middle of a long training are orphaned
    by a SIGKILL of their parent and must exit on their own."""
    deadline = time.monotonic() + 2 * LIMIT
    proc = _start("fork", "gymnasium", "orphan")
    try:
        snippet, pids = _lines(proc, 2, deadline)
        assert snippet["statuses"] == ["ok", "ok"]
        workers = pids["workers"]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        time.sleep(1.0)  # both are training now
        proc.kill()
        proc.wait(timeout=30)
        end = time.monotonic() + 20
        while any(_alive(p) for p in workers) and time.monotonic() < end:
            time.sleep(0.2)
        survivors = [p for p in workers if _alive(p)]
    finally:
        proc.kill()
        proc.communicate()
    for p in survivors:  # never leave them behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert survivors == [], f"workers {survivors} outlived their killed parent"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_every_vector_env_with_every_start_method(method: str) -> None:
    """Gymnasium's AsyncVectorEnv (the snippet), gymnasium.make_vec(..., "async") and SB3's
    SubprocVecEnv each play a finished episode on every copy, within the time limit."""
    kinds = ("gymnasium", "make_vec", "sb3")
    results = _finish(_start(method, *kinds), kinds)
    assert [r["kind"] for r in results] == list(kinds)
    assert all(r["statuses"] == ["ok", "ok"] for r in results), results


def test_torch_threads_argument() -> None:
    with pytest.raises(ConfigError, match="torch_threads"):
        gym.make("CellNAS-v0", store=":memory:", torch_threads=0)
    env = gym.make("CellNAS-v0", store=":memory:", torch_threads=1, measure_latency=False)
    assert env.unwrapped.components.threads == 1
    assert gym.make("CellNAS-v0", store=":memory:").unwrapped.components.threads == \
        default_threads() >= 1


def test_torch_threads_above_one_in_a_forked_child_is_a_clear_error() -> None:
    """What would hang (more than one OpenMP thread after fork) is refused at gym.make, naming the
    start method and what to use instead."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the error text, never return into pytest
        try:
            os.close(read)
            try:
                gym.make("CellNAS-v0", store=":memory:", torch_threads=2)
                text = "no error"
            except ConfigError as exc:
                text = f"{exc} | threads={torch.get_num_threads()}"
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    assert "torch_threads=2" in text and "'fork'" in text and "spawn" in text
    assert text.endswith("threads=1")  # a forked child starts on one thread


def test_use_threads_restores_and_latency_is_single_threaded() -> None:
    before = torch.get_num_threads()
    with use_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        with use_threads(5):  # nested: the outer count holds
            assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before

    seen: set[int] = set()

    class Probe(nn.Module):
        def forward(self, x):
            seen.add(torch.get_num_threads())
            return x

    with use_threads(2):
        ms = measure_latency(Probe(), (1, 4, 4), "cpu", min_run_time=0.01)
    assert seen == {1} and ms > 0
