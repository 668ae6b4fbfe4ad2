"""The public grammar of a token env: pure functions of a frozen state.

A token env (:class:`nas_gym.envs.base.TokenEnv`) holds one grammar and one state; ``step`` is
``state = grammar.apply(state, action)`` until ``grammar.done(state)``, then the env evaluates
``grammar.architecture(state)``. Everything that needs to look ahead - the hard budget's
completions (:mod:`nas_gym.envs.masking`), the table builder's enumeration (:mod:`nas_gym.table`),
an agent planning a sequence - uses only this API, never an env's internals, so it cannot drift
from what ``step`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol, runtime_checkable

import numpy as np

from ..arch.base import Architecture


@runtime_checkable
class TokenGrammar(Protocol):
    """A token grammar. States are immutable and hashable; no method changes the grammar."""

    #: size of the env's ``Discrete`` action space (every decision's actions are ``0..k-1``)
    n_actions: int

    def start(self) -> Hashable:
        """The empty sequence's state."""

    def token_type(self, state: Hashable) -> str:
        """The name of the decision the next action makes (``info["token_type"]``)."""

    def valid(self, state: Hashable) -> np.ndarray:
        """Boolean mask of ``n_actions``: the actions the grammar allows next (may be read-only)."""

    def apply(self, state: Hashable, action: int) -> Hashable:
        """The state after ``action`` (which :meth:`valid` allows)."""

    def done(self, state: Hashable) -> bool:
        """Whether ``state`` is a complete architecture."""

    def architecture(self, state: Hashable) -> Architecture:
        """The architecture a complete state describes."""


def rollout(grammar: TokenGrammar, state: Hashable,
            rule: Callable[[Hashable, np.ndarray], int]) -> Architecture:
    """The architecture ``grammar`` completes from ``state`` when every further action is
    ``rule(state, grammar.valid(state))``."""
    while not grammar.done(state):
        state = grammar.apply(state, int(rule(state, grammar.valid(state))))
    return grammar.architecture(state)


def enumerate_states(grammar: TokenGrammar, allowed: Callable[[Hashable], np.ndarray],
                     visit: Callable[[Hashable], None]) -> None:
    """Depth-first over every complete state reachable through ``allowed(state)`` (a mask no
    wider than ``grammar.valid``), calling ``visit`` on each in action order."""
    def walk(state: Hashable) -> None:
        if grammar.done(state):
            visit(state)
            return
        for a in np.flatnonzero(allowed(state)).tolist():
            walk(grammar.apply(state, a))

    walk(grammar.start())
