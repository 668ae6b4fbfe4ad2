"""The hooks a search loop passes to :meth:`nas_gym.agents.base.Agent.learn` (:class:`Callback`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nas_gym.errors import bad_value

from .episode import Episode

if TYPE_CHECKING:
    from .base import Agent


class Callback:
    """Hooks a search loop passes to :meth:`Agent.learn` (SB3's ``BaseCallback``, smaller).

    ``on_episode`` runs after every finished episode; returning ``False`` stops learning.
    ``on_update`` runs after every policy update: the state is consistent there, so that is where a
    search saves it (a resumed search replays the episodes after it from the evaluation store).
    """

    def on_episode(self, agent: Agent, episode: Episode) -> bool | None:
        return True

    def on_update(self, agent: Agent) -> None:
        return None


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[Episode], bool | None]) -> None:
        self.fn = fn

    def on_episode(self, agent: Agent, episode: Episode) -> bool | None:
        return self.fn(episode)


def as_callback(callback: Callback | Callable[[Episode], bool | None] | None) -> Callback:
    """``None`` -> a no-op, a function ``fn(episode) -> bool | None`` -> its ``on_episode``."""
    if callback is None:
        return Callback()
    if isinstance(callback, Callback):
        return callback
    if callable(callback):
        return _FunctionCallback(callback)
    raise bad_value("callback", callback, "None, a Callback or a function of the episode")

