"""Builder of :class:`~nas_gym.arch.cell.CellArchitecture` networks (B-ENAS Fig. 3)."""

from __future__ import annotations

import torch
from torch import nn

from ..arch.cell import Cell, CellArchitecture
from .builder import fresh, register_builder
from .cell_ops import OPS, FactorizedReduce, ReLUConvBN


def drop_path(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Zero whole samples of a path with probability ``p``, scale the rest by ``1 / (1 - p)``."""
    keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
    keep.bernoulli_(1.0 - p, generator=gen)
    return x * keep / (1.0 - p)


class CellModule(nn.Module):
    """One cell. ``reduction``: ops reading the cell inputs use stride 2 (identity becomes a
    factorized reduce). ``reduce_prev``: the k-2 input is twice the size of k-1 and is reduced.
    ``drop_path_prob``: ScheduledDropPath (NASNet) while training - each path but an identity is
    dropped per sample with this probability; set by :func:`nas_gym.training.train`."""

    def __init__(self, cell: Cell, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduce_prev: bool) -> None:
        super().__init__()
        self.cell = cell
        self.pre0 = fresh(FactorizedReduce, c_pp, c) if reduce_prev else fresh(ReLUConvBN, c_pp, c, 1)
        self.pre1 = fresh(ReLUConvBN, c_p, c, 1)
        self.ops = nn.ModuleList()
        for b in cell.blocks:
            for ind, op in ((b.in1, b.op1), (b.in2, b.op2)):
                stride = 2 if reduction and ind < 2 else 1
                self.ops.append(fresh(OPS.get(op), c, stride))
        self.loose = cell.loose_ends()
        self.project = fresh(ReLUConvBN, c * len(self.loose), c, 1)
        self.droppable = [op != "identity" for b in cell.blocks for op in (b.op1, b.op2)]
        self.concat = nn.ModuleDict({str(i): fresh(ReLUConvBN, 2 * c, c, 1)  # NASNet's concat combine
                                     for i, b in enumerate(cell.blocks) if b.combine == "concat"})
        self.drop_path_prob, self.drop_path_gen = 0.0, None

    def _path(self, k: int, x: torch.Tensor) -> torch.Tensor:
        out = self.ops[k](x)
        if self.training and self.drop_path_prob > 0 and self.droppable[k]:
            out = drop_path(out, self.drop_path_prob, self.drop_path_gen)
        return out

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i, b in enumerate(self.cell.blocks):
            x, y = self._path(2 * i, states[b.in1]), self._path(2 * i + 1, states[b.in2])
            states.append(self.concat[str(i)](torch.cat([x, y], 1)) if b.combine == "concat"
                          else x + y)
        return self.project(torch.cat([states[j + 2] for j in self.loose], dim=1))


def _stem(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))


class CellNetwork(nn.Module):
    def __init__(self, arch: CellArchitecture, input_shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        c = arch.channels
        self.stem = fresh(_stem, input_shape[0], c)
        self.cells = nn.ModuleList()
        c_pp, c_p = c, c
        reduce_prev = False
        n = arch.n_normal
        for stage in range(3):
            if stage > 0:  # reduction cell between stages
                c *= 2
                cell = arch.reduction or arch.normal
                self.cells.append(CellModule(cell, c_pp, c_p, c, True, reduce_prev))
                c_pp, c_p, reduce_prev = c_p, c, True
            for _ in range(n):
                self.cells.append(CellModule(arch.normal, c_pp, c_p, c, False, reduce_prev))
                c_pp, c_p, reduce_prev = c_p, c, False
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = fresh(nn.Linear, c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(self.pool(torch.relu(s1)), 1))


@register_builder("cell")
def build_cell_network(arch: CellArchitecture, input_shape: tuple[int, int, int],
                       num_classes: int) -> nn.Module:
    return CellNetwork(arch, input_shape, num_classes)
