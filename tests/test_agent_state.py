"""Agent states hold no pickled code (issue 19): saved as tensors and plain values, loaded with
``weights_only=True``; a malicious pickle in ``agent_state.pt`` is refused without running, and an
old-format state gets an error that says how to convert it."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import nas_gym.agents as agents
from nas_gym.agents.convert_state import convert
from nas_gym.agents.state_file import read_state
from nas_gym.errors import ConfigError
from nas_gym.experiments.search import run_search
from nas_gym.experiments.search_config import SearchConfig


class _RunsCode:
    """A pickle that runs code when loaded: it creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_agent_state_is_not_run_on_resume(tmp_path) -> None:
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    with open(out / "agent_state.pt", "wb") as f:
        pickle.dump({"agent": "random", "payload": _RunsCode(str(marker))}, f)
    config = SearchConfig(env="MacroNAS-v0", agent="random", episodes=1, out=str(out),
                          env_kwargs={"evaluator": "table", "max_layers": 2, "epochs": 1},
                          progress=False)
    with pytest.raises(ConfigError, match="convert_state"):
        run_search(config)
    assert not marker.exists()  # the payload never ran
    with pytest.raises(ConfigError, match="pickled objects"):
        agents.make_agent("random").load(out / "agent_state.pt")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_old_format_state_converts(name, tmp_path) -> None:
    """A state written the old way (a pickle with numpy objects / SB3's zip) is refused with the
    conversion command; converted, it loads safely and continues."""
    import io

    import gymnasium as gym

    env = gym.make("MacroNAS-v0", evaluator="table", max_layers=2, epochs=1, store=":memory:")
    agent = agents.make_agent(name, seed=2, **({"n_steps": 8, "batch_size": 8}
                                               if name == "ppo" else {})).learn(env, 2)
    state = agent.state_dict()
    if name == "ppo":  # what the old adapter saved: SB3's own zip
        buffer = io.BytesIO()
        agent.model.save(buffer)
        state["model"] = buffer.getvalue()
    path = tmp_path / "agent_state.pt"
    torch.save(state, path)  # the old format: a plain pickle of the state
    with pytest.raises(ConfigError, match="python -m nas_gym.agents.convert_state"):
        agents.make_agent(name).load(path)
    convert(path)
    assert (tmp_path / "agent_state.pt.pickle").is_file()
    again = agents.make_agent(name, **({"n_steps": 8, "batch_size": 8}
                                       if name == "ppo" else {})).load(path)
    assert again.num_episodes == 2 and again.best().reward == agent.best().reward
    again.learn(env, 3)
    assert read_state(path)["agent"] == name


def test_plain_state_refuses_objects(tmp_path) -> None:
    agent = agents.make_agent("random")
    agent.state_dict = lambda: {"agent": "random", "thing": object()}
    with pytest.raises(TypeError, match=r"state\['thing'\]"):
        agent.save(tmp_path / "s.pt")
