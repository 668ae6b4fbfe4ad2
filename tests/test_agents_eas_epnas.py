"""The EAS meta-controller and the EPNAS policy: they run, learn, resume, keep function
preservation (EAS) and drive ``nas-gym search``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_gym
from nas_gym.agents import make_agent
from nas_gym.agents.eas import EASAgent, deepen_code
from nas_gym.agents.epnas import EPNASAgent, progressive_layout
from nas_gym.agents.state_file import read_state
from nas_gym.arch.plain import DIGITS_START_NET
from nas_gym.experiments.search_log import read_evaluations
from nas_gym.lineage import model_from_checkpoint, stage_checkpoint
from nas_gym.store import EvaluationStore

DIGITS = (1, 8, 8), 10
TINY = {"dataset": "digits", "epochs": 1, "train_size": 32, "batch_size": 32,
        "measure_latency": False, "store": ":memory:"}


class HiddenFormula:
    """A cheap deterministic evaluator: a fixed hidden scoring of the architecture, no training.
    Plain nets score kernel-5 convs; EPNAS layer nets score plain convs of width 5."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "hidden-formula-eas-epnas-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        layers = architecture.layers
        if architecture.kind == "plain":
            k5 = sum(getattr(la, "kernel", 0) == 5 for la in layers)
            return {"accuracy": 0.1 + 0.8 * min(k5, 2) / 2}
        score = sum((la.type == "conv2d") + (la.filter_width == 5) for la in layers)
        return {"accuracy": 0.9 * score / (2 * len(layers))}


def trained_start() -> dict:
    """A start checkpoint with (untrained, He-initialised) weights: no start-net training."""
    model = nas_gym.build_model(DIGITS_START_NET, *DIGITS)
    return {"architecture": model.architecture.to_dict(), "state_dict": model.state_dict()}


def net2net(**kwargs) -> gym.Env:
    return gym.make("Net2Net-v0", **{**TINY, "start_net": trained_start(), **kwargs})


def progressive(**kwargs) -> gym.Env:
    return gym.make("ProgressiveNAS-v0", **{**TINY, **kwargs})


# -- the real thing, tiny ----------------------------------------------------------------------------
def test_eas_three_updates_with_real_training_and_best_builds() -> None:
    env = net2net(max_deeper=1, max_wider=1)
    agent = make_agent("eas", seed=0, batch_episodes=2)
    assert isinstance(agent, EASAgent)
    seen = []
    agent.learn(env, 6, callback=seen.append)
    assert agent.updates == 3 and len(seen) == 6
    best = agent.best()
    assert best.reward == max(e.reward for e in seen) and 0 <= best.accuracy <= 1
    model = nas_gym.build_model(best.architecture, *DIGITS)
    assert model(torch.zeros(2, *DIGITS[0])).shape == (2, DIGITS[1])


def test_epnas_three_updates_with_real_training_and_best_builds() -> None:
    env = progressive(max_transforms=2)
    agent = make_agent("epnas", seed=0, branches=2, top_k=2)
    assert isinstance(agent, EPNASAgent)
    seen = []
    agent.learn(env, 6, callback=seen.append)
    assert agent.updates == 3 and len(seen) == 6 and len(agent.starts) == 2
    # the top-k of the last round are the best networks it produced
    assert all(s["kind"] == "epnas_layer" for s in agent.starts)
    best = agent.best()
    model = nas_gym.build_model(best.architecture, *DIGITS)
    assert model(torch.zeros(2, *DIGITS[0])).shape == (2, DIGITS[1])


# -- learning is real -----------------------------------------------------------------------------
def _learning(make_env, name: str, kwargs: dict, episodes: int, last: int) -> None:
    env = make_env()
    means = {name: [], "random": []}
    for seed in range(5):
        for agent_name in means:
            episodes_seen = []
            make_agent(agent_name, seed=seed, **(kwargs if agent_name == name else {})).learn(
                env, episodes, callback=episodes_seen.append)
            means[agent_name].append(np.mean([e.reward for e in episodes_seen[-last:]]))
    ours, rnd = np.array(means[name]), np.array(means["random"])
    assert ours.mean() > rnd.mean() * 1.5, (ours, rnd)
    assert (ours > rnd).sum() >= 4, (ours, rnd)


