"""ReinforceAgent with seed 001's controller (§3.2 eq. 1-2, §3.4 eq. 5): ``preset="seed001"``."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch
from torch import nn

from nas_gym.agents import make_agent
from nas_gym.agents.reinforce import ReinforceAgent


class WideScorer:
    """A cheap deterministic evaluator: the share of wide 3x3 layers, no training."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "wide-scorer-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        layers = architecture.layers
        return {"accuracy": sum((la.filters >= 16) + (la.kernel == 3) for la in layers)
                / (2 * len(layers))}


def seed001_env() -> gym.Env:
    return gym.make("MacroNAS-v0", preset="seed001", evaluator=WideScorer(), store=":memory:",
                    measure_latency=False)


def test_seed001_preset_is_the_papers_controller() -> None:
    """"For each value of each of the parameters we have a predefined random embedding of
    dimension n_h, the dimension of the hidden state of the RNN which we have taken as 35";
    ``h_t = ReLU(w_2 embedding(A_{t-1}) + w_3 h_{t-1} + b_2)`` (eq. 2); plain softmax (eq. 1)."""
    agent = make_agent("reinforce", preset="seed001", seed=0)
    assert (agent.preset, agent.cell, agent.hidden_size, agent.num_layers) == ("seed001", "rnn", 35, 1)
    assert (agent.use_baseline, agent.entropy_weight, agent.tanh_constant) == (False, 0.0, None)
    env = seed001_env()
    agent.learn(env, 2)
    c = agent.controller
    assert isinstance(c.core, nn.RNN) and c.core.nonlinearity == "relu"
    assert not hasattr(c, "lstm")
    embeddings = [e.weight.detach().clone() for e in c.embeddings]
    heads = [h.weight.detach().clone() for h in c.heads]
    agent.learn(env, 8)
    assert agent.updates >= 8 and agent.baseline is None  # no baseline, ever
    assert all(torch.equal(a, e.weight) for a, e in zip(embeddings, c.embeddings, strict=True))
    assert not all(torch.equal(a, h.weight) for a, h in zip(heads, c.heads, strict=True))
    # eq. 2 by hand for one step, and the batched RNN agrees with the per-token steps
    x = torch.randn(1, 35, generator=torch.Generator().manual_seed(0))
    h, _ = c.step(x, None)
    w = c.core
    assert torch.allclose(h, torch.relu(x @ w.weight_ih_l0.T + w.bias_ih_l0 + w.bias_hh_l0))
    h2, _ = c.step(x, [(h, h)])
    seq, _ = c.core(torch.cat([x, x]).unsqueeze(0))
    assert torch.allclose(seq[0], torch.cat([h, h2]), atol=1e-6)
    # explicit keywords override the preset; the default agent is unchanged
    assert make_agent("reinforce", preset="seed001", replay=0, hidden_size=8).replay == 0
    plain = make_agent("reinforce")
    assert (plain.cell, plain.use_baseline, plain.fixed_embeddings, plain.preset) == \
        ("lstm", True, False, None)


def test_no_baseline_is_plain_reinforce_eq5() -> None:
    """Eq. 5: ``grad J = sum_t grad log P(a_t | a_{1:t-1}) R`` - the update's gradient is
    ``-R * grad sum_t log p``, with no baseline subtracted."""
    agent = make_agent("reinforce", preset="seed001", replay=0, seed=1)
    env = seed001_env()
    agent.learn(env, 3)
    episode = agent.buffer[-1]
    assert episode.reward > 0
    before = make_agent("reinforce", preset="seed001", replay=0, seed=1)
    before.load_state_dict(copy.deepcopy(agent.state_dict()))
    agent._update([episode])
    logp, _ = before.evaluate_episodes([episode])
    (-(episode.reward * logp).sum()).backward()
    compared = 0
    for (name, p), q in zip(agent.controller.named_parameters(),
                            before.controller.parameters(), strict=True):
        if q.grad is None:  # unused here (the skip attention) or fixed (the embeddings)
            assert p.grad is None, name
        else:
            assert torch.allclose(p.grad, q.grad, atol=1e-7), name
            compared += 1
    assert compared >= 5  # start, the RNN's four tensors, the heads
    with_baseline = ReinforceAgent(cell="rnn", hidden_size=35, num_layers=1, seed=1,
                                   batch_episodes=1, entropy_weight=0.0)
    with_baseline.learn(env, 3)
    assert with_baseline.baseline is not None


def test_bad_controller_options_fail_early() -> None:
    with pytest.raises(ValueError, match="cell.*'gru'"):
        make_agent("reinforce", cell="gru")
    with pytest.raises(ValueError, match="preset.*'seed01'"):
        make_agent("reinforce", preset="seed01")
    with pytest.raises(ValueError, match="use_baseline"):
        make_agent("reinforce", use_baseline="no")
    with pytest.raises(ValueError, match="tanh_constant"):
        make_agent("reinforce", tanh_constant=0.0)
