"""Every agent of the registry on every env, through the Gymnasium API only; REINFORCE learns."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_gym
from nas_gym.agents import AGENTS, Agent, make_agent
from nas_gym.agents.reinforce import ReinforceAgent, anchor_plan
from nas_gym.experiments.search import run_search
from nas_gym.experiments.search_config import SearchConfig
from nas_gym.experiments.search_log import read_evaluations
from nas_gym.store import EvaluationStore

DIGITS = (1, 8, 8), 10
#: cheap but real child training, per env (tiny training split, one epoch, small spaces).
FAST: dict[str, dict] = {
    "CellNAS-v0": {"max_blocks": 3},
    "MacroNAS-v0": {"max_layers": 3, "skip_connections": True},
    "ProgressiveNAS-v0": {"max_transforms": 2},
}
COMMON = {"dataset": "digits", "epochs": 1, "train_size": 32, "batch_size": 32,
          "measure_latency": False}
EXPECTED = {"reinforce", "random", "evolution", "ppo", "a2c", "dqn", "maskable_ppo",
            "recurrent_ppo"}


class HiddenFormula:
    """A cheap deterministic evaluator: a fixed formula of the architecture, no training."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "hidden-formula-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        if architecture.kind == "cell":
            blocks = architecture.normal.blocks
            score = sum((b.op1 == "sep_conv_3x3") + (b.op2 == "max_pool_3x3") + (b.in1 == 1)
                        for b in blocks) / (3 * len(blocks))
        else:  # macro: wide 3x3 layers
            layers = architecture.layers
            score = sum((la.filters >= 16) + (la.kernel == 3) for la in layers) / (2 * len(layers))
        return {"accuracy": float(score)}


