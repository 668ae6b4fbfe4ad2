"""The record of one finished episode (:class:`Episode`): what an agent learns from, what
:meth:`nas_gym.agents.base.Agent.best` returns and what ``evaluations.jsonl`` holds (its summary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Terminal-info keys copied into :meth:`Episode.summary` (JSON-able; never test accuracy).
SUMMARY_KEYS = ("accuracy", "costs", "penalty", "reward_parts", "status", "cache_hit",
                "eval_seconds", "store_key", "architecture")


@dataclass
class Episode:
    """One finished episode: the decisions taken and what the env reported at the end.

    :param index: 0-based episode number within the agent's life (continues across resumes).
    :param reward: the return (sum of the step rewards).
    :param actions: the actions taken, in order.
    :param token_types: ``info["token_type"]`` of each decision (``"action"`` when absent).
    :param masks: the action mask each decision was taken under (``np.int8``).
    :param info: the terminal ``info`` (architecture, accuracy, costs, penalty, status, ...).
    """

    index: int
    reward: float
    actions: list[int]
    token_types: list[str]
    masks: list[np.ndarray] = field(repr=False)
    info: dict[str, Any] = field(repr=False)

    @property
    def architecture(self) -> dict[str, Any] | None:
        return self.info.get("architecture")

    @property
    def accuracy(self) -> float | None:
        return self.info.get("accuracy")

    @property
    def costs(self) -> dict[str, float]:
        return dict(self.info.get("costs") or {})

    def summary(self) -> dict[str, Any]:
        """A JSON-able record of the episode (what ``evaluations.jsonl`` holds)."""
        out: dict[str, Any] = {"episode": self.index, "reward": float(self.reward)}
        out.update({k: _jsonable(self.info[k]) for k in SUMMARY_KEYS if k in self.info})
        out["actions"] = [int(a) for a in self.actions]
        return out

    def to_state(self) -> dict[str, Any]:
        """Compact, picklable form (masks packed into one int8 array)."""
        width = max((len(m) for m in self.masks), default=0)
        masks = np.zeros((len(self.masks), width), dtype=np.int8)
        for i, m in enumerate(self.masks):
            masks[i, : len(m)] = m
        return {"index": self.index, "reward": float(self.reward), "actions": list(self.actions),
                "token_types": list(self.token_types), "masks": masks,
                "info": _jsonable(self.info)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Episode:
        return cls(state["index"], state["reward"], list(state["actions"]),
                   list(state["token_types"]), list(np.asarray(state["masks"], dtype=np.int8)),
                   dict(state["info"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
