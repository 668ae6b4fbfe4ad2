"""REINFORCE with an LSTM controller: Zoph & Le 2017, ENAS (Pham et al. 2018), B-ENAS (Xu et al.
2019, §3.3 and Table 2), with the options of seed 001 (Mohandoss & Dwivedi) - SPEC §4.

The controller is a 2-layer LSTM run over the decisions of an episode. Every decision type
(``info["token_type"]``: ``"num_blocks"``, ``"input"``, ``"op"``, ``"filters"``, ...) has its own
embedding table (the input of the next step is the embedding of the action just taken) and its
own softmax head; types are discovered from ``info`` as they appear, so one agent drives any
nas_gym env. Logits are ``tanh_constant * tanh(logits / temperature)`` (ENAS: 2.5, 5.0), illegal
actions are masked out, parameters start uniform in ``[-0.1, 0.1]`` and Adam (1e-3) follows
B-ENAS eq. 5::

    grad J = 1/n sum_i grad log p(a_i) (R_i - b),    b <- decay * b + (1 - decay) * R

with ``R = reward + entropy_weight * H`` (B-ENAS Table 2: "add sample entropy to reward, weighted
by 0.1"). **Decision:** ``H`` is the *mean* entropy of the episode's decisions, not their sum: a sum
grows with the episode length and would reward B-ENAS's block count for its own sake.

Seed-001 options: ``prob_floor`` (add 0.05 to every legal probability and renormalise, §4.2),
``replay`` (every update also replays that many stored (architecture, reward) pairs, §3.5) and
``reward_lookup`` (an architecture seen before keeps the reward it first got, and is stored once,
§3.5; the env's evaluation store already spares its retraining).

Seed 001's own controller (§3.2, eq. 1-2 and 5) is ``preset="seed001"`` (:data:`PRESETS`): a one-layer ReLU RNN
``h_t = ReLU(w_2 embedding(A_{t-1}) + w_3 h_{t-1} + b_2)`` (``cell="rnn"``) of 35 units, a
"predefined random embedding of dimension n_h" per value (``fixed_embeddings=True``: drawn once,
never trained), a plain softmax head ``A_t ~ softmax(w_1 h_{t-1} + b_1)`` (``tanh_constant=None``)
and the plain REINFORCE of eq. 5, ``grad J = sum_t grad log P(a_t | a_{1:t-1}) R``
(``use_baseline=False``, ``entropy_weight=0``), with the probability floor 0.05 (§4.2), one new
architecture per update plus 10 replayed ones and the reward lookup (§3.5). **Decision:** the
paper's ``h_0`` is the state after one step on the learned start input (as for the LSTM).

Zoph & Le skip connections: a decision of type ``skip_token_type`` ("layer j feeds layer i",
actions 0 = no, 1 = yes) is scored by the anchor attention
``P(yes) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i))`` instead of a softmax head, where ``h_j``
is the controller state at the start of layer ``j`` (a layer starts at each decision of
``anchor_token_type``, by default the type of an episode's first decision) and the ``k``-th skip
decision of a run asks about layer ``k``.
"""

from __future__ import annotations

import inspect
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
from .reinforce_controller import Controller, anchor_plan

__all__ = ["CELLS", "PRESETS", "Controller", "ReinforceAgent", "anchor_plan"]


CELLS = ("lstm", "rnn")
#: Named option sets (``preset=NAME`` of :func:`agents.make_agent`); explicit keywords override.
PRESETS: dict[str, dict[str, Any]] = {
    "seed001": {"cell": "rnn", "hidden_size": 35, "num_layers": 1, "fixed_embeddings": True,
                "use_baseline": False, "entropy_weight": 0.0, "tanh_constant": None,
                "prob_floor": 0.05, "replay": 10, "reward_lookup": True, "batch_episodes": 1},
}


