"""PNAS (agents/pnas.py, agents/surrogate.py): progressive growth on CellNAS and MacroNAS, masks and
hard budgets, exact resume, env copies, the surrogate's ranking and the search's quality."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import nas_gym
from nas_gym.agents import Callback, make_agent
from nas_gym.agents.pnas import PNASAgent, shortest_period
from nas_gym.agents.surrogate import Surrogate
from nas_gym.experiments.search import run_search
from nas_gym.experiments.search_config import SearchConfig
from nas_gym.experiments.search_log import read_evaluations
from nas_gym.store import EvaluationStore

DIGITS = (1, 8, 8), 10
MACRO = {"max_layers": 4, "penalty": "none", "measure_latency": False}


class LayerFormula:
    """A cheap hidden-formula evaluator for MacroNAS-v0: every layer with >= 16 filters or a 3x3
    kernel adds to the score, so deeper nets of good layers score more (max 1)."""

    needs_model = False

    def __repr__(self) -> str:  # what a search's config.json records
        return "LayerFormula()"

    def fingerprint(self) -> dict:
        return {"evaluator": "pnas-layer-formula-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        good = sum((la.filters >= 16) + (la.kernel == 3) for la in architecture.layers)
        layers = max(MACRO["max_layers"], len(architecture.layers))  # seed001: 5 layers
        return {"accuracy": good / (2 * layers)}


class Counted(gym.Wrapper):
    """The Gymnasium API only; counts finished episodes and actions the mask forbade."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.invalid, self.episodes = 0, 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._mask = info["action_mask"]
        return obs, info

    def step(self, action):
        self.invalid += int(not self._mask[int(action)])
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._mask = info["action_mask"]
        self.episodes += int(terminated or truncated)
        return obs, reward, terminated, truncated, info


def macro(store=":memory:", **kwargs) -> gym.Env:
    return gym.make("MacroNAS-v0", evaluator=LayerFormula(), store=store, **{**MACRO, **kwargs})


def small(**kwargs) -> PNASAgent:
    return PNASAgent(**{"beam_size": 4, "candidates": 16, "fit_steps": 5, **kwargs})


def test_pnas_grows_cells_on_cellnas_digits_and_best_builds() -> None:
    """Real children on digits: round 1 trains 1-block cells, round 2 their 2-block expansions."""
    env = Counted(gym.make("CellNAS-v0", dataset="digits", epochs=1, train_size=32,
                           batch_size=32, measure_latency=False, store=":memory:",
                           min_blocks=1, max_blocks=2))
    agent = PNASAgent(beam_size=2, candidates=4, fit_steps=2, seed=0)
    episodes: list = []
    agent.learn(env, 4, callback=episodes.append)
    assert (agent.mode, agent.unit) == ("count", 4)
    assert [len(e.actions) for e in episodes] == [5, 5, 9, 9]  # 1 + 4b tokens
    parents = [e.actions[1:] for e in episodes[:2]]
    assert all(e.actions[1:5] in parents for e in episodes[2:])  # a parent's block, plus one
    assert env.invalid == 0 and env.episodes == 4
    assert all(e.info["status"] == "ok" and 0 < e.accuracy <= 1 for e in episodes)
    best = agent.best()
    assert best.reward == max(e.reward for e in episodes)
    model = nas_gym.build_model(best.architecture, *DIGITS)
    assert model(torch.zeros(2, *DIGITS[0])).shape == (2, DIGITS[1])


def test_pnas_grows_layers_until_the_largest_then_reexpands() -> None:
    env = Counted(macro(max_layers=3))
    agent = small(beam_size=3, candidates=9)
    episodes: list = []
    agent.learn(env, 15, callback=episodes.append)
    layers = [len(e.architecture["layers"]) for e in episodes]
    assert agent.mode == "stop" and layers == [1] * 3 + [2] * 3 + [3] * 9
    assert env.invalid == 0 and env.episodes == 15
    keys = [tuple(e.actions) for e in episodes]
    assert len(set(keys)) == len(keys)  # never an architecture twice


def test_pnas_prefix_space_completes_with_the_lowest_legal_action() -> None:
    """seed001's fixed five layers: no size or stop token, a unit is one decision."""
    env = Counted(macro(preset="seed001", max_layers=5))
    agent = small(beam_size=2, candidates=4)
    episodes: list = []
    agent.learn(env, 6, callback=episodes.append)
    assert agent.mode == "prefix" and env.invalid == 0
    for r, size in enumerate((1, 2, 3)):
        for e in episodes[2 * r: 2 * r + 2]:
            assert len(e.actions) == 10 and e.actions[size:] == [0] * (10 - size)


def test_pnas_never_proposes_what_the_hard_budget_forbids() -> None:
    env = Counted(macro(hard_budget=True, budget={"params": 6000}, max_layers=3,
                        skip_connections=True))
    agent = small(beam_size=3, candidates=9)
    episodes: list = []
    agent.learn(env, 12, callback=episodes.append)
    assert env.invalid == 0
    assert max(len(e.architecture["layers"]) for e in episodes) >= 2  # it did grow
    assert all(e.costs["params"] <= 6000 for e in episodes)


