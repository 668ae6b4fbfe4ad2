"""EAS meta-controller (Cai et al. 2018, seed 002, "Actor Networks" / "Training Details"; SPEC §4).

The encoder embeds every layer of the current network (a 16-d layer embedding: the sum of one
table per field of the observation slot - type, width level, kernel code) and runs a one-layer
bidirectional LSTM (50 units per direction) over the layers. Two actors read it:

- **Net2Wider actor**: one shared sigmoid classifier ``sigmoid(w^T h_l + b)`` over each layer's
  encoder state ``h_l`` ("widen layer l?");
- **Net2Deeper actor**: an LSTM (100 units) whose state starts at the encoder's final state and
  which decides, autoregressively, the **block** (the stretch between pooling layers; fc layers
  form their own, last block), the **index** inside the block and the **kernel** (1 / 3 / 5, or
  "fc" in the fc block) of the new identity layer.

**Mapping onto ``Net2Net-v0``'s one ``Discrete`` action per step** (its docstring's layout, with
``L = (len(observation_space.nvec) - 2) // 3`` slots): the env applies one transform per step, so
the controller forms one categorical over the legal env actions (``info["action_mask"]``)::

    P(widen l)          = g_wider  * sigmoid(h_l) / sum_{legal l'} sigmoid(h_l')
    P(deepen at p, k)   = g_deeper * P(block | .) P(index | block) P(kernel | block, index)
    P(stop)             = g_stop

where ``g = softmax`` of a small gate over (wider, deeper, stop) read from the encoder's final
state and the transforms left (kinds without a legal action are masked out), and the deeper
actor's three softmaxes are each masked to the choices that lead to some legal action. Action
``L + 3 p + j`` (conv kernel ``CONV_KERNELS[j]`` at position ``p``) has block = number of pooling
slots before ``p``, index = ``p`` minus the slot after the last such pool, kernel ``j``; action
``L + 3 (L + 1) + p`` (fc at ``p``) has block ``max_blocks - 1``, index ``p`` minus the number of
non-fc layers, kernel 3 ("fc"). **Decision:** EAS widens many layers per step and runs its actors
in a fixed order; one transform per step (the env's contract) needs this gate instead.

With ``Net2Net-v0(protocol="eas")`` the controller follows EAS itself, no gate: in a wider
step's sub-step for layer ``l`` (``info["token_type"] == "widen_layer"``, ``info["layer"] == l``)
``P(widen l) = sigmoid(w^T h_l + b)``, the shared sigmoid, on the encoding of the network as it
was at the start of the wider step (the env changes it only after the step's last decision), so
the step's decisions are EAS's simultaneous per-layer ones; in a deeper step (``"deepen"``) the
deeper actor's ``P(block) P(index | block) P(kernel | block, index)`` alone.

Learning: REINFORCE on the episode return (the env's reward is already EAS's ``tan(acc * pi / 2)``,
``accuracy_transform="tan"``), an exponential-moving-average baseline (0.95), Adam, 10 networks
per update (``batch_episodes``). The EAS two-stage schedule (the best net of a stage starts the
next) is :func:`nas_gym.experiments.eas_stages.run_eas_stages`: ``Net2Net-v0`` takes its start net at
construction, so a stage is a new env; the controller's heads do not depend on ``L``, so one agent
spans the stages.
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

POOL_CODES = (2, 3)  # observation type codes of max / avg pooling (Net2Net-v0 docstring)
FC_CODE = 4
N_KERNELS = 3  # CONV_KERNELS = (1, 3, 5); kernel choice 3 = "fc"
NEG = -1e9


def net2net_layout(env: gym.Env) -> int:
    """``L``, the layer slots of a ``Net2Net-v0`` observation / action space (public spaces)."""
    nvec = np.asarray(env.observation_space.nvec).reshape(-1)
    L = (len(nvec) - 2) // 3
    if len(nvec) != 3 * L + 2 or int(env.action_space.n) != L + 4 * (L + 1) + 1:
        raise bad_value("env", env.observation_space,
                        "a Net2Net-v0 space: MultiDiscrete([5, 12, 4] * L + [d, w]), "
                        "Discrete(L + 4 (L + 1) + 1)")
    return L


def deepen_code(action: int, L: int, types: np.ndarray, max_blocks: int) -> tuple[int, int, int]:
    """``(block, index, kernel)`` of deepen action ``action`` given the slot type codes."""
    b = action - L
    if b < 3 * (L + 1):
        p, k = divmod(b, 3)
        pools = [i for i in range(p) if types[i] in POOL_CODES]
        return min(len(pools), max_blocks - 2), p - (pools[-1] + 1 if pools else 0), k
    p = b - 3 * (L + 1)
    n_nonfc = int(((types != 0) & (types != FC_CODE)).sum())
    return max_blocks - 1, p - n_nonfc, N_KERNELS


class MetaController(nn.Module):
    """Encoder + Net2Wider actor + Net2Deeper actor + the (wider / deeper / stop) gate."""

    def __init__(self, slot_nvec: list[int], max_blocks: int, max_index: int,
                 embed: int = 16, hidden: int = 50) -> None:
        super().__init__()
        self.fields = nn.ModuleList(nn.Embedding(int(n), embed) for n in slot_nvec)
        self.encoder = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        H = 2 * hidden
        self.wider = nn.Linear(H, 1)
        self.gate = nn.Linear(H + 2, 3)
        self.deeper = nn.LSTMCell(embed, H)
        self.start = nn.Parameter(torch.zeros(1, embed))
        self.block_emb = nn.Embedding(max_blocks, embed)
        self.index_emb = nn.Embedding(max_index, embed)
        self.block_head = nn.Linear(H, max_blocks)
        self.index_head = nn.Linear(H, max_index)
        self.kernel_head = nn.Linear(H, N_KERNELS + 1)

    def log_probs(self, obs: np.ndarray, mask: np.ndarray, L: int, left: np.ndarray,
                  max_blocks: int, token: str = "transform", layer: int = -1) -> torch.Tensor:
        """Log-probabilities ``[n_actions]`` of every env action (``-1e9``: illegal). ``token``:
        ``"transform"`` (the gated one-transform step), ``"widen_layer"`` (the shared sigmoid of
        ``layer``: action ``layer`` = widen, the last action = keep) or ``"deepen"``."""
        slots = np.asarray(obs[: 3 * L], dtype=np.int64).reshape(L, 3)
        n = max(1, int((slots[:, 0] != 0).sum()))
        codes = torch.as_tensor(slots[:n])
        x = sum(emb(codes[:, i]) for i, emb in enumerate(self.fields)).unsqueeze(0)
        out, (h, c) = self.encoder(x)
        states = out[0]  # [n, 100]
        final_h, final_c = h.permute(1, 0, 2).reshape(1, -1), c.permute(1, 0, 2).reshape(1, -1)
        logp = torch.full((len(mask),), NEG)
        legal = np.flatnonzero(mask)
        if token == "widen_layer":  # EAS protocol: one binary decision of the shared sigmoid
            s = self.wider(states[layer])[0]
            return logp.index_put((torch.tensor([layer, len(mask) - 1]),),
                                  torch.stack([F.logsigmoid(s), F.logsigmoid(-s)]))
        if token == "deepen":  # EAS protocol: the deeper actor alone
            deepen = [int(a) for a in legal]
            codes3 = [deepen_code(a, L, slots[:, 0], max_blocks) for a in deepen]
            return logp.index_put((torch.tensor(deepen),), self._deeper(codes3, final_h, final_c))
        widen = [a for a in legal if a < L]
        deepen = [a for a in legal if L <= a < len(mask) - 1]
        gate_mask = torch.tensor([bool(widen), bool(deepen), True])
        gate = self.gate(torch.cat([final_h, torch.as_tensor(left, dtype=torch.float32)[None]], 1))
        log_gate = F.log_softmax(gate[0].masked_fill(~gate_mask, NEG), -1)
        logp = logp.index_put((torch.tensor([len(mask) - 1]),), log_gate[2:3])
        if widen:
            s = F.logsigmoid(self.wider(states[torch.tensor(widen)]).squeeze(1))
            logp = logp.index_put((torch.tensor(widen),), log_gate[0] + F.log_softmax(s, 0))
        if deepen:
            codes3 = [deepen_code(int(a), L, slots[:, 0], max_blocks) for a in deepen]
            logp = logp.index_put((torch.tensor(deepen),),
                                  log_gate[1] + self._deeper(codes3, final_h, final_c))
        return logp

    def _deeper(self, codes: list[tuple[int, int, int]], h0: torch.Tensor, c0: torch.Tensor
                ) -> torch.Tensor:
        """``log P(block) + log P(index | block) + log P(kernel | block, index)`` per code."""
        h1, c1 = self.deeper(self.start, (h0, c0))
        blocks = sorted({b for b, _, _ in codes})
        bmask = torch.zeros(self.block_head.out_features, dtype=torch.bool)
        bmask[blocks] = True
        log_block = F.log_softmax(self.block_head(h1)[0].masked_fill(~bmask, NEG), -1)
        bt = torch.tensor(blocks)
        h2, c2 = self.deeper(self.block_emb(bt), (h1.expand(len(blocks), -1),
                                                  c1.expand(len(blocks), -1)))
        imask = torch.zeros(len(blocks), self.index_head.out_features, dtype=torch.bool)
        pairs = sorted({(b, i) for b, i, _ in codes})
        for b, i in pairs:
            imask[blocks.index(b), i] = True
        log_index = F.log_softmax(self.index_head(h2).masked_fill(~imask, NEG), -1)
        rows = torch.tensor([blocks.index(b) for b, _ in pairs])
        h3, _ = self.deeper(self.index_emb(torch.tensor([i for _, i in pairs])), (h2[rows], c2[rows]))
        kmask = torch.zeros(len(pairs), N_KERNELS + 1, dtype=torch.bool)
        for b, i, k in codes:
            kmask[pairs.index((b, i)), k] = True
        log_kernel = F.log_softmax(self.kernel_head(h3).masked_fill(~kmask, NEG), -1)
        return torch.stack([log_block[b] + log_index[blocks.index(b), i]
                            + log_kernel[pairs.index((b, i)), k] for b, i, k in codes])


@dataclass
class _Trace:
    """One episode's log-probabilities (with gradients while learning)."""

    logps: list[torch.Tensor] = field(default_factory=list)


