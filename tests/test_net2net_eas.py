"""``Net2Net-v0(protocol="eas")`` driven by the EAS agent's shared sigmoid (EAS, seed 002): "the
Net2Wider actor simultaneously determines whether each layer should be extended ... by a shared
sigmoid classifier"; "5 steps of Net2Deeper action and 4 steps of Net2Wider action"."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_gym
from nas_gym.agents import make_agent
from nas_gym.arch.plain import CONV_WIDTHS, DIGITS_START_NET, FC_UNITS, ConvLayer, next_level

DIGITS = (1, 8, 8), 10


class KernelScorer:
    """A cheap deterministic evaluator (no training): the share of kernel-5 convs."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "kernel-scorer-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        convs = [la for la in architecture.layers if isinstance(la, ConvLayer)]
        return {"accuracy": 0.1 + 0.8 * sum(la.kernel == 5 for la in convs) / len(convs)}


def eas_env(**kwargs) -> gym.Env:
    kwargs = {"protocol": "eas", **kwargs}
    model = nas_gym.build_model(DIGITS_START_NET, *DIGITS)
    start = {"architecture": model.architecture.to_dict(), "state_dict": model.state_dict()}
    return gym.make("Net2Net-v0", start_net=start, evaluator=KernelScorer(),
                    dataset="digits", store=":memory:", measure_latency=False, **kwargs)


def width(layer) -> int | None:
    return getattr(layer, "filters", getattr(layer, "units", None))


def test_wider_step_widens_every_layer_the_shared_sigmoid_selects() -> None:
    env = eas_env()
    agent = make_agent("eas", seed=3)
    agent.learn(env, 2)  # builds the controller and moves it off its initial weights
    net = agent.net
    obs, info = env.reset()
    L = env.unwrapped.max_layers
    steps, wider, deeper = 0, [], 0
    while True:
        if info["token_type"] == "widen_layer":
            layer = info["layer"]
            if not wider or layer <= wider[-1]["layers"][-1]:  # a new wider step starts
                wider.append({"before": nas_gym.architecture_from_dict(info["architecture"]),
                              "layers": [], "chosen": []})
            # the shared sigmoid on the encoder state of layer l of the unchanged network
            slots = torch.as_tensor(np.asarray(obs[: 3 * L]).reshape(L, 3)[
                : len(wider[-1]["before"].layers)])
            x = sum(emb(slots[:, i]) for i, emb in enumerate(net.fields)).unsqueeze(0)
            with torch.no_grad():
                p_widen = torch.sigmoid(net.wider(net.encoder(x)[0][0, layer])).item()
            action, _ = agent.predict(obs, info)
            assert np.flatnonzero(info["action_mask"]).tolist() == [layer, L + 4 * (L + 1)]
            with torch.no_grad():
                logp = net.log_probs(np.asarray(obs), np.asarray(info["action_mask"], bool), L,
                                     np.ones(2, np.float32), agent.max_blocks, "widen_layer", layer)
            assert logp[layer].exp().item() == pytest.approx(p_widen, abs=1e-6)
            wider[-1]["layers"].append(layer)
            if action == layer:
                wider[-1]["chosen"].append(layer)
        else:
            assert info["token_type"] == "deepen" and not info["action_mask"][-1]  # no stop
            action, _ = agent.predict(obs, info)
            deeper += 1
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        if wider and info["token_type"] != "widen_layer" or (
                info["token_type"] == "widen_layer" and info["layer"] <= wider[-1]["layers"][-1]):
            if "after" not in wider[-1]:  # the wider step just ended: the network changed now
                wider[-1]["after"] = nas_gym.architecture_from_dict(info["architecture"])
        if terminated:
            break
    assert len(wider) == 4 and deeper == 5  # exactly 4 wider + 5 deeper steps
    assert steps == sum(len(w["layers"]) for w in wider) + 5
    assert any(w["chosen"] for w in wider) and any(
        set(w["chosen"]) != set(w["layers"]) for w in wider)  # both decisions occur
    for w in wider:
        for i, (old, new) in enumerate(zip(w["before"].layers, w["after"].layers, strict=True)):
            levels = CONV_WIDTHS if isinstance(old, ConvLayer) else FC_UNITS
            expected = next_level(width(old), levels) if i in w["chosen"] else width(old)
            assert width(new) == expected, (i, w["chosen"])
    assert [t["op"] for t in info["transforms"]].count("deepen") == 5


def test_eas_protocol_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="protocol.*'paper'"):
        eas_env(protocol="paper")
