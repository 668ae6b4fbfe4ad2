"""The files of a search folder and the writers that fill them while a search runs.

``evaluations.jsonl`` gets one line per episode (line ``i`` is episode ``i``; validation accuracy
only, never test accuracy), ``best.json`` the best episode so far, ``agent_state.pt`` the agent after
each policy update. The env wrapper :class:`EvaluationLog` reads only what every agent sees, so the
outputs do not depend on which agent runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from nas_gym.agents.base import Agent
from nas_gym.agents.callbacks import Callback
from nas_gym.agents.episode import Episode
from nas_gym.files import atomic_write

from .live import TensorBoardLog

__all__ = ["BEST", "CONFIG", "EVALUATIONS", "STATE", "STORE", "Checkpoint", "EvaluationLog",
           "LogSink", "evaluation_record", "read_evaluations", "truncate_evaluations",
           "write_json"]

#: Files of a search folder.
CONFIG, EVALUATIONS, BEST, STATE, STORE = ("config.json", "evaluations.jsonl", "best.json",
                                           "agent_state.pt", "store.sqlite")


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_evaluations(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``evaluations.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(out) / EVALUATIONS
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def truncate_evaluations(out: Path, keep: int) -> None:
    rows = [r for r in read_evaluations(out) if r.get("episode", keep) < keep]
    atomic_write(out / EVALUATIONS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def evaluation_record(episode: Episode) -> dict[str, Any]:
    row = episode.summary()
    for key in [k for k in row if "test" in k]:  # rewards and records never see the test split
        del row[key]
    return row


class LogSink:
    """The outputs every copy's :class:`EvaluationLog` writes to: ``evaluations.jsonl`` (line
    ``i`` is episode ``i``), ``best.json`` and the progress bar. Thread-safe; with several copies
    an episode's place is taken at its reset (the agents reset copies in episode order), rows
    finished out of order wait for the earlier ones, and a reset whose episode never ends (the
    copy is reset again: a PNAS walk) gives its place back (:meth:`abandon`)."""

    def __init__(self, out: Path, start: int, rows: list[dict[str, Any]], bar: Any,
                 live: TensorBoardLog | None = None) -> None:
        self.out, self.bar, self.live = out, bar, live
        self.best = max(rows, key=lambda r: r["reward"]) if rows else None
        self.file = open(out / EVALUATIONS, "a")  # noqa: SIM115 - closed by run_search
        self.lock = threading.Lock()
        self.next_index, self.next_write = start, start  # places, and the next row's number
        self.next_place = start  # the place written next
        self.pending: dict[int, Episode | None] = {}  # None: abandoned

    def begin(self) -> int:
        with self.lock:
            self.next_index += 1
            return self.next_index - 1

    def abandon(self, place: int) -> None:
        with self.lock:
            self.pending[place] = None
            self._flush()

    def finish(self, place: int, episode: Episode) -> None:
        with self.lock:
            self.pending[place] = episode
            self._flush()

    def _flush(self) -> None:
        while self.next_place in self.pending:
            episode = self.pending.pop(self.next_place)
            self.next_place += 1
            if episode is not None:
                self._write(evaluation_record(dataclasses.replace(episode, index=self.next_write)))
                self.next_write += 1

    def _write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row, sort_keys=True) + "\n")
        self.file.flush()
        if self.best is None or row["reward"] > self.best["reward"]:
            self.best = row
            write_json(self.out / BEST, {"best": row})
        if self.live is not None:
            self.live.log(row)
        if self.bar is not None:
            self.bar.set_postfix(best_reward=f"{self.best['reward']:.4f}",
                                 best_acc=f"{self.best.get('accuracy') or 0:.4f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        with self.lock:  # a place still open at the end was abandoned
            while self.pending:
                self.pending.setdefault(self.next_place, None)
                self._flush()
        self.file.close()


class EvaluationLog(gym.Wrapper):
    """Writes every finished episode to the sink (JSONL, ``best.json``, progress bar).

    It sits between the agent and the env and reads only what every agent sees (actions, rewards,
    terminal ``info``), so the outputs do not depend on which agent runs, third-party ones included.
    With one env an episode is numbered when it ends; with several copies, at its reset.
    """

    def __init__(self, env: gym.Env, sink: LogSink, *, number_at_reset: bool = False) -> None:
        super().__init__(env)
        self.sink, self.number_at_reset = sink, number_at_reset
        self._actions: list[int] = []
        self._return = 0.0
        self._index: int | None = None

    def reset(self, **kwargs: Any):
        self._actions, self._return = [], 0.0
        if self._index is not None:  # the previous episode of this copy never ended
            self.sink.abandon(self._index)
        self._index = self.sink.begin() if self.number_at_reset else None
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        self._actions.append(int(np.asarray(action).reshape(())))
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        if terminated or truncated:
            index = self._index if self._index is not None else self.sink.begin()
            self.sink.finish(index, Episode(index, self._return, self._actions, [], [],
                                            dict(info)))
            self._index = None
        return obs, reward, terminated, truncated, info


class Checkpoint(Callback):
    """Saves the agent after every policy update (its state is consistent there)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_update(self, agent: Agent) -> None:
        agent.save(self.path)