class EASAgent(Agent):
    """EAS meta-controller for ``Net2Net-v0`` (see the module docstring for the action mapping).

    :param lr: Adam learning rate (EAS: 0.001).
    :param batch_episodes: networks per update (EAS: 10).
    :param baseline_decay: EMA baseline decay (EAS: 0.95).
    :param init_range: parameters start uniform in ``[-init_range, init_range]``.
    :param max_blocks: block choices of the deeper actor (the last one is the fc block).
    :param max_index: index choices inside a block.
    :param seed: seeds initialisation and sampling.
    """

    name = "eas"
    concurrent_batches = True
    supported_envs = ("Net2Net-v0",)

    def __init__(self, *, lr: float = 1e-3, batch_episodes: int = 10,
                 baseline_decay: float = 0.95, init_range: float = 0.1, max_blocks: int = 8,
                 max_index: int = 32, seed: int = 0) -> None:
        super().__init__(seed=seed)
        for arg, v, low in (("batch_episodes", batch_episodes, 1), ("max_blocks", max_blocks, 2),
                            ("max_index", max_index, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(arg, v, f"an integer >= {low}")
        if not lr > 0:
            raise bad_value("lr", lr, "a number > 0")
        if not 0 <= baseline_decay < 1:
            raise bad_value("baseline_decay", baseline_decay, "a number in [0, 1)")
        if not init_range > 0:
            raise bad_value("init_range", init_range, "a number > 0")
        self.lr, self.batch_episodes, self.baseline_decay = float(lr), batch_episodes, \
            float(baseline_decay)
        self.init_range, self.max_blocks, self.max_index = float(init_range), max_blocks, max_index
        self.net: MetaController | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.slot_nvec: list[int] | None = None
        self.baseline: float | None = None
        self.updates = 0
        self.sample_gen = torch.Generator().manual_seed(self.seed)
        self._tail: list[int] = [1, 1]  # nvec of the (deepen, widen) steps-left counters

    def _build(self, slot_nvec: list[int]) -> None:
        self.slot_nvec = [int(v) for v in slot_nvec]
        torch_gen = torch.Generator().manual_seed(self.seed + 1)
        self.net = MetaController(self.slot_nvec, self.max_blocks, self.max_index)
        with torch.no_grad():
            for p in self.net.parameters():
                p.uniform_(-self.init_range, self.init_range, generator=torch_gen)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)

    def _ensure(self, env: gym.Env) -> None:
        check_discrete(env, self.name)
        L = net2net_layout(env)
        nvec = [int(v) for v in np.asarray(env.observation_space.nvec).reshape(-1)]
        if L + 1 > self.max_index:
            raise bad_value("max_index", self.max_index, f"an integer > {L} (the env's slots)")
        if self.net is None:
            self._build(nvec[:3])
        elif nvec[:3] != self.slot_nvec:
            raise bad_value("env.observation_space", nvec[:3], f"slots {self.slot_nvec}")

    def _act(self, obs: Any, info: dict[str, Any], trace: _Trace | None,
             deterministic: bool) -> tuple[int, _Trace]:
        assert self.net is not None
        obs = np.asarray(obs).reshape(-1)
        mask = np.asarray(info["action_mask"], dtype=bool)
        L = (len(obs) - 2) // 3
        if len(mask) != L + 4 * (L + 1) + 1:  # "done" or a foreign layout: the first legal
            return int(np.flatnonzero(mask)[0]), trace or _Trace()
        span = np.maximum(np.asarray(self._tail, dtype=np.float32) - 1, 1)
        left = obs[-2:].astype(np.float32) / span
        token = str(info.get("token_type", "transform"))
        logp = self.net.log_probs(obs, mask, L, left, self.max_blocks, token,
                                  int(info.get("layer", -1)))
        if deterministic:
            action = int(logp.argmax())
        else:
            action = int(torch.multinomial(logp.detach().exp(), 1,
                                           generator=self._sampler(self.sample_gen)))
        trace = trace or _Trace()
        trace.logps.append(logp[action])
        return action, trace

    def predict(self, observation: Any, info: dict[str, Any], state: Any = None,
                deterministic: bool = False) -> tuple[int, Any]:
        if self.net is None:
            raise RuntimeError("the controller is built by learn() (or load()); call it first")
        with torch.no_grad():
            return self._act(observation, info, state, deterministic)

    def _update(self, batch: list[tuple[Episode, _Trace]]) -> None:
        assert self.net is not None and self.optimizer is not None
        rewards = torch.tensor([e.reward for e, _ in batch], dtype=torch.float32)
        if self.baseline is None:  # start at the first batch's mean (no initial bias)
            self.baseline = float(rewards.mean())
        logp = torch.stack([torch.stack(t.logps).sum() for _, t in batch])
        loss = -((rewards - self.baseline) * logp).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        for r in rewards.tolist():
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        self.updates += 1

    def _play_traced(self, env: gym.Env, first: tuple[Any, dict[str, Any]],
                     index: int) -> tuple[Episode, _Trace]:
        """One episode and the trace of its log-probabilities (with gradients)."""
        traces: list[_Trace] = []

        def choose(o: Any, i: dict[str, Any], s: Any) -> tuple[int, Any]:
            action, trace = self._act(o, i, s, False)
            if s is None:
                traces.append(trace)
            return action, trace

        episode = self.play_episode(env, choose=choose, first=first, index=index)
        return episode, traces[0]

    def learn(self, env: gym.Env | Sequence[gym.Env], total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None) -> EASAgent:
        """``env``: one env, or a list of copies whose episodes of a batch (EAS: 10 networks per
        update) are played and fine-tuned concurrently (see :mod:`nas_gym.agents.base`)."""
        total, cb = check_episodes(total_episodes), as_callback(callback)
        envs = as_envs(env)
        self._ensure(envs[0])
        self._tail = [int(v) for v in np.asarray(envs[0].observation_space.nvec).reshape(-1)[-2:]]
        self._stop = False
        batch: list[tuple[Episode, _Trace]] = []
        while self.num_episodes < total and not self._stop:
            k = self._batch_step(envs, self.batch_episodes, len(batch), total)
            for episode, trace in self._play_many(
                    envs, k, lambda e, first, index, _: self._play_traced(e, first, index)):
                self._record(episode, cb)
                batch.append((episode, trace))
            batch = self._close_batch(batch, total, cb)
        return self

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "slot_nvec": self.slot_nvec,
                "net": None if self.net is None else self.net.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "baseline": self.baseline, "updates": self.updates,
                "tail": self._tail, "sample_gen": self.sample_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["slot_nvec"] is not None:
            self._build(state["slot_nvec"])
            assert self.net is not None and self.optimizer is not None
            self.net.load_state_dict(state["net"])
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("tail") is not None:
            self._tail = list(state["tail"])
        self.baseline, self.updates = state["baseline"], int(state["updates"])
        self.sample_gen.set_state(state["sample_gen"])