def test_pnas_resumes_exactly_after_a_kill(tmp_path) -> None:
    """The search saves at every update; killed mid-round, a fresh agent loaded from the file
    plays the episodes the unbroken run plays."""
    whole: list = []
    small(seed=3).learn(macro(), 26, callback=lambda e: whole.append(e.actions))

    class Killed(Exception):
        pass

    class Checkpoint(Callback):
        def on_episode(self, agent, episode):
            if episode.index == 13:
                raise Killed  # dies after episode 13 finished, before its state was saved

        def on_update(self, agent):
            agent.save(tmp_path / "state.pt")

    with pytest.raises(Killed):
        small(seed=3).learn(macro(), 26, callback=Checkpoint())
    again = small(seed=99).load(tmp_path / "state.pt")
    assert again.num_episodes == 13 and again.pending  # mid-round
    rest: list = []
    again.learn(macro(), 26, callback=lambda e: rest.append(e.actions))
    assert rest == whole[13:]


def test_pnas_state_is_plain_values(tmp_path) -> None:
    agent = small().learn(macro(), 6)
    state = {k: v for k, v in agent.state_dict().items() if k not in ("best", "rng")}

    def plain(v) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, (str, int)) and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str, torch.Tensor))

    assert plain(state)
    torch.save(state, tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=True)["data"] == state["data"]


def test_pnas_env_copies_give_the_same_search() -> None:
    store = EvaluationStore(":memory:")
    one: list = []
    small(seed=1).learn(macro(store), 14, callback=lambda e: one.append(e.actions))
    two: list = []
    small(seed=1).learn([macro(store), macro(store)], 14, callback=lambda e: two.append(e.actions))
    assert one == two


def test_pnas_search_command_with_two_copies(tmp_path) -> None:
    """``nas-gym search --agent pnas --workers 2``: walks reset a copy without finishing its
    episode; the log still numbers the evaluations 0..n-1 in episode order."""
    config = SearchConfig(env="MacroNAS-v0", agent="pnas", episodes=10, workers=2,
                          backend="local", final_epochs=0, progress=False,
                          out=str(tmp_path / "run"),
                          agent_kwargs={"beam_size": 3, "candidates": 6, "fit_steps": 2},
                          env_kwargs={**MACRO, "evaluator": LayerFormula()})
    result = run_search(config)
    rows = read_evaluations(tmp_path / "run")
    assert [r["episode"] for r in rows] == list(range(10)) and result["episodes"] == 10
    agent = make_agent("pnas").load(tmp_path / "run" / "agent_state.pt")
    assert [r["actions"] for r in rows] == [d["actions"] for d in agent.data]
    resumed = run_search(dataclasses.replace(config, episodes=13))  # continues the same search
    assert resumed["episodes"] == 13


def test_surrogate_ranks_held_out_architectures_after_200_evaluations() -> None:
    store = EvaluationStore(":memory:")
    agent = PNASAgent(beam_size=25, candidates=75, fit_steps=10, seed=0)
    agent.learn(macro(store), 200)
    held_out: list = []
    make_agent("random", seed=7).learn(macro(store), 150, callback=held_out.append)
    seen = {tuple(d["actions"]) for d in agent.data}
    held_out = [e for e in held_out if tuple(e.actions) not in seen]
    pred = agent.surrogate.predict([(e.token_types, e.actions) for e in held_out])
    rho = spearmanr(pred, [e.reward for e in held_out]).statistic
    assert len(held_out) >= 80 and rho >= 0.7, (len(held_out), rho)


def test_pnas_beats_random_search_over_5_seeds() -> None:
    """Best score after 32 evaluations (4 PNAS rounds: 1 to 4 layers), seeds 0..4."""
    store = EvaluationStore(":memory:")
    best = {"pnas": [], "random": []}
    for seed in range(5):
        best["pnas"].append(PNASAgent(beam_size=8, candidates=32, fit_steps=5, seed=seed)
                            .learn(macro(store), 32).best().reward)
        best["random"].append(make_agent("random", seed=seed).learn(macro(store), 32)
                              .best().reward)
    pnas, rnd = np.array(best["pnas"]), np.array(best["random"])
    assert pnas.mean() > rnd.mean() + 0.1 and (pnas > rnd).sum() >= 4, (pnas, rnd)


def test_surrogate_members_train_on_four_folds_of_five() -> None:
    """Member m never sees fold m (samples i with i % 5 == m): shuffling the targets within fold
    0 (same mean and spread) leaves member 0 exactly as it was and changes the others."""
    rng = np.random.default_rng(0)
    seqs = [(["a", "b"] * 3, [int(x) for x in rng.integers(0, 4, 6)]) for _ in range(60)]
    y = np.array([float(sum(a)) for _, a in seqs])
    shuffled = y.copy()
    shuffled[0::5] = y[0::5][::-1]
    fits = []
    for targets in (y, shuffled):
        sur = Surrogate(4, steps=10, seed=0)
        sur.fit(seqs, list(targets))
        fits.append(sur.predict_members(seqs))
    assert np.array_equal(fits[0][0], fits[1][0])
    assert all(not np.allclose(fits[0][m], fits[1][m]) for m in range(1, 5))


def test_pnas_arguments_and_helpers() -> None:
    assert shortest_period(["in", "in", "op", "op"] * 3) == 4
    assert shortest_period(["f", "k"]) == 2 and shortest_period(["x", "y", "x"]) == 3
    with pytest.raises(ValueError, match="beam_size=0"):
        PNASAgent(beam_size=0)
    with pytest.raises(ValueError, match="candidates=4.*beam_size=8"):
        PNASAgent(candidates=4)
    with pytest.raises(ValueError, match="observation_space"):
        PNASAgent().learn(gym.make("CartPole-v1"), 1)
