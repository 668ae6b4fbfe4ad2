"""Search agents (SPEC §4). Every agent implements :class:`nas_gym.agents.base.Agent` and reaches envs only
through the Gymnasium API, so they are interchangeable with each other and with third-party ones.

``AGENTS`` maps a name to the agent class; :func:`make_agent` is the whole factory::

    agent = make_agent("reinforce", seed=0, batch_episodes=4)
    agent.learn(env, total_episodes=100)
    agent.best().architecture
"""

from __future__ import annotations

import inspect
from typing import Any

from nas_gym.errors import bad_value
from nas_gym.registry import Registry

from .base import Agent
from .callbacks import Callback
from .eas import EASAgent
from .episode import Episode
from .epnas import EPNASAgent
from .evolution import RegularizedEvolution
from .pnas import PNASAgent
from .random_search import RandomSearch
from .reinforce import ReinforceAgent
from .sb3 import A2CAgent, DQNAgent, MaskablePPOAgent, PPOAgent, RecurrentPPOAgent, SB3Agent

AGENTS: Registry[type[Agent]] = Registry("agent")
AGENTS.register("reinforce", ReinforceAgent)
AGENTS.register("random", RandomSearch)
AGENTS.register("evolution", RegularizedEvolution)
AGENTS.register("ppo", PPOAgent)
AGENTS.register("a2c", A2CAgent)
AGENTS.register("dqn", DQNAgent)
AGENTS.register("maskable_ppo", MaskablePPOAgent)
AGENTS.register("recurrent_ppo", RecurrentPPOAgent)
AGENTS.register("eas", EASAgent)
AGENTS.register("epnas", EPNASAgent)
AGENTS.register("pnas", PNASAgent)


def make_agent(name: str, **kwargs: Any) -> Agent:
    """The agent registered as ``name``, built with ``kwargs`` (its keyword-only arguments).
    ``preset=NAME`` of an agent with a ``PRESETS`` table starts from that option set; the other
    keywords override it."""
    cls = AGENTS.get(name, "agent")
    presets = getattr(cls, "PRESETS", None)
    if presets is not None and kwargs.get("preset") is not None:
        if kwargs["preset"] not in presets:
            raise bad_value("preset", kwargs["preset"], sorted(presets))
        agent = make_agent(name, **{**presets[kwargs["preset"]],
                                    **{k: v for k, v in kwargs.items() if k != "preset"}})
        agent.preset = kwargs["preset"]
        return agent
    accepted = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        for key in kwargs:
            if key not in accepted:
                raise bad_value(f"agent {name!r} keyword", key,
                                [k for k, p in accepted.items() if p.kind is p.KEYWORD_ONLY])
    return cls(**kwargs)


__all__ = ["AGENTS", "A2CAgent", "Agent", "Callback", "DQNAgent", "Episode", "MaskablePPOAgent",
           "PNASAgent", "PPOAgent", "RandomSearch", "RecurrentPPOAgent", "RegularizedEvolution",
           "ReinforceAgent", "SB3Agent", "make_agent"]