def test_eas_beats_random_search_on_a_hidden_formula() -> None:
    """Mean reward of the last 2 updates (10 networks) of 6, 5 seeds, vs random's last 10."""
    _learning(lambda: net2net(evaluator=HiddenFormula(), max_deeper=2, max_wider=2), "eas",
              {"lr": 0.02, "batch_episodes": 5}, 30, 10)


def test_epnas_beats_random_search_on_a_hidden_formula() -> None:
    """Mean return of the last 2 rounds (8 episodes) of 4, 5 seeds, vs random's last 8."""
    store = EvaluationStore(":memory:")
    _learning(lambda: progressive(evaluator=HiddenFormula(), store=store, max_transforms=3),
              "epnas", {"lr": 0.01, "branches": 4, "top_k": 4}, 16, 8)


# -- EAS: the mapping and function preservation ----------------------------------------------------
def test_deepen_codes_follow_the_blocks_of_the_observation() -> None:
    L = 6  # conv, pool, conv, fc: conv inserts at p = 1..3, fc inserts at p = 3, 4
    types = np.array([1, 2, 1, 4, 0, 0])
    assert deepen_code(L + 3 * 1 + 2, L, types, 8) == (0, 1, 2)  # after the first conv, k=5
    assert deepen_code(L + 3 * 2 + 0, L, types, 8) == (1, 0, 0)  # right after the pool
    assert deepen_code(L + 3 * 3 + 1, L, types, 8) == (1, 1, 1)
    assert deepen_code(L + 3 * (L + 1) + 3, L, types, 8) == (7, 0, 3)  # the fc block
    assert deepen_code(L + 3 * (L + 1) + 4, L, types, 8) == (7, 1, 3)


def test_eas_distribution_covers_exactly_the_legal_actions() -> None:
    env = net2net(evaluator=HiddenFormula())
    agent = EASAgent(seed=0).learn(env, 1)
    obs, info = env.reset()
    mask = info["action_mask"].astype(bool)
    L = (len(obs) - 2) // 3
    with torch.no_grad():
        logp = agent.net.log_probs(obs, mask, L, np.ones(2, dtype=np.float32), agent.max_blocks)
    p = logp.exp().numpy()
    assert abs(p.sum() - 1) < 1e-5 and (p[~mask] == 0).all() and (p[mask] > 0).all()


def test_eas_transforms_preserve_the_function_end_to_end() -> None:
    store = EvaluationStore(":memory:")
    start = trained_start()
    env = net2net(evaluator=HiddenFormula(), store=store, start_net=start)
    agent = EASAgent(seed=1, batch_episodes=3)
    episodes = []
    agent.learn(env, 3, callback=episodes.append)
    x = torch.randn(32, *DIGITS[0], generator=torch.Generator().manual_seed(0))
    before = model_from_checkpoint(start, *DIGITS).eval()
    checked = 0
    for episode in episodes:
        if not episode.info["transforms"]:
            continue
        after = model_from_checkpoint(stage_checkpoint(store, episode.info["store_key"]),
                                      *DIGITS).eval()
        assert after.architecture.to_dict() == episode.architecture
        with torch.no_grad():
            assert (after(x) - before(x)).abs().max() < 1e-4
        checked += 1
    assert checked >= 1


