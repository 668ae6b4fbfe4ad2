"""EPNAS policy network (Zhou et al., seed 004, §3.1-3.2 and "Training details"; SPEC §4).

The policy reads the current network from the observation of ``ProgressiveNAS-v0`` (token mode):
each entry slot's fields are embedded (one table per field, summed: the layer embedding), an LSTM
(32 units) runs over the entries and its final state is the **network embedding**. Two LSTMs
(128 units each) start from it at every transform: the **scale LSTM** emits the scale decisions
(``info["token_type"]`` ``scale_*``, one per part, -1 / 0 / +1), the **insert LSTM** the rest
(``op`` keep / insert / remove, ``position`` from the env's ``L + 5``-way check-table
distribution - the env masks the ``MAX + 5`` head to it - and the new entry's fields). Every
decision type has its own softmax head and an embedding of the chosen value that feeds the next
step of its LSTM; the env's ``info["action_mask"]`` masks every head.

Observation layout (env docstring): ``MAX`` slots of ``w`` fields, the transforms done, the
decision index (``nvec == K``, the decisions of a transform) and ``K`` taken decisions. The
agent finds ``K`` as the entry whose ``nvec`` equals the number of entries after it, and ``w``
as the period of the slot ``nvec``; a new transform starts when the transforms-done entry moves.

Learning (§3.1): REINFORCE over the per-transform rewards: each decision's weight is its return
to go (the rewards of its transform and the later ones, ``gamma``) minus a baseline (an EMA,
``baseline_decay``, per transform index); Adam 6e-4, init U[-0.1, 0.1]. One update per round of
``branches`` episodes (EPNAS: 8 branches; here played one after the other on the given env). The
``top_k`` best networks seen in a round (by their step reward) start the branches of the next
round through ``reset(options={"start_net": ...})`` (EPNAS: "select top 8 models from each episode
to initialize the next"); the first round starts from the env's own start nets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_gym.errors import bad_value

from .base import Agent
from .callbacks import Callback, as_callback
from .env_api import as_envs, check_discrete, check_episodes
from .episode import Episode


def progressive_layout(nvec: np.ndarray) -> tuple[int, int, int]:
    """``(slots, width, K)`` of a token-mode ``ProgressiveNAS-v0`` observation ``nvec``."""
    n = len(nvec)
    for K in range(1, n - 2):
        if int(nvec[n - K - 1]) == K:
            slots_len = n - K - 2
            for w in range(1, slots_len // 2 + 1):  # at least two slots
                if slots_len % w == 0 and all(nvec[i] == nvec[i % w] for i in range(slots_len)):
                    return slots_len // w, w, K
    raise bad_value("env.observation_space", nvec, "a token-mode ProgressiveNAS-v0 observation")


class PolicyNetwork(nn.Module):
    """Layer embeddings -> LSTM network embedding -> scale LSTM / insert LSTM with per-type heads."""

    def __init__(self, slot_nvec: list[int], n_actions: int, embed: int = 32,
                 hidden: int = 128) -> None:
        super().__init__()
        self.n_actions, self.embed = n_actions, embed
        self.fields = nn.ModuleList(nn.Embedding(int(n), embed) for n in slot_nvec)
        self.net_lstm = nn.LSTM(embed, embed, batch_first=True)
        self.scale_lstm = nn.LSTMCell(embed, hidden)
        self.insert_lstm = nn.LSTMCell(embed, hidden)
        self.types: list[str] = []
        self.heads = nn.ModuleList()
        self.embeddings = nn.ModuleList()

    def add_type(self, name: str) -> list[nn.Parameter]:
        self.types.append(name)
        self.heads.append(nn.Linear(self.scale_lstm.hidden_size, self.n_actions))
        self.embeddings.append(nn.Embedding(self.n_actions, self.embed))
        return [*self.heads[-1].parameters(), *self.embeddings[-1].parameters()]

    def network_embedding(self, slots: np.ndarray) -> torch.Tensor:
        """``[1, embed]``: the LSTM's final state over the non-empty entries (type code > 0)."""
        rows = slots[slots[:, 0] > 0] if (slots[:, 0] > 0).any() else slots[:1]
        codes = torch.as_tensor(rows, dtype=torch.long)
        x = sum(emb(codes[:, i]) for i, emb in enumerate(self.fields)).unsqueeze(0)
        _, (h, _) = self.net_lstm(x)
        return h[0]


