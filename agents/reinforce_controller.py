"""The recurrent policy of :class:`nas_gym.agents.reinforce.ReinforceAgent` (Zoph & Le, ENAS, B-ENAS, seed 001)
and the anchor plan of Zoph & Le's skip attention."""

from __future__ import annotations

import torch
from torch import nn


def anchor_plan(types: list[str], skip_type: str, start_type: str | None = None) -> list[int]:
    """For every decision, the position of the anchor it attends to (-1: none).

    A layer starts at each decision of ``start_type`` (default: ``types[0]``); in a run of skip
    decisions the ``k``-th one refers to layer ``k`` (Zoph & Le: one decision per earlier layer).
    """
    start = start_type if start_type is not None else (types[0] if types else None)
    starts: list[int] = []
    plan, run = [], 0
    for t, typ in enumerate(types):
        if typ == skip_type:
            plan.append(starts[run] if run < len(starts) else -1)
            run += 1
            continue
        run = 0
        if typ == start:
            starts.append(t)
        plan.append(-1)
    return plan


class Controller(nn.Module):
    """The recurrent policy: a learned start input, per-type embeddings and heads, skip attention.
    ``cell="lstm"`` (ENAS) or ``"rnn"`` (seed 001 eq. 2: ReLU RNN); ``fixed_embeddings``: the
    embeddings are random and never trained (seed 001 §3.2)."""

    def __init__(self, n_actions: int, hidden_size: int, num_layers: int, cell: str = "lstm",
                 fixed_embeddings: bool = False) -> None:
        super().__init__()
        self.n_actions, self.hidden_size = n_actions, hidden_size
        self.cell, self.fixed_embeddings = cell, fixed_embeddings
        self.types: list[str] = []
        self.start = nn.Parameter(torch.zeros(1, hidden_size))  # ENAS g_emb
        if cell == "rnn":
            self.rnn = nn.RNN(hidden_size, hidden_size, num_layers=num_layers,
                              nonlinearity="relu", batch_first=True)
        else:  # the attribute keeps its name so LSTM checkpoints load as before
            self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.embeddings = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.w_prev = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_curr = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    @property
    def core(self) -> nn.LSTM | nn.RNN:
        """The recurrent module (batched over sequences)."""
        return self.rnn if self.cell == "rnn" else self.lstm

    def add_type(self, name: str) -> list[nn.Parameter]:
        self.types.append(name)
        self.embeddings.append(nn.Embedding(self.n_actions, self.hidden_size))
        self.embeddings[-1].weight.requires_grad_(not self.fixed_embeddings)
        self.heads.append(nn.Linear(self.hidden_size, self.n_actions))
        return [*self.embeddings[-1].parameters(), *self.heads[-1].parameters()]

    def step(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]] | None
             ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One recurrent step ``[1, H] -> [1, H]`` with the weights of ``self.core``
        (``lstm_cell`` / ``rnn_relu_cell`` per layer: the same function as the batched module,
        ~3x faster for one token). An RNN layer's state is ``(h, h)``."""
        core = self.core
        if state is None:
            zero = x.new_zeros(1, self.hidden_size)
            state = [(zero, zero)] * core.num_layers
        new = []
        for layer, hc in enumerate(state):
            weights = [getattr(core, f"{w}_l{layer}")
                       for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if self.cell == "rnn":
                h = torch.rnn_relu_cell(x, hc[0], *weights)
                new.append((h, h))
            else:
                new.append(torch.lstm_cell(x, hc, *weights))
            x = new[-1][0]
        return x, new

    def raw_logits(self, h: torch.Tensor, type_ids: torch.Tensor,
                   anchors: torch.Tensor | None, has_anchor: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, n_actions]`` of ``N`` decisions (before the tanh squash and the mask)."""
        logits = h.new_zeros(h.shape[0], self.n_actions)
        for k in torch.unique(type_ids).tolist():
            sel = (type_ids == k) & ~has_anchor
            if sel.any():
                logits = logits.index_put((sel.nonzero().squeeze(1),), self.heads[k](h[sel]))
        if anchors is not None and has_anchor.any():
            s = self.v(torch.tanh(self.w_prev(anchors[has_anchor]) + self.w_curr(h[has_anchor])))
            skip = torch.cat([torch.zeros_like(s), s, s.new_zeros(s.shape[0], self.n_actions - 2)],
                             dim=1)[:, : self.n_actions]
            logits = logits.index_put((has_anchor.nonzero().squeeze(1),), skip)
        return logits
