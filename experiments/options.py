"""What ``nas-gym search`` and ``nas-gym bench`` read the same way: budgets, agent / env keywords,
agents by name or import path, and ``--tensorboard``.

- ``--budget``: ``params=30000,flops=1e6`` (upper bounds), ``params=1000:30000`` (lower:upper),
  a bare number, ``none``, or the same as a JSON / YAML mapping (``'{"params": 30000}'``);
- ``-A KEY=VALUE`` (repeatable) and ``--agent-kwargs JSON|K=V,...``: keywords of the agent (bench:
  of every agent; ``{"ppo": {"n_steps": 32}}`` targets one);
- ``-E KEY=VALUE`` and ``--env-kwargs``: any env keyword;
- ``--agent NAME | module:Class``: a registered agent or a class by import path (the current
  folder is importable, as with ``python -m``): the agent interface (``learn(env,
  total_episodes, callback)``) or a plain SB3 algorithm class, run through the SB3 adapter.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any

import yaml

from nas_gym.errors import bad_value


# -- values ---------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A scalar or structure typed on the command line: YAML (``3``, ``1e-3``, ``true``,
    ``[1, 2]``, ``{a: 1}``); anything else stays a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _is_float(value):  # YAML 1.1 reads "1e6" as a string
        return float(value)
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number(text: str, arg: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise bad_value(arg, text, "a number") from None
    return int(value) if value.is_integer() else value


def parse_budget(text: str, arg: str = "--budget") -> Any:
    """``params=30000,flops=1e6`` (upper bounds), ``params=1000:30000`` (lower:upper, either may
    be empty), a bare number (upper bound on the env's default metric), ``none``, or a JSON / YAML
    mapping ``{"params": 30000}``."""
    text = text.strip()
    if text.lower() in ("none", "null", ""):
        return None
    if text.startswith("{"):
        value = parse_value(text)
        if not isinstance(value, dict):
            raise bad_value(arg, text, "a mapping {metric: upper | [lower, upper]}")
        return value
    if "=" not in text:
        return number(text, arg)
    budget: dict[str, Any] = {}
    for part in text.split(","):
        metric, sep, bound = part.partition("=")
        if not sep or not metric.strip():
            raise bad_value(arg, text, "metric=upper[,metric=lower:upper...]")
        metric = metric.strip()
        if ":" in bound:
            lo, hi = bound.split(":", 1)
            budget[metric] = [number(lo, arg) if lo.strip() else None,
                              number(hi, arg) if hi.strip() else None]
        else:
            budget[metric] = number(bound, arg)
    return budget


def parse_mapping(text: str, arg: str) -> dict[str, Any]:
    """A JSON / YAML mapping (``'{"max_blocks": 4}'``) or ``key=value,key=value``."""
    value = parse_value(text) if text.lstrip().startswith("{") else None
    if isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise bad_value(arg, text, "a JSON mapping or key=value[,key=value...]")
        out[key.strip()] = parse_value(raw.strip())
    return out


def add_keyword_options(p: argparse.ArgumentParser, *, agent_kwargs: bool = True) -> None:
    """``-A KEY=VALUE`` (and ``--agent-kwargs`` unless the caller generates it) and
    ``--tensorboard DIR``, the same in every command."""
    if agent_kwargs:
        p.add_argument("--agent-kwargs", metavar="JSON|K=V,...", default=None,
                       help="agent keywords (bench: of every agent, or {agent: {...}} for one)")
    p.add_argument("-A", "--agent-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="any agent keyword (repeatable), e.g. -A batch_episodes=8")
    p.add_argument("--tensorboard", metavar="DIR", default=None, type=tensorboard_dir,
                   help="log every evaluation (reward, accuracy, costs, best so far, penalty), "
                        "the accuracy-vs-cost scatter and the config to a TensorBoard run in DIR "
                        "(needs the tensorboard package: pip install nas_gym[tensorboard])")


def agent_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """``--agent-kwargs`` then every ``-A``, later wins."""
    out: dict[str, Any] = {}
    if getattr(args, "agent_kwargs", None):
        out.update(parse_mapping(args.agent_kwargs, "--agent-kwargs"))
    for item in args.agent_kwarg:
        out.update(parse_mapping(item, "--agent-kwarg"))
    return out


def tensorboard_dir(text: str) -> str:
    """``--tensorboard DIR``: refused at parsing when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise argparse.ArgumentTypeError(
            f"--tensorboard {text}: the tensorboard package is not installed "
            "(pip install 'nas_gym[tensorboard]' or pip install tensorboard)") from None
    if not text:
        raise argparse.ArgumentTypeError("--tensorboard needs a folder")
    return text


# -- agents ---------------------------------------------------------------------------------------
def agent_class(spec: str, arg: str = "--agent") -> type:
    """The class of a registered agent name or a ``module:Class`` import path (the current folder
    is importable); raises ``ValueError`` naming the spec and what is accepted."""
    from nas_gym.agents import AGENTS

    if ":" not in spec:
        return AGENTS.get(spec, arg)
    module, _, name = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `python -m` puts it there; console scripts do not
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise bad_value(arg, spec, f"a registered agent or an importable 'module:Class' "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(cls, type) or not (_is_sb3(cls) or callable(getattr(cls, "learn", None))):
        raise bad_value(arg, spec, "a class with learn(env, total_episodes, callback) or an SB3 "
                        "algorithm class")
    return cls


def _is_sb3(cls: type) -> bool:
    from stable_baselines3.common.base_class import BaseAlgorithm

    return issubclass(cls, BaseAlgorithm)


def make_agent_spec(spec: str, seed: int, kwargs: dict[str, Any], arg: str = "--agent") -> Any:
    """The agent of ``spec`` (see :func:`agent_class`) built with ``seed`` and ``kwargs``."""
    cls = agent_class(spec, arg)
    if ":" not in spec:
        from nas_gym.agents import make_agent

        return make_agent(spec, seed=seed, **kwargs)
    if _is_sb3(cls):
        return _plain_sb3(cls, seed=seed, **kwargs)
    takes_seed = "seed" in inspect.signature(cls).parameters or any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    try:
        return cls(seed=seed, **kwargs) if takes_seed else cls(**kwargs)
    except TypeError as exc:
        raise bad_value(f"{arg} {spec} keywords", sorted(kwargs), f"what {cls.__name__} takes "
                        f"({exc})") from None


def _plain_sb3(cls: type, *, seed: int = 0, **algo_kwargs: Any) -> Any:
    """A third-party SB3 algorithm class through the project's SB3 adapter (policy: its MLP one,
    e.g. ``MlpLstmPolicy`` for RecurrentPPO, unless ``policy=`` is given)."""
    from nas_gym.agents.sb3 import SB3Agent, default_policy

    policy = algo_kwargs.pop("policy", None) or default_policy(cls)
    agent = SB3Agent("ppo", seed=seed, policy=policy)
    accepted = set(inspect.signature(cls).parameters) - {"policy", "env", "seed", "device",
                                                          "verbose"}
    for key in algo_kwargs:
        if key not in accepted:
            raise bad_value(f"agent {cls.__name__} keyword", key, sorted(accepted))
    agent.cls, agent.name, agent.algorithm = cls, cls.__name__, cls.__name__
    agent.algo_kwargs = dict(algo_kwargs)
    return agent


def check_agent_env(agent: Any, env_id: str, arg: str = "--agent") -> None:
    """Refuse an agent that declares it cannot drive ``env_id`` (``supported_envs``), before any
    output is written."""
    supported = getattr(agent, "supported_envs", None)
    if supported is not None and env_id not in supported:
        name = getattr(agent, "name", "") or type(agent).__name__
        raise bad_value(arg, name, f"an agent that drives {env_id} ({name} drives only "
                        f"{list(supported)})")