@dataclass
class _Context:
    """The policy's state inside one episode; the log-probabilities keep their gradients."""

    t: int = -1
    scale: tuple[torch.Tensor, torch.Tensor] | None = None
    insert: tuple[torch.Tensor, torch.Tensor] | None = None
    x_scale: torch.Tensor | None = None
    x_insert: torch.Tensor | None = None
    logps: list[torch.Tensor] = field(default_factory=list)
    transform: list[int] = field(default_factory=list)  # transform index of each decision


class EPNASAgent(Agent):
    """EPNAS policy for ``ProgressiveNAS-v0`` (token mode).

    :param lr: Adam learning rate (EPNAS: 6e-4).
    :param branches: episodes per round and per update (EPNAS: N = 8 branches).
    :param top_k: best networks of a round that start the next round's branches (EPNAS: 8;
        0: off, every episode starts from the env's start net).
    :param gamma: discount of the return to go (1: the plain sum of the later rewards).
    :param baseline_decay: EMA decay of the per-transform-index baseline.
    :param init_range: parameters start uniform in ``[-init_range, init_range]`` (EPNAS: 0.1).
    :param embed: layer / network embedding size (EPNAS: 32).
    :param hidden: scale and insert LSTM size (EPNAS: 128).
    :param seed: seeds initialisation and sampling.
    """

    name = "epnas"
    concurrent_batches = True
    supported_envs = ("ProgressiveNAS-v0",)

    def __init__(self, *, lr: float = 6e-4, branches: int = 8, top_k: int = 8,
                 gamma: float = 1.0, baseline_decay: float = 0.95, init_range: float = 0.1,
                 embed: int = 32, hidden: int = 128, seed: int = 0) -> None:
        super().__init__(seed=seed)
        for arg, v, low in (("branches", branches, 1), ("top_k", top_k, 0), ("embed", embed, 1),
                            ("hidden", hidden, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(arg, v, f"an integer >= {low}")
        for arg, v, ok, what in (("lr", lr, lr > 0, "a number > 0"),
                                 ("gamma", gamma, 0 <= gamma <= 1, "a number in [0, 1]"),
                                 ("baseline_decay", baseline_decay, 0 <= baseline_decay < 1,
                                  "a number in [0, 1)"),
                                 ("init_range", init_range, init_range > 0, "a number > 0")):
            if not ok:
                raise bad_value(arg, v, what)
        self.lr, self.branches, self.top_k, self.gamma = float(lr), branches, top_k, float(gamma)
        self.baseline_decay, self.init_range = float(baseline_decay), float(init_range)
        self.embed, self.hidden = embed, hidden
        self.net: PolicyNetwork | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.layout: tuple[int, int, int] | None = None
        self._nvec: list[int] | None = None
        self.slot_nvec: list[int] | None = None
        self.baseline: list[float | None] = []
        self.starts: list[dict[str, Any]] = []  # the top-k networks of the last round
        self.updates = 0
        self.sample_gen = torch.Generator().manual_seed(self.seed)
        self.init_gen = torch.Generator().manual_seed(self.seed + 1)

    # -- network ----------------------------------------------------------------------------------
    def _build(self, nvec: list[int], n_actions: int) -> None:
        self._nvec = [int(v) for v in nvec]
        self.layout = progressive_layout(np.asarray(nvec))
        self.slot_nvec = [int(v) for v in nvec[: self.layout[1]]]
        self.net = PolicyNetwork(self.slot_nvec, n_actions, self.embed, self.hidden)
        self._init(list(self.net.parameters()))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)

    def _init(self, params: list[nn.Parameter]) -> None:
        with torch.no_grad():
            for p in params:
                p.uniform_(-self.init_range, self.init_range, generator=self.init_gen)

    def _type_id(self, token_type: str) -> int:
        assert self.net is not None and self.optimizer is not None
        if token_type not in self.net.types:
            params = self.net.add_type(token_type)
            self._init(params)
            self.optimizer.add_param_group({"params": params})
        return self.net.types.index(token_type)

    def _act(self, obs: Any, info: dict[str, Any], ctx: _Context | None,
             deterministic: bool) -> tuple[int, _Context]:
        net, layout = self.net, self.layout
        assert net is not None and layout is not None
        obs = np.asarray(obs, dtype=np.int64).reshape(-1)
        slots, width, _ = layout
        ctx = ctx or _Context()
        t = int(obs[slots * width])
        if t != ctx.t:  # a new transform: re-embed the (transformed) network, restart both LSTMs
            z = net.network_embedding(obs[: slots * width].reshape(slots, width))
            ctx.t, ctx.scale, ctx.insert, ctx.x_scale, ctx.x_insert = t, None, None, z, z
        token_type = str(info.get("token_type", "action"))
        k = self._type_id(token_type)
        scale = token_type.startswith("scale")
        x, hc = (ctx.x_scale, ctx.scale) if scale else (ctx.x_insert, ctx.insert)
        h, c = (net.scale_lstm if scale else net.insert_lstm)(x, hc)
        mask = torch.as_tensor(np.asarray(info["action_mask"]), dtype=torch.bool)
        logp = F.log_softmax(net.heads[k](h)[0].masked_fill(~mask, -1e9), -1)
        if deterministic:
            action = int(logp.argmax())
        else:
            action = int(torch.multinomial(logp.detach().exp(), 1,
                                           generator=self._sampler(self.sample_gen)))
        nxt = net.embeddings[k](torch.tensor([action]))
        if scale:
            ctx.scale, ctx.x_scale = (h, c), nxt
        else:
            ctx.insert, ctx.x_insert = (h, c), nxt
        ctx.logps.append(logp[action])
        ctx.transform.append(t)
        return action, ctx

    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        if self.net is None:
            raise RuntimeError("the policy is built by learn() (or load()); call it first")
        with torch.no_grad():
            return self._act(observation, info, state, deterministic)

    # -- episodes and learning --------------------------------------------------------------------
    def _play(self, env: gym.Env, first: tuple[Any, dict[str, Any]], index: int
              ) -> tuple[Episode, _Context, list[float], list[tuple[float, dict[str, Any]]]]:
        """One branch (its start net passed at reset): the episode, its context (log-probs with
        gradients), the per-step rewards and the (reward, network) of every transform."""
        rewards: list[float] = []
        nets: list[tuple[float, dict[str, Any]]] = []
        contexts: list[_Context] = []

        def choose(o: Any, i: dict[str, Any], ctx: Any) -> tuple[int, Any]:
            action, ctx = self._act(o, i, ctx, False)
            if not contexts:
                contexts.append(ctx)
            return action, ctx

        def on_step(reward: float, info: dict[str, Any]) -> None:
            rewards.append(reward)
            if "store_key" in info:  # a transform completed: its network and reward
                nets.append((reward, info["architecture"]))

        episode = self.play_episode(env, choose=choose, first=first, index=index,
                                    on_step=on_step)
        return episode, contexts[0], rewards, nets

    def _update(self, batch: list[tuple[_Context, list[float]]]) -> None:
        """REINFORCE: every decision of transform ``t`` is weighted by ``G_t - b_t``."""
        assert self.net is not None and self.optimizer is not None
        togo = []
        for ctx, rewards in batch:
            # the reward of transform t arrives on its last decision (the others give 0)
            per_t = np.zeros(max(ctx.transform) + 1 if ctx.transform else 0)
            for r, t in zip(rewards, ctx.transform, strict=True):
                per_t[t] += r
            g = np.zeros_like(per_t)
            run = 0.0
            for t in range(len(per_t) - 1, -1, -1):
                run = per_t[t] + self.gamma * run
                g[t] = run
            togo.append(g)
        T = max(len(g) for g in togo)
        self.baseline += [None] * (T - len(self.baseline))
        for t in range(T):  # the first batch sets the baseline (no initial bias), as REINFORCE
            if self.baseline[t] is None:
                self.baseline[t] = float(np.mean([g[t] for g in togo if len(g) > t]))
        loss = torch.zeros(())
        for (ctx, _), g in zip(batch, togo, strict=True):
            adv = torch.tensor([g[t] - self.baseline[t] for t in ctx.transform],
                               dtype=torch.float32)
            loss = loss - (adv * torch.stack(ctx.logps)).sum()
        self.optimizer.zero_grad(set_to_none=True)
        (loss / len(batch)).backward()
        self.optimizer.step()
        d = self.baseline_decay
        for g in togo:
            for t, v in enumerate(g):
                self.baseline[t] = d * self.baseline[t] + (1 - d) * float(v)
        self.updates += 1

    def _top_k(self, nets: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The ``top_k`` distinct networks with the highest step reward (ties: the earlier)."""
        order = sorted(range(len(nets)), key=lambda i: -nets[i][0])
        out: list[dict[str, Any]] = []
        for i in order:
            if nets[i][1] not in out:
                out.append(nets[i][1])
            if len(out) == self.top_k:
                break
        return out

    def learn(self, env: gym.Env | Sequence[gym.Env], total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None
              ) -> EPNASAgent:
        """``env``: one env, or a list of copies whose branches of an update are played (and
        their networks trained) concurrently (see :mod:`nas_gym.agents.base`)."""
        total, cb = check_episodes(total_episodes), as_callback(callback)
        envs = as_envs(env)
        n = check_discrete(envs[0], self.name)
        nvec = [int(v) for v in np.asarray(envs[0].observation_space.nvec).reshape(-1)]
        if self.net is None:
            self._build(nvec, n)
        elif self.net.n_actions != n or nvec[: len(self.slot_nvec or [])] != self.slot_nvec:
            raise bad_value("env", envs[0].action_space, "the spaces this policy was built for")
        self._stop = False
        batch: list[tuple[_Context, list[float]]] = []
        nets: list[tuple[float, dict[str, Any]]] = []
        while self.num_episodes < total and not self._stop:
            starts, done = (self.starts if self.top_k else []), len(batch)

            def options(j: int, starts: list = starts, done: int = done) -> dict[str, Any] | None:
                return {"start_net": starts[(done + j) % len(starts)]} if starts else None

            k = self._batch_step(envs, self.branches, len(batch), total)
            for episode, ctx, rewards, new in self._play_many(
                    envs, k, lambda e, first, index, _: self._play(e, first, index), options):
                self._record(episode, cb)
                batch.append((ctx, rewards))
                nets += new
            if len(batch) == self.branches or self.num_episodes >= total or self._stop:
                self._update(batch)
                if self.top_k:
                    self.starts = self._top_k(nets)
                batch, nets = [], []
                cb.on_update(self)
        return self

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        net = self.net
        return {**super().state_dict(),
                "nvec": None if net is None else self._nvec, "types": [] if net is None
                else list(net.types), "n_actions": None if net is None else net.n_actions,
                "net": None if net is None else net.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "baseline": list(self.baseline), "starts": list(self.starts),
                "updates": self.updates, "sample_gen": self.sample_gen.get_state(),
                "init_gen": self.init_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["nvec"] is not None:
            self._build(list(state["nvec"]), int(state["n_actions"]))
            for t in state["types"]:
                self._type_id(t)
            assert self.net is not None and self.optimizer is not None
            self.net.load_state_dict(state["net"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.baseline, self.starts = list(state["baseline"]), list(state["starts"])
        self.updates = int(state["updates"])
        self.sample_gen.set_state(state["sample_gen"])
        self.init_gen.set_state(state["init_gen"])