# -- state ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "make_env", "kwargs"), [
    ("eas", lambda: net2net(evaluator=HiddenFormula(), max_deeper=2, max_wider=2),
     {"batch_episodes": 2}),
    ("epnas", lambda: progressive(evaluator=HiddenFormula(), max_transforms=2),
     {"branches": 2, "top_k": 2}),
])
def test_resumes_exactly(name, make_env, kwargs, tmp_path) -> None:
    """A restored agent plays what the uninterrupted one plays (weights, optimizer, baseline,
    generators and the EPNAS top-k starts all restored)."""
    env = make_env()

    def run(stop_at: int | None) -> list:
        seen: list = []
        agent = make_agent(name, seed=3, **kwargs)
        if stop_at is not None:
            agent.learn(env, stop_at, callback=lambda e: seen.append(e.actions))
            agent.save(tmp_path / "s.pt")
            agent = make_agent(name, seed=3, **kwargs).load(tmp_path / "s.pt")
        agent.learn(env, 8, callback=lambda e: seen.append(e.actions))
        return seen

    assert run(None) == run(4)


def test_progressive_layout_is_read_from_the_public_space() -> None:
    env = progressive(max_transforms=2)
    slots, width, k = progressive_layout(env.observation_space.nvec)
    assert (slots, width) == (20, 7) and k == len(env.observation_space.nvec) - 142


# -- the CLI ----------------------------------------------------------------------------------------
NAS_GYM = shutil.which("nas-gym") or str(Path(sys.executable).parent / "nas-gym")
CLI_TINY = ["--epochs", "1", "--train-size", "32", "--batch-size", "32", "-E",
            "measure_latency=false", "--no-progress", "--final-epochs", "1"]


@pytest.mark.parametrize(("env_id", "agent", "extra"), [
    ("Net2Net-v0", "eas", ["-E", "start_epochs=1", "-E", "max_deeper=1", "-E", "max_wider=1",
                           "-A", "batch_episodes=2"]),
    ("ProgressiveNAS-v0", "epnas", ["-E", "max_transforms=1", "-A", "branches=2"]),
])
def test_cli_search_writes_every_output(env_id, agent, extra, tmp_path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([NAS_GYM, "search", "--env", env_id, "--agent", agent, "--episodes",
                           "4", "--out", str(out), *CLI_TINY, *extra], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_evaluations(out)
    assert [r["episode"] for r in rows] == [0, 1, 2, 3]
    assert all({"reward", "accuracy", "costs", "architecture", "store_key"} <= set(r)
               for r in rows)
    best = json.loads((out / "best.json").read_text())
    assert best["best"]["reward"] == max(r["reward"] for r in rows)
    assert 0 <= best["final"]["test_accuracy"] <= 1
    assert (out / "agent_state.pt").is_file() and (out / "best_so_far.png").is_file()
    state = read_state(out / "agent_state.pt")  # weights_only: no pickled code
    assert state["agent"] == agent and state["num_episodes"] == 4


@pytest.mark.parametrize("name, make_env, kwargs", [
    ("eas", lambda **kw: net2net(max_deeper=1, max_wider=1, **kw), {"batch_episodes": 2}),
    ("epnas", lambda **kw: progressive(max_transforms=2, start_size=2, **kw),
     {"branches": 2, "top_k": 2})], ids=["eas", "epnas"])
def test_batch_on_two_copies_is_the_same_search(name, make_env, kwargs, tmp_path) -> None:
    """EAS's networks of an update and EPNAS's branches played on two env copies, their children
    trained at the same time in two worker processes: the same decisions, networks and rewards
    as one env playing them in turn (episode seeds, not timing, decide)."""
    sequential: list = []
    make_agent(name, seed=0, **kwargs).learn(make_env(), 4, callback=sequential.append)
    store = str(tmp_path / "copies.sqlite")
    copies = [make_env(store=store, evaluator_backend="process") for _ in range(2)]
    try:
        concurrent: list = []
        make_agent(name, seed=0, **kwargs).learn(copies, 4, callback=concurrent.append)
    finally:
        for env in copies:
            env.close()
    assert [(e.actions, e.architecture, e.reward) for e in concurrent] == \
        [(e.actions, e.architecture, e.reward) for e in sequential]
    workers = {EvaluationStore(store).get(e.info["store_key"])["extra"]["worker"]
               for e in concurrent}
    assert len(workers) == 2  # each copy's children trained in its own worker process
