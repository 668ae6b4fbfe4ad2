"""PNAS: Progressive Neural Architecture Search (Liu et al. 2018; lecture 003, Algorithm 1), over
any nas_gym token env through the Gymnasium API.

Architectures grow one *unit* (a cell's block, a network's layer) per round. Round 1 trains
``beam_size`` of the smallest architectures; every later round expands the beam (the ``beam_size``
best architectures of the previous round, by return) by one unit, ranks the ``candidates``
expansions with the LSTM surrogate ensemble (:mod:`nas_gym.agents.surrogate`) and trains only the
``beam_size`` best-ranked; after each round the surrogate is fine-tuned on every finished
evaluation (the terminal ``info``'s return). An episode replays the chosen tokens.

**How the agent sees units** (the only knowledge of a space it uses, all from ``info["token_type"]``,
``info["action_mask"]`` and the observation length ``max_tokens``, the longest episode):

- ``"count"`` spaces (``CellNAS-v0``): the first decision is of type ``size_token``
  (``"num_blocks"``: action ``k`` = the smallest size + ``k`` units); a unit is the shortest
  repeating pattern of token types after it (CellNAS: ``input, input, op, op``). Growing adds 1 to
  every size token and appends a unit to each cell (both cells with ``reduction="separate"``).
  Round 1 plays live episodes (smallest size, other tokens uniform over the mask).
- ``"stop"`` spaces (``MacroNAS-v0`` with ``min_layers < max_layers``): a decision of type
  ``stop_token`` with action 1 ends the episode. Growing turns the final stop into "continue" and
  adds the decisions up to the next stop (taken as 1) or to ``max_tokens``.
- ``"prefix"`` spaces (no size or stop token: every episode has ``max_tokens`` decisions, e.g.
  ``MacroNAS-v0`` with ``preset="seed001"``): a unit is one decision; an architecture of size ``s``
  chooses its first ``s`` decisions and completes the rest with the lowest legal action.

Candidates are built by *walks*: reset an env, replay the parent's part of the candidate, draw the
new unit's decisions uniformly from the masks; the walk never takes the episode's last step (no
child trains), so every proposed token was legal under the env's own mask - with
``hard_budget=True`` no candidate breaks the budget. A walk resets an env without finishing the
episode, which Gymnasium allows.

**Differences from the paper** (documented in the README): candidates are a uniform sample of the
expansions (``candidates`` per round) rather than all of them; round 1 trains ``beam_size``
random smallest cells, not all of them; the surrogate regresses the env's return (accuracy minus
the cost penalty), not the raw accuracy; once nothing can grow (the largest size), each round
re-expands the last parents, so a search can run any number of episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from nas_gym.errors import ConfigError, bad_value

from .base import Agent
from .callbacks import Callback, as_callback
from .env_api import as_envs, check_discrete, check_episodes, decision
from .episode import Episode
from .surrogate import Surrogate

ROOT: dict[str, Any] = {"actions": [], "types": [], "size": 0}


def shortest_period(types: Sequence[str]) -> int:
    """The length of the shortest pattern whose repetition is ``types`` (``len(types)`` if none)."""
    n = len(types)
    for p in range(1, n + 1):
        if n % p == 0 and all(types[i] == types[i % p] for i in range(n)):
            return p
    return max(n, 1)


class PNASAgent(Agent):
    """Progressive search with a learned predictor (PNAS).

    :param beam_size: K, architectures trained per round (PNAS: 256; sized here for digits).
    :param candidates: expansions drawn and ranked by the surrogate per round (PNAS: all).
    :param size_token: token type of a "number of units" decision (CellNAS: ``"num_blocks"``).
    :param stop_token: token type of a "stop here" decision (action 1 stops; MacroNAS: ``"stop"``).
    :param members: surrogate ensemble size (PNAS: 5).
    :param embed: surrogate embedding size (PNAS: 100).
    :param hidden: surrogate LSTM size (PNAS: 100).
    :param lr: surrogate Adam learning rate.
    :param fit_steps: surrogate gradient steps per member after each round.
    :param seed: seeds walks, live episodes and the surrogate.
    """

    name = "pnas"
    concurrent_batches = True
    supported_envs = ("CellNAS-v0", "MacroNAS-v0")

    def __init__(self, *, beam_size: int = 8, candidates: int = 64,
                 size_token: str = "num_blocks", stop_token: str = "stop", members: int = 5,
                 embed: int = 32, hidden: int = 64, lr: float = 0.005, fit_steps: int = 20,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        for arg, v in (("beam_size", beam_size), ("candidates", candidates),
                       ("members", members), ("embed", embed), ("hidden", hidden),
                       ("fit_steps", fit_steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad_value(arg, v, "an integer >= 1")
        if candidates < beam_size:
            raise bad_value("candidates", candidates, f"an integer >= beam_size={beam_size}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise bad_value("lr", lr, "a number > 0")
        for arg, v in (("size_token", size_token), ("stop_token", stop_token)):
            if not isinstance(v, str) or not v:
                raise bad_value(arg, v, "a token type name")
        self.beam_size, self.candidates = beam_size, candidates
        self.size_token, self.stop_token = size_token, stop_token
        self.surrogate_kwargs = {"members": members, "embed": embed, "hidden": hidden,
                                 "lr": float(lr), "steps": fit_steps}
        self.surrogate: Surrogate | None = None
        self.n_actions: int | None = None
        self.max_tokens: int | None = None
        self.mode: str | None = None  # "count" | "stop" | "prefix", found by the first learn()
        self.unit: int | None = None  # tokens per unit of a "count" space
        self.data: list[dict[str, Any]] = []  # every finished evaluation: actions, types, reward
        self.beam: list[dict[str, Any]] = []  # the parents of the next round
        self.parents: list[dict[str, Any]] = []  # the parents the current round expanded
        self.pending: list[dict[str, Any]] = []  # the current round's candidates still to play
        self.results: list[dict[str, Any]] = []  # the current round's finished candidates
        self.rounds = 0
        self.sample_gen = torch.Generator().manual_seed(self.seed)

    # -- the space, from the public API -----------------------------------------------------------
    def _build(self, n_actions: int, max_tokens: int) -> None:
        self.n_actions, self.max_tokens = n_actions, max_tokens
        self.surrogate = Surrogate(n_actions, seed=self.seed, **self.surrogate_kwargs)

    @staticmethod
    def _max_tokens(env: gym.Env) -> int:
        space = env.observation_space
        if not isinstance(space, gym.spaces.MultiDiscrete) or len(space.shape) != 1:
            raise bad_value("env.observation_space", space,
                            "a 1-D MultiDiscrete of the emitted tokens (a nas_gym token env)")
        return int(space.shape[0])

    def _detect(self, env: gym.Env) -> str:
        """The kind of space: a probe walk with the lowest legal actions ("continue" at stops)
        that stops before the episode's end."""
        _, info = env.reset()
        steps = 0
        while True:
            mask, token_type = decision(info, env.action_space)
            if token_type == self.size_token:
                if steps:
                    raise ConfigError(f"agent 'pnas': a {self.size_token!r} decision must come "
                                      "first (it sets the number of units)")
                return "count"
            if token_type == self.stop_token:
                return "stop"
            if steps == self.max_tokens - 1:
                return "prefix"
            _, _, terminated, truncated, info = env.step(int(np.flatnonzero(mask)[0]))
            steps += 1
            if terminated or truncated:
                raise ConfigError(
                    f"agent 'pnas': an episode ended after {steps} of max_tokens="
                    f"{self.max_tokens} decisions without a {self.size_token!r} or "
                    f"{self.stop_token!r} token; PNAS cannot tell where a unit ends in this space")

    def _template(self, parent: dict[str, Any]) -> list[int | None] | None:
        """The tokens a child of ``parent`` starts with (None: drawn in the walk); None when the
        parent cannot grow."""
        acts, types = parent["actions"], parent["types"]
        if self.mode == "count":
            assert self.unit is not None
            starts = [t for t, ty in enumerate(types) if ty == self.size_token]
            out: list[int | None] = []
            for s, end in zip(starts, [*starts[1:], len(acts)], strict=True):
                out += [acts[s] + 1, *acts[s + 1:end], *[None] * self.unit]
            return out
        assert self.max_tokens is not None
        if self.mode == "stop":
            if not acts:
                return []
            if types[-1] != self.stop_token or len(acts) >= self.max_tokens:
                return None
            return [*acts[:-1], 0]
        size = parent["size"]
        return None if size >= self.max_tokens else [*acts[:size], None]

    def _walk(self, env: gym.Env, parent: dict[str, Any]) -> dict[str, Any] | None:
        """A child of ``parent`` (actions, types, size), or None when a fixed token is illegal."""
        template = self._template(parent)
        if template is None:
            return None
        assert self.max_tokens is not None
        _, info = env.reset()
        actions: list[int] = []
        types: list[str] = []
        while True:
            mask, token_type = decision(info, env.action_space)
            legal = np.flatnonzero(mask)
            t = len(actions)
            fixed = template[t] if t < len(template) else None
            if fixed is not None:
                if not (0 <= fixed < len(mask) and mask[fixed]):
                    return None  # e.g. the hard budget forbids one more block here
                a = fixed
            elif t < len(template) or self.mode == "count":
                a = int(self.rng.choice(legal))
            elif self.mode == "stop" and token_type == self.stop_token:
                a = 1 if mask[1] else int(legal[0])  # the smallest growth: stop at once
            elif self.mode == "stop":
                a = int(self.rng.choice(legal))
            else:  # prefix: the rest is the lowest legal action
                a = int(legal[0])
            actions.append(a)
            types.append(token_type)
            last = len(actions) == self.max_tokens or \
                (self.mode == "count" and len(actions) == len(template)) or \
                (self.mode == "stop" and token_type == self.stop_token and a == 1
                 and t >= len(template))
            if last:
                return {"actions": actions, "types": types, "size": parent["size"] + 1}
            _, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                raise ConfigError(f"agent 'pnas': an episode ended after {len(actions)} tokens, "
                                  f"before the end of its {self.mode!r} unit")

    # -- rounds -------------------------------------------------------------------------------------
    def _expand(self, env: gym.Env, parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Up to ``candidates`` distinct, not yet evaluated children of ``parents`` (round robin)."""
        seen = {tuple(d["actions"]) for d in self.data}
        growable = [p for p in parents if self._template(p) is not None]
        out: list[dict[str, Any]] = []
        for attempt in range(3 * self.candidates if growable else 0):
            child = self._walk(env, growable[attempt % len(growable)])
            if child is not None and tuple(child["actions"]) not in seen:
                seen.add(tuple(child["actions"]))
                out.append(child)
                if len(out) == self.candidates:
                    break
        return out

    def _new_round(self, env: gym.Env) -> None:
        """Fill ``pending`` with the next round's ``beam_size`` candidates."""
        self.rounds += 1
        if self.mode == "count" and not self.beam:  # round 1: live smallest cells
            self.parents, self.pending = [], [{"live": "smallest"}] * self.beam_size
            return
        parents = self.beam if self.beam else [ROOT]
        children = self._expand(env, parents)
        if not children and self.parents:  # the largest size: re-expand the last parents
            parents = self.parents
            children = self._expand(env, parents)
        if not children:  # nothing new near the beam: random architectures
            self.pending = [{"live": "random"}] * self.beam_size
            return
        self.parents = parents
        assert self.surrogate is not None
        if self.surrogate.fits:
            scores = self.surrogate.predict([(c["types"], c["actions"]) for c in children])
            children = [children[i] for i in np.argsort(-scores, kind="stable")]
        self.pending = children[: self.beam_size]

    def _end_round(self) -> None:
        """Fine-tune the surrogate on every evaluation; the round's best ``beam_size`` distinct
        architectures become the beam."""
        assert self.surrogate is not None
        self.surrogate.fit([(d["types"], d["actions"]) for d in self.data],
                           [d["reward"] for d in self.data])
        order = sorted(range(len(self.results)), key=lambda i: -self.results[i]["reward"])
        beam: list[dict[str, Any]] = []
        for i in order:
            if all(b["actions"] != self.results[i]["actions"] for b in beam):
                beam.append(self.results[i])
            if len(beam) == self.beam_size:
                break
        if beam:
            self.beam = beam
        self.results = []

    # -- acting -------------------------------------------------------------------------------------
    def _random_action(self, info: dict[str, Any], policy: str) -> int:
        legal = np.flatnonzero(np.asarray(info["action_mask"]))
        if policy == "smallest" and info.get("token_type") == self.size_token:
            return int(legal[0])
        k = int(torch.randint(len(legal), (1,), generator=self._sampler(self.sample_gen)))
        return int(legal[k])

    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        """Replays the best architecture's tokens (``state``: the step); where there is none or
        a token is illegal, a uniform legal token (the lowest when ``deterministic``)."""
        t = 0 if state is None else int(state)
        best = self.best()
        mask = np.asarray(info["action_mask"])
        if best is not None and t < len(best.actions) and mask[best.actions[t]]:
            return int(best.actions[t]), t + 1
        if deterministic:
            return int(np.flatnonzero(mask)[0]), t + 1
        return self._random_action(info, "random"), t + 1

    def _play(self, env: gym.Env, first: tuple[Any, dict[str, Any]], index: int,
              entry: dict[str, Any]) -> Episode:
        plan = entry.get("actions")

        def choose(obs: Any, info: dict[str, Any], t: Any) -> tuple[int, Any]:
            t = 0 if t is None else t
            if plan is None:
                return self._random_action(info, entry["live"]), t + 1
            if t < len(plan) and info["action_mask"][plan[t]]:
                return int(plan[t]), t + 1
            # a walk checked every token under the same masks: this does not happen
            raise RuntimeError(f"agent 'pnas': candidate token {t} is no longer legal")

        return self.play_episode(env, choose=choose, first=first, index=index)

    def _learn_from(self, entry: dict[str, Any], episode: Episode) -> None:
        record = {"actions": [int(a) for a in episode.actions],
                  "types": list(episode.token_types), "reward": float(episode.reward),
                  "size": int(entry.get("size", len(episode.actions)))}
        if self.mode == "count" and self.unit is None:
            starts = [t for t, ty in enumerate(record["types"]) if ty == self.size_token]
            end = starts[1] if len(starts) > 1 else len(record["types"])
            self.unit = shortest_period(record["types"][1:end])
        self.data.append(record)
        self.results.append(record)

    def learn(self, env: gym.Env | Sequence[gym.Env], total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None
              ) -> PNASAgent:
        """``env``: one env, or a list of copies that play a round's candidates concurrently (see
        :mod:`nas_gym.agents.base`); walks use the first copy between batches."""
        total, cb = check_episodes(total_episodes), as_callback(callback)
        envs = as_envs(env)
        n, max_tokens = check_discrete(envs[0], self.name), self._max_tokens(envs[0])
        if self.surrogate is None:
            self._build(n, max_tokens)
        elif (n, max_tokens) != (self.n_actions, self.max_tokens):
            raise bad_value("env", envs[0].observation_space,
                            f"the space this agent searched ({self.n_actions} actions, "
                            f"{self.max_tokens} tokens)")
        if self.mode is None:
            self.mode = self._detect(envs[0])
        self._stop = False
        while self.num_episodes < total and not self._stop:
            if not self.pending:
                self._new_round(envs[0])
            k = self._batch_step(envs, len(self.pending), 0, total)
            chunk = self.pending[:k]
            played = self._play_many(envs, k, lambda e, first, index, j, chunk=chunk: self._play(
                e, first, index, chunk[j]))
            for entry, episode in zip(chunk, played, strict=True):
                self.pending.pop(0)
                self._learn_from(entry, episode)
                self._record(episode, cb)
            if not self.pending:
                self._end_round()
            cb.on_update(self)
        return self

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values only (tensors, numbers, strings, lists and dicts of them)."""
        return {**super().state_dict(), "n_actions": self.n_actions,
                "max_tokens": self.max_tokens, "mode": self.mode, "unit": self.unit,
                "data": self.data, "beam": self.beam, "parents": self.parents,
                "pending": self.pending, "results": self.results, "rounds": self.rounds,
                "sample_gen": self.sample_gen.get_state(),
                "surrogate": None if self.surrogate is None else self.surrogate.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.surrogate = None
        if state["n_actions"] is not None:
            self._build(int(state["n_actions"]), int(state["max_tokens"]))
            assert self.surrogate is not None
            self.surrogate.load_state_dict(state["surrogate"])
        self.mode, self.unit = state["mode"], state["unit"]
        copy = lambda rows: [dict(r) for r in rows]  # noqa: E731
        self.data, self.beam, self.parents = copy(state["data"]), copy(state["beam"]), \
            copy(state["parents"])
        self.pending, self.results = copy(state["pending"]), copy(state["results"])
        self.rounds = int(state["rounds"])
        self.sample_gen.set_state(state["sample_gen"])