def _with_preset(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (ReinforceAgent's arguments) with the preset's values for those at default."""
    name = given["preset"]
    if name not in PRESETS:
        raise bad_value("preset", name, sorted(PRESETS))
    defaults = {k: p.default for k, p in inspect.signature(ReinforceAgent).parameters.items()}
    out = {**given, "preset": None}
    for k, v in PRESETS[name].items():
        if given[k] == defaults[k] and type(given[k]) is type(defaults[k]):
            out[k] = v
    return out


@dataclass
class _Context:
    """The controller's state inside one episode (``predict``'s recurrent state)."""

    x: torch.Tensor
    hc: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    types: list[str] = field(default_factory=list)
    outs: list[torch.Tensor] = field(default_factory=list)


class ReinforceAgent(Agent):
    """REINFORCE-LSTM controller (Zoph & Le / ENAS / B-ENAS).

    :param hidden_size: LSTM width (ENAS: 64; seed 001: 35).
    :param num_layers: LSTM layers (B-ENAS: 2).
    :param preset: None, or a name of :data:`PRESETS` (``"seed001"``: seed 001's controller,
        ``-A preset=seed001`` on the command line). Through :func:`agents.make_agent` every other
        keyword overrides the preset; constructed directly, the preset sets each option it names
        that is left at its default value.
    :param lr: Adam learning rate. Default 0.01, tuned for searches of ~100 evaluations (the
        papers' 1e-3 (ENAS / B-ENAS) barely moves the policy in 25 updates); tuned on
        NAS-Bench-Macro under ``flops <= 8e7`` (not the params budget the bench reports):
        regret@100 0.0046 vs 0.0089 with the papers' values, random 0.0118 (20 seeds).
    :param batch_episodes: episodes per policy update (Zoph & Le's m; the batch mean is eq. 5's 1/n).
    :param entropy_weight: weight of the sample entropy added to the reward. Default 1e-3 (B-ENAS:
        0.1, which outweighs accuracy differences of ~0.01 between architectures; ENAS: 1e-4).
    :param baseline_decay: decay of the exponential-moving-average baseline (ENAS: 0.95; default
        0.9, tuned with ``lr``: the baseline follows a policy that moves faster).
    :param init_range: parameters start uniform in ``[-init_range, init_range]`` (ENAS: 0.1).
    :param temperature: logits are divided by it before the tanh (ENAS: 5.0).
    :param tanh_constant: ... and multiplied by it after (ENAS: 2.5); None: no squash, a plain
        softmax of the head's logits (seed 001 eq. 1).
    :param prob_floor: seed 001 §4.2: add this to every legal probability and renormalise (0: off;
        the paper uses 0.05).
    :param replay: seed 001 §3.5: stored (architecture, reward) pairs replayed per update (0: off;
        the paper uses 10).
    :param replay_capacity: most recent episodes kept for replay.
    :param reward_lookup: seed 001 §3.5: a repeated architecture keeps its first reward and is
        stored for replay once.
    :param skip_token_type: decision type scored by the anchor attention (Zoph & Le skips).
    :param anchor_token_type: decision type that starts a layer (None: an episode's first type).
    :param grad_clip: max gradient norm of an update (None: off).
    :param seed: seeds initialisation, sampling and replay choices.
    :param cell: ``"lstm"`` (ENAS / B-ENAS, default) or ``"rnn"`` (seed 001 eq. 2: a ReLU RNN).
    :param fixed_embeddings: seed 001 §3.2's "predefined random embedding": the embeddings are
        drawn once (uniform in ``[-init_range, init_range]``) and never trained (default False).
    :param use_baseline: subtract the EMA baseline (default True); False is seed 001's plain
        REINFORCE, eq. 5: ``grad J = sum_t grad log P(a_t | a_{1:t-1}) R``.
    """

    name = "reinforce"
    concurrent_batches = True
    PRESETS = PRESETS

    def __init__(self, *, hidden_size: int = 64, num_layers: int = 2, lr: float = 1e-2,
                 batch_episodes: int = 4, entropy_weight: float = 1e-3,
                 baseline_decay: float = 0.9, init_range: float = 0.1, temperature: float = 5.0,
                 tanh_constant: float = 2.5, prob_floor: float = 0.0, replay: int = 0,
                 replay_capacity: int = 1000, reward_lookup: bool = False,
                 skip_token_type: str = "skip", anchor_token_type: str | None = None,
                 grad_clip: float | None = None, seed: int = 0, preset: str | None = None,
                 cell: str = "lstm", fixed_embeddings: bool = False,
                 use_baseline: bool = True) -> None:
        if preset is not None:  # the preset fills every option left at its default
            given = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
            self.__init__(**_with_preset(given))
            self.preset = preset
            return
        super().__init__(seed=seed)
        if cell not in CELLS:
            raise bad_value("cell", cell, CELLS)
        for arg, v in (("fixed_embeddings", fixed_embeddings), ("use_baseline", use_baseline)):
            if not isinstance(v, bool):
                raise bad_value(arg, v, "True or False")
        self.preset, self.cell = None, cell
        self.fixed_embeddings, self.use_baseline = fixed_embeddings, use_baseline
        for arg, v, low in (("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                            ("batch_episodes", batch_episodes, 1), ("replay", replay, 0),
                            ("replay_capacity", replay_capacity, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad_value(arg, v, f"an integer >= {low}")
        for arg, v, ok, what in (
                ("lr", lr, lr > 0, "a number > 0"),
                ("entropy_weight", entropy_weight, entropy_weight >= 0, "a number >= 0"),
                ("baseline_decay", baseline_decay, 0 <= baseline_decay < 1, "a number in [0, 1)"),
                ("init_range", init_range, init_range > 0, "a number > 0"),
                ("temperature", temperature, temperature > 0, "a number > 0"),
                ("tanh_constant", tanh_constant, tanh_constant is None or tanh_constant > 0,
                 "a number > 0 or None"),
                ("prob_floor", prob_floor, 0 <= prob_floor < 1, "a number in [0, 1)")):
            if not ok:
                raise bad_value(arg, v, what)
        if grad_clip is not None and not grad_clip > 0:
            raise bad_value("grad_clip", grad_clip, "a number > 0 or None")
        self.hidden_size, self.num_layers, self.lr = hidden_size, num_layers, float(lr)
        self.batch_episodes, self.entropy_weight = batch_episodes, float(entropy_weight)
        self.baseline_decay, self.init_range = float(baseline_decay), float(init_range)
        self.temperature = float(temperature)
        self.tanh_constant = None if tanh_constant is None else float(tanh_constant)
        self.prob_floor, self.replay, self.replay_capacity = float(prob_floor), replay, replay_capacity
        self.reward_lookup, self.grad_clip = bool(reward_lookup), grad_clip
        self.skip_token_type, self.anchor_token_type = skip_token_type, anchor_token_type
        self.controller: Controller | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.baseline: float | None = None
        self.buffer: list[Episode] = []
        self.lookup: dict[tuple[int, ...], float] = {}
        self.sample_gen = torch.Generator().manual_seed(self.seed)
        self.init_gen = torch.Generator().manual_seed(self.seed + 1)
        self.updates = 0

    # -- controller -----------------------------------------------------------------------------
    def setup(self, env: gym.Env) -> None:
        """Build the controller for ``env``'s action space (what :meth:`learn` does first; B-ENAS
        samples before it learns); checks the action count when already built."""
        n = check_discrete(env, self.name)
        if self.controller is None:
            self._build(n)
        elif self.controller.n_actions != n:
            raise bad_value("env.action_space.n", n,
                            f"{self.controller.n_actions} (the controller's action count)")

    def _build(self, n_actions: int) -> None:
        self.controller = Controller(n_actions, self.hidden_size, self.num_layers, self.cell,
                                     self.fixed_embeddings)
        self._init(list(self.controller.parameters()))
        self.optimizer = torch.optim.Adam(
            [p for p in self.controller.parameters() if p.requires_grad], lr=self.lr)

    def _init(self, params: list[nn.Parameter]) -> None:
        with torch.no_grad():
            for p in params:
                p.uniform_(-self.init_range, self.init_range, generator=self.init_gen)

    def _type_id(self, token_type: str) -> int:
        c = self.controller
        assert c is not None and self.optimizer is not None
        if token_type not in c.types:
            params = c.add_type(token_type)
            self._init(params)
            self.optimizer.add_param_group({"params": [p for p in params if p.requires_grad]})
        return c.types.index(token_type)

    def _log_probs(self, raw: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, log-probabilities)`` of masked, squashed, floored logits."""
        logits = raw if self.tanh_constant is None else \
            self.tanh_constant * torch.tanh(raw / self.temperature)
        p = F.softmax(logits.masked_fill(~masks, -1e9), dim=-1)
        if self.prob_floor > 0:
            p = (p + self.prob_floor * masks) / (1 + self.prob_floor * masks.sum(-1, keepdim=True))
        # the clamp keeps log(0) of illegal actions finite so no NaN reaches the gradient
        return p, torch.log(p.clamp_min(1e-30))

    def predict(self, observation: Any, info: dict[str, Any], state: _Context | None = None,
                deterministic: bool = False) -> tuple[int, _Context]:
        c = self.controller
        if c is None:
            raise RuntimeError("the controller is built by learn() (or load()); call it first")
        ctx = state if state is not None else _Context(x=c.start.detach())
        mask = torch.as_tensor(np.asarray(info["action_mask"]), dtype=torch.bool).unsqueeze(0)
        token_type = str(info.get("token_type", "action"))
        type_id = self._type_id(token_type)
        with torch.no_grad():
            h, ctx.hc = c.step(ctx.x.view(1, -1), ctx.hc)
            ctx.types.append(token_type)
            ctx.outs.append(h[0])
            anchor = anchor_plan(ctx.types, self.skip_token_type, self.anchor_token_type)[-1] \
                if token_type == self.skip_token_type else -1
            if anchor >= 0:  # the same computation as raw_logits, for one decision
                raw = c.raw_logits(h, torch.tensor([type_id]), ctx.outs[anchor].unsqueeze(0),
                                   torch.tensor([True]))
            else:
                raw = c.heads[type_id](h)
            p, _ = self._log_probs(raw, mask)
            if deterministic:
                action = int(p[0].argmax())
            else:
                action = int(torch.multinomial(p[0], 1,
                                               generator=self._sampler(self.sample_gen)))
            ctx.x = c.embeddings[type_id](torch.tensor([action]))
        return action, ctx

    def evaluate_episodes(self, episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(sum of log-probabilities, mean entropy)`` of each episode, with
        gradients: one batched LSTM pass over the padded decision sequences."""
        c = self.controller
        assert c is not None
        B, T, H = len(episodes), max(len(e.actions) for e in episodes), self.hidden_size
        type_ids = torch.zeros(B, T, dtype=torch.long)
        actions = torch.zeros(B, T, dtype=torch.long)
        masks = torch.zeros(B, T, c.n_actions, dtype=torch.bool)
        valid = torch.zeros(B, T, dtype=torch.bool)
        anchor = torch.full((B, T), -1, dtype=torch.long)
        for b, ep in enumerate(episodes):
            n = len(ep.actions)
            type_ids[b, :n] = torch.tensor([self._type_id(t) for t in ep.token_types])
            actions[b, :n] = torch.tensor(ep.actions)
            masks[b, :n] = torch.as_tensor(np.stack(ep.masks)[:, : c.n_actions]).bool()
            valid[b, :n] = True
            anchor[b, :n] = torch.tensor(anchor_plan(ep.token_types, self.skip_token_type,
                                                     self.anchor_token_type))
        # inputs: the start vector, then the embedding of the previous decision's action
        x = c.start.expand(B * T, H)
        prev_type, prev_action = type_ids[:, :-1].reshape(-1), actions[:, :-1].reshape(-1)
        prev_valid = valid[:, :-1].reshape(-1)
        rows = (torch.arange(B).unsqueeze(1) * T + torch.arange(1, T).unsqueeze(0)).reshape(-1)
        for k in range(len(c.types)):
            sel = prev_valid & (prev_type == k)
            if sel.any():
                x = x.index_put((rows[sel],), c.embeddings[k](prev_action[sel]))
        out, _ = c.core(x.reshape(B, T, H))
        flat = out.reshape(B * T, H)
        pos = valid.reshape(-1).nonzero().squeeze(1)
        anc = anchor.reshape(-1)[pos]
        has_anchor = anc >= 0
        anchor_rows = (pos // T) * T + anc.clamp_min(0)
        raw = c.raw_logits(flat[pos], type_ids.reshape(-1)[pos], flat[anchor_rows], has_anchor)
        m = masks.reshape(B * T, -1)[pos]
        p, logp = self._log_probs(raw, m)
        chosen = logp.gather(1, actions.reshape(-1)[pos].unsqueeze(1)).squeeze(1)
        entropy = -(p * logp).sum(-1)
        episode_of = pos // T
        logp_sum = torch.zeros(B).index_add(0, episode_of, chosen)
        ent_mean = torch.zeros(B).index_add(0, episode_of, entropy) / valid.sum(1).clamp_min(1)
        return logp_sum, ent_mean

    # -- learning -------------------------------------------------------------------------------
    def _learning_reward(self, episode: Episode) -> float:
        if not self.reward_lookup:
            return float(episode.reward)
        return self.lookup.setdefault(tuple(episode.actions), float(episode.reward))

    def _remember(self, episode: Episode) -> None:
        if self.reward_lookup and any(e.actions == episode.actions for e in self.buffer):
            return
        self.buffer.append(episode)
        del self.buffer[: -self.replay_capacity]

    def _update(self, batch: list[Episode]) -> None:
        assert self.controller is not None and self.optimizer is not None
        rewards = [self._learning_reward(e) for e in batch]
        replayed: list[Episode] = []
        if self.replay and self.buffer:
            k = min(self.replay, len(self.buffer))
            replayed = [self.buffer[i] for i in self.rng.choice(len(self.buffer), k, replace=False)]
            rewards += [self._learning_reward(e) for e in replayed]
        logp, entropy = self.evaluate_episodes(batch + replayed)
        returns = torch.tensor(rewards) + self.entropy_weight * entropy.detach()
        fresh = returns[: len(batch)]
        if self.baseline is None and self.use_baseline:  # the first batch's mean, not 0
            self.baseline = float(fresh.mean())
        loss = -((returns - (self.baseline or 0.0)) * logp).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.controller.parameters(), self.grad_clip)
        self.optimizer.step()
        for r in fresh.tolist() if self.baseline is not None else ():
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * r
        for e in batch:
            self._remember(e)
        self.updates += 1

    def learn(self, env: gym.Env | Sequence[gym.Env], total_episodes: int,
              callback: Callback | Callable[[Episode], bool | None] | None = None,
              ) -> ReinforceAgent:
        """``env``: one env, or a list of copies whose episodes of a batch are played (and their
        children trained) concurrently (see :mod:`nas_gym.agents.base`)."""
        total, cb = check_episodes(total_episodes), as_callback(callback)
        envs = as_envs(env)
        self.setup(envs[0])
        self._stop = False
        batch: list[Episode] = []
        while self.num_episodes < total and not self._stop:
            k = self._batch_step(envs, self.batch_episodes, len(batch), total)
            for episode in self._play_many(
                    envs, k, lambda e, first, index, _: self.play_episode(e, first=first,
                                                                          index=index)):
                self._record(episode, cb)
                batch.append(episode)
            batch = self._close_batch(batch, total, cb)
        return self

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        c = self.controller
        return {
            **super().state_dict(),
            "n_actions": None if c is None else c.n_actions,
            "types": [] if c is None else list(c.types),
            "controller": None if c is None else c.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "baseline": self.baseline, "updates": self.updates,
            "sample_gen": self.sample_gen.get_state(), "init_gen": self.init_gen.get_state(),
            "buffer": [e.to_state() for e in self.buffer],
            "lookup": [[list(k), v] for k, v in self.lookup.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["n_actions"] is not None:
            self._build(int(state["n_actions"]))
            for t in state["types"]:
                self._type_id(t)
            assert self.controller is not None and self.optimizer is not None
            self.controller.load_state_dict(state["controller"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.baseline, self.updates = state["baseline"], int(state["updates"])
        self.sample_gen.set_state(state["sample_gen"])
        self.init_gen.set_state(state["init_gen"])
        self.buffer = [Episode.from_state(e) for e in state["buffer"]]
        self.lookup = {tuple(k): float(v) for k, v in state["lookup"]}