class GymAPIOnly(gym.Wrapper):
    """What an agent may use: reset, step, spaces, info. Counts steps and illegal actions."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps, self.invalid, self.episodes = 0, 0, 0
        self._mask: np.ndarray | None = None

    @property
    def unwrapped(self):  # the bottom of the stack as far as agents can tell: no internals
        return self

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._mask = info["action_mask"]
        return obs, info

    def step(self, action):
        self.steps += 1
        self.invalid += int(not self._mask[int(action)])
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._mask = info["action_mask"]
        self.episodes += int(terminated or truncated)
        return obs, reward, terminated, truncated, info


def make_env(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**COMMON, **FAST.get(env_id, {}), **kwargs})


_SHARED: dict[str, gym.Env] = {}


def shared_env(env_id: str) -> gym.Env:
    """One env per id for the agent matrix: its store (and a transform env's trained start net)
    serve every agent, so an architecture two agents both try trains once."""
    if env_id not in _SHARED:
        _SHARED[env_id] = make_env(env_id, store=":memory:")
    return _SHARED[env_id]


def agent_ids() -> list:
    return [pytest.param(a, e, id=f"{a}-{e}") for e in nas_gym.ENV_IDS for a in AGENTS]


def test_registry_holds_every_agent() -> None:
    assert EXPECTED <= set(AGENTS)
    with pytest.raises(ValueError, match="agent='reinfroce'.*did you mean 'reinforce'"):
        make_agent("reinfroce")
    with pytest.raises(ValueError, match="batch_episodes"):
        make_agent("reinforce", batch_episodes=0)


@pytest.mark.parametrize(("name", "env_id"), agent_ids())
def test_agent_runs_64_steps_respects_masks_and_best_builds(name, env_id) -> None:
    agent = make_agent(name, seed=0)
    cls = type(agent)
    if cls.supported_envs is not None and env_id not in cls.supported_envs:
        pytest.skip(f"{name} does not drive {env_id}")
    env = GymAPIOnly(shared_env(env_id))
    seen = []
    episodes = 0
    while env.steps < 64:
        episodes += 1
        agent.learn(env, episodes, callback=seen.append)  # learn again: continues to the total
    assert agent.num_episodes == episodes == len(seen) == env.episodes
    assert [e.index for e in seen] == list(range(episodes))
    if agent.respects_masks:
        assert env.invalid == 0
    best = agent.best()
    assert best is not None and best.reward == max(e.reward for e in seen)
    model = nas_gym.build_model(best.architecture, *DIGITS)
    assert model(torch.zeros(2, *DIGITS[0])).shape == (2, DIGITS[1])
    action, _ = agent.predict(*env.reset(), deterministic=True)
    assert env.action_space.contains(action)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_state_round_trip(name, tmp_path) -> None:
    env = GymAPIOnly(make_env("CellNAS-v0", evaluator=HiddenFormula(), store=":memory:",
                              max_blocks=2))
    agent = make_agent(name, seed=1).learn(env, 4)
    agent.save(tmp_path / "state.pt")
    again = make_agent(name, seed=99).load(tmp_path / "state.pt")
    assert again.num_episodes == 4 and again.seed == 1
    assert again.best().architecture == agent.best().architecture
    again.learn(env, 6)
    assert again.num_episodes == 6


def test_reinforce_resumes_exactly(tmp_path) -> None:
    """A restored controller samples what the uninterrupted one samples (weights, optimizer,
    baseline, generators all restored)."""

    def run(stop_at: int | None) -> list:
        env = make_env("CellNAS-v0", evaluator=HiddenFormula(), store=":memory:", max_blocks=2)
        agent, arch = ReinforceAgent(seed=3, batch_episodes=2), []
        if stop_at is None:
            agent.learn(env, 8, callback=lambda e: arch.append(e.actions))
            return arch
        agent.learn(env, stop_at, callback=lambda e: arch.append(e.actions))
        agent.save(tmp_path / "s.pt")
        restored = ReinforceAgent(seed=3, batch_episodes=2).load(tmp_path / "s.pt")
        restored.learn(env, 8, callback=lambda e: arch.append(e.actions))
        return arch

    assert run(None) == run(4)


def test_controller_step_matches_the_batched_lstm() -> None:
    """Sampling runs the LSTM one token at a time; learning re-runs it batched: same function."""
    agent = ReinforceAgent(seed=0)
    agent._build(5)
    x = torch.randn(7, agent.hidden_size)
    batched, _ = agent.controller.lstm(x.unsqueeze(0))
    state, steps = None, []
    with torch.no_grad():
        for t in range(7):
            h, state = agent.controller.step(x[t: t + 1], state)
            steps.append(h[0])
    assert torch.allclose(torch.stack(steps), batched[0].detach(), atol=1e-6)


def test_anchor_plan_points_skips_at_earlier_layers() -> None:
    layer = ["filters", "kernel", "stride"]
    types = layer + ["stop"] + layer + ["skip", "stop"] + layer + ["skip", "skip"]
    assert anchor_plan(types, "skip") == [-1] * 7 + [0, -1, -1, -1, -1, 0, 4]
    assert anchor_plan(["op", "op"], "skip") == [-1, -1]


def test_reinforce_options_and_skip_attention() -> None:
    env = make_env("MacroNAS-v0", evaluator=HiddenFormula(), store=":memory:")
    agent = ReinforceAgent(seed=0, prob_floor=0.05, replay=10, reward_lookup=True,
                           batch_episodes=2)
    w_prev = None
    agent.learn(env, 2)
    w_prev = agent.controller.w_prev.weight.detach().clone()
    agent.learn(env, 12)
    assert "skip" in agent.controller.types
    assert not torch.equal(w_prev, agent.controller.w_prev.weight)  # the attention learns
    keys = [tuple(e.actions) for e in agent.buffer]
    assert len(keys) == len(set(keys))  # reward lookup: one stored pair per architecture
    mask = torch.tensor([[True, True, True, False]])
    p, logp = agent._log_probs(torch.tensor([[50.0, -50.0, -50.0, 0.0]]), mask)
    assert p[0, 3] == 0 and p[0, :3].min() >= 0.05 / (1 + 3 * 0.05) - 1e-6
    assert torch.isfinite(logp).all()


def test_evolution_ages_out_the_oldest_and_mutates_one_token() -> None:
    env = make_env("CellNAS-v0", evaluator=HiddenFormula(), store=":memory:", max_blocks=2)
    agent = make_agent("evolution", seed=0, population_size=6, sample_size=3)
    episodes = []
    agent.learn(env, 14, callback=episodes.append)
    assert len(agent.population) == 6
    assert [ind[0] for ind in agent.population] == [e.actions for e in episodes[-6:]]
    parents = [e.actions for e in episodes]
    for child in episodes[6:]:  # each child is one token away from an earlier individual
        assert any(_one_token_apart(child.actions, p) for p in parents[: child.index])


def _one_token_apart(a: list[int], b: list[int]) -> bool:
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    return first is not None and (len(a) != len(b) or a[first + 1:] == b[first + 1:]) \
        and a[:first] == b[:first]


def test_reinforce_beats_random_search_on_a_hidden_formula() -> None:
    """Learning is real: mean reward of the last 50 of 200 episodes, 5 seeds."""
    store = EvaluationStore(":memory:")  # shared: each architecture's costs are counted once
    last = {"random": [], "reinforce": []}
    for seed in range(5):
        for name in last:
            env = gym.make("CellNAS-v0", evaluator=HiddenFormula(), store=store,
                           measure_latency=False, min_blocks=1, max_blocks=1)
            episodes = []
            make_agent(name, seed=seed).learn(env, 200, callback=episodes.append)
            last[name].append(np.mean([e.reward for e in episodes[-50:]]))
    rl, rnd = np.array(last["reinforce"]), np.array(last["random"])
    assert rl.mean() > rnd.mean() + 0.04, (rl, rnd)
    assert (rl > rnd).sum() >= 4, (rl, rnd)


def test_a_third_party_agent_drives_the_search(tmp_path) -> None:
    """Any object with learn / best takes the place of our agents (the Gymnasium API only)."""

    class GreedyTokens:  # a third-party agent: keeps the best tokens, perturbs one at random
        def __init__(self, seed: int = 0) -> None:
            self.rng, self.best_tokens, self.best_reward = np.random.default_rng(seed), [], -1e9

        def learn(self, env, total_episodes, callback=None):
            for _ in range(total_episodes):
                obs, info = env.reset()
                tokens, total, done = [], 0.0, False
                flip = self.rng.integers(0, max(1, len(self.best_tokens)))
                while not done:
                    legal = np.flatnonzero(info["action_mask"])
                    t = len(tokens)
                    keep = t < len(self.best_tokens) and t != flip \
                        and self.best_tokens[t] in legal
                    a = self.best_tokens[t] if keep else int(self.rng.choice(legal))
                    obs, reward, term, trunc, info = env.step(a)
                    tokens.append(a)
                    total, done = total + reward, term or trunc
                if total > self.best_reward:
                    self.best_tokens, self.best_reward = tokens, total
            return self

        def best(self):
            return self.best_tokens

    config = SearchConfig(out=str(tmp_path / "run"), episodes=10, final_epochs=0, progress=False,
                          env_kwargs={"evaluator": HiddenFormula(), "measure_latency": False,
                                      "max_blocks": 2})
    result = run_search(config, agent=GreedyTokens())
    rows = read_evaluations(tmp_path / "run")
    assert len(rows) == result["episodes"] == 10
    assert result["best"]["reward"] == max(r["reward"] for r in rows)
    nas_gym.build_model(result["best"]["architecture"], *DIGITS)
    assert (tmp_path / "run" / "best_so_far.png").is_file()
    # its learn() takes one env: --workers 2 is refused before anything is made
    with pytest.raises(ValueError, match="workers=2.*GreedyTokens"):
        run_search(dataclasses.replace(config, out=str(tmp_path / "two"), workers=2),
                   agent=GreedyTokens())
    assert not (tmp_path / "two").exists()


def test_agent_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        Agent()  # type: ignore[abstract]
