"""PNAS's accuracy predictor (Liu et al. 2018, §3.3; lecture 003 "Performance Prediction with
Surrogate Model"): an LSTM over an architecture's token sequence, an ensemble of 5.

- Input: one embedding table per token type (the paper embeds inputs and operations with separate
  tables); step ``t`` feeds ``embedding[type_t](action_t)`` to a 1-layer LSTM; the hidden state at
  the last token goes through a linear layer to the predicted score.
- Regression loss: L1 (the paper's) on standardised targets (the reward; the mean and standard
  deviation of all targets seen are kept, so predictions come back in reward units).
- Ensemble: sample ``i`` belongs to fold ``i % 5``; model ``m`` is trained on every fold but ``m``
  (the lecture: "split sample into 5 sets, train a predictor using 4/5"); the ensemble mean ranks.
- Like PNAS, the models are fitted once and then *fine-tuned* on all data after each round.

Everything in :meth:`Surrogate.state_dict` is tensors, numbers, strings and lists of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from nas_gym.errors import bad_value


class SequenceRegressor(nn.Module):
    """Per-type embeddings -> 1-layer LSTM -> linear head at the last token."""

    def __init__(self, n_actions: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.n_actions, self.embed = n_actions, embed
        self.embeddings = nn.ModuleList()  # one table per token type
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def add_type(self) -> list[nn.Parameter]:
        self.embeddings.append(nn.Embedding(self.n_actions, self.embed))
        return list(self.embeddings[-1].parameters())

    def forward(self, types: torch.Tensor, actions: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """``types`` / ``actions``: ``[B, T]`` (type ids, actions; padding past ``lengths``) ->
        ``[B]`` predictions."""
        # one lookup in the per-type tables laid end to end (row = type * n_actions + action)
        table = torch.cat([emb.weight for emb in self.embeddings])
        out, _ = self.lstm(nn.functional.embedding(types * self.n_actions + actions, table))
        return self.head(out[torch.arange(out.shape[0]), lengths - 1]).squeeze(1)


class Surrogate:
    """An ensemble of ``members`` :class:`SequenceRegressor` on disjoint folds.

    :param n_actions: the env's action count.
    :param members: ensemble size (PNAS: 5).
    :param embed: embedding size (PNAS: 100; sized here for small spaces).
    :param hidden: LSTM size (PNAS: 100).
    :param lr: Adam learning rate.
    :param steps: gradient steps per member and fit (a fit after each round fine-tunes).
    :param batch_size: minibatch size of a member's step.
    :param seed: seeds initialisation and minibatch order (``torch.Generator``).
    """

    def __init__(self, n_actions: int, *, members: int = 5, embed: int = 32, hidden: int = 64,
                 lr: float = 0.005, steps: int = 20, batch_size: int = 32, seed: int = 0) -> None:
        for arg, v in (("members", members), ("embed", embed), ("hidden", hidden),
                       ("steps", steps), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad_value(f"surrogate {arg}", v, "an integer >= 1")
        if not lr > 0:
            raise bad_value("surrogate lr", lr, "a number > 0")
        self.n_actions, self.steps, self.batch_size = n_actions, steps, batch_size
        self.types: list[str] = []
        self.gen = torch.Generator().manual_seed(seed)
        self._init_gen = torch.Generator().manual_seed(seed + 1)
        self.models = [SequenceRegressor(n_actions, embed, hidden) for _ in range(members)]
        for m in self.models:  # re-initialised from our own generator
            self._init(list(m.parameters()))
        self.optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m in self.models]
        self.mean, self.std = 0.0, 1.0
        self.fits = 0

    @property
    def members(self) -> int:
        return len(self.models)

    def _init(self, params: list[nn.Parameter]) -> None:
        """Uniform in [-0.1, 0.1] from the surrogate's own generator (no global random state)."""
        with torch.no_grad():
            for p in params:
                p.uniform_(-0.1, 0.1, generator=self._init_gen)

    def type_id(self, name: str) -> int:
        if name not in self.types:
            self.types.append(name)
            for model, opt in zip(self.models, self.optimizers, strict=True):
                params = model.add_type()
                self._init(params)
                opt.add_param_group({"params": params})
        return self.types.index(name)

    def encode(self, seqs: list[tuple[list[str], list[int]]]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[(types, actions)]`` -> padded ``(type ids, actions, lengths)``."""
        T = max(len(a) for _, a in seqs)
        types = torch.zeros(len(seqs), T, dtype=torch.long)
        actions = torch.zeros(len(seqs), T, dtype=torch.long)
        for b, (ty, ac) in enumerate(seqs):
            types[b, : len(ac)] = torch.tensor([self.type_id(t) for t in ty])
            actions[b, : len(ac)] = torch.tensor(ac)
        return types, actions, torch.tensor([len(a) for _, a in seqs])

    def fit(self, seqs: list[tuple[list[str], list[int]]], targets: list[float]) -> None:
        """Fine-tune every member on its folds of all the data: sample ``i`` is in fold
        ``i % members`` and member ``m`` trains on every fold but ``m`` (L1 loss)."""
        if not seqs:
            return
        y = np.asarray(targets, dtype=np.float64)
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        target = torch.tensor((y - self.mean) / self.std, dtype=torch.float32)
        types, actions, lengths = self.encode(seqs)
        fold = torch.arange(len(seqs)) % self.members
        for m, (model, opt) in enumerate(zip(self.models, self.optimizers, strict=True)):
            rows = (fold != m).nonzero().squeeze(1)
            if len(rows) == 0:  # fewer samples than members: this one sees them all
                rows = torch.arange(len(seqs))
            model.train()
            for _ in range(self.steps):
                pick = rows[torch.randperm(len(rows), generator=self.gen)[: self.batch_size]]
                loss = (model(types[pick], actions[pick], lengths[pick]) - target[pick]).abs()
                opt.zero_grad(set_to_none=True)
                loss.mean().backward()
                opt.step()
        self.fits += 1

    def predict_members(self, seqs: list[tuple[list[str], list[int]]]) -> np.ndarray:
        """Every member's prediction, in target units (``[members, len(seqs)]``)."""
        types, actions, lengths = self.encode(seqs)
        with torch.no_grad():
            pred = torch.stack([m.eval()(types, actions, lengths) for m in self.models])
        return pred.double().numpy() * self.std + self.mean

    def predict(self, seqs: list[tuple[list[str], list[int]]]) -> np.ndarray:
        """The ensemble mean, in target units (``[len(seqs)]``)."""
        if not seqs:
            return np.zeros(0)
        return self.predict_members(seqs).mean(0)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"types": list(self.types), "models": [m.state_dict() for m in self.models],
                "optimizers": [o.state_dict() for o in self.optimizers], "mean": self.mean, "std": self.std,
                "fits": self.fits, "gen": self.gen.get_state(),
                "init_gen": self._init_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t in state["types"]:
            self.type_id(t)
        for model, opt, ms, os_ in zip(self.models, self.optimizers, state["models"],
                                       state["optimizers"], strict=True):
            model.load_state_dict(ms)
            opt.load_state_dict(os_)
        self.mean, self.std, self.fits = float(state["mean"]), float(state["std"]), \
            int(state["fits"])
        self.gen.set_state(state["gen"])
        self._init_gen.set_state(state["init_gen"])
