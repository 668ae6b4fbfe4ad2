"""The base of the ENAS / B-ENAS super-networks Omega (SPEC §5, ``evaluator="shared"``).

"Prepare a gigantic network that can cover the entire sampled network ... all sampled networks
share the same weight" (ENAS, seed 003); B-ENAS §3.1 trains ``omega in Omega`` by Monte Carlo over
sampled children (eq. 1, M = 1). A :class:`SuperNet` holds one weight per decision a child can take
at one position; :meth:`SuperNet.child` gives a child that runs on its slice: a
:class:`SharedChild` whose ``parameters()`` are the very Parameter objects of its path, so a step
through it changes nothing else (with ``zero_grad(set_to_none=True)`` the optimizer skips every
parameter without a gradient: no momentum, no weight decay off the path).

The super-networks of the spaces are :class:`~nas_gym.evaluators.supernet_cell.CellSuperNet` and
:class:`~nas_gym.evaluators.supernet_macro.MacroSuperNet`; :func:`nas_gym.evaluators.supernet.build_supernet` builds one.

**BatchNorm.** Every BN normalises with the statistics of the current batch, in training and in
scoring, and keeps no running statistics: a shared op sees the inputs of every child that uses it,
so running averages would mix them (ENAS scores its children with BN in training mode).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..arch.base import Architecture

FLOAT_BYTES = 4  # float32
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_stats_only(module: nn.Module) -> nn.Module:
    """Make every BN of ``module`` normalise with batch statistics always (see the module doc)."""
    for m in module.modules():
        if isinstance(m, BATCH_NORMS):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return module


def unique_parameters(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """``params`` without repeats (by identity), in first-seen order."""
    out: dict[int, nn.Parameter] = {}
    for p in params:
        out.setdefault(id(p), p)
    return list(out.values())


class SuperNet(nn.Module):
    """Base of the super-networks: ``forward(x, arch)`` runs child ``arch`` on its weights."""

    kind = ""

    def check(self, arch: Architecture) -> None:
        """Raise :class:`ArchitectureError` when ``arch`` is outside this super-network."""

    def path_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        """The Parameters child ``arch`` reads (the same objects as in the super-network)."""
        raise NotImplementedError

    def activation_bytes(self, batch: int) -> int:
        """Rough upper bound on the activations (and their gradients) of one training batch."""
        raise NotImplementedError

    def child(self, arch: Architecture) -> SharedChild:
        self.check(arch)
        return SharedChild(self, arch)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class SharedChild(nn.Module):
    """A sampled child on the super-network's slice. Its registered parameters are exactly the
    Parameter objects of its path, so ``child.parameters()`` is what a TrainChild step touches."""

    def __init__(self, supernet: SuperNet, arch: Architecture) -> None:
        super().__init__()
        self.__dict__["supernet"] = supernet  # a plain attribute: Omega is not this child's
        self.architecture = arch
        self.path = nn.ParameterList(supernet.path_parameters(arch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.architecture)
