"""The super-network of the cell space (SPEC §5, ``evaluator="shared"``); the base class and how
a child shares its weights: :mod:`nas_gym.evaluators.supernet_base`.

**Cells** (:class:`CellSuperNet`, SPEC §1.1, B-ENAS Fig. 3). Same macro layout as
:class:`~nas_gym.models.cell.CellNetwork` (stem, N normal, reduction, N normal, reduction, N
normal, pool, linear), so each cell position has fixed input widths and sizes. Per position:

- the k-2 / k-1 preprocessing (``pre0``: a factorized reduce after a reduction, else a 1x1
  ReLU-conv-BN; ``pre1``: 1x1 ReLU-conv-BN) is shared by every child: every child uses it;
- one op module per (block, slot, op), built by :data:`nas_gym.models.cell_ops.OPS`, for blocks
  ``0 .. max_blocks - 1`` (B-ENAS samples the block count). At reduction positions an op reading
  a cell input has stride 2 and one reading a block stride 1: both forms share the weights (a
  stride is not a weight), except identity, whose stride-2 form is a factorized reduce.
  ``per_input=True`` keys the ops by input index too, as ENAS's code does (``w[prev_cell]``);
  on digits it trained no faster and holds ~4.5x the parameters, so it is an option;
- the 1x1 projection of the loose ends is **sliced by block**: one ``(c, c, 1, 1)`` Parameter per
  block (ENAS gathers its output weight by node index the same way); a child whose loose ends are
  blocks ``J`` convolves their concatenation with the concatenation of those slices, which is
  exactly the child's ``ReLUConvBN(c * |J|, c, 1)``. Per-block Parameters, not slices of one
  tensor, so an unused block's slice keeps no momentum and no weight decay. The projection's BN is
  shared by the position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..arch.base import Architecture
from ..arch.cell import ENAS_OPS, OP_SETS, Cell, CellArchitecture
from ..errors import ArchitectureError
from ..models.cell_ops import OPS, FactorizedReduce, ReLUConvBN
from .supernet_base import FLOAT_BYTES, SuperNet, unique_parameters


def _op_key(block: int, slot: int, op: str, source: str) -> str:
    return f"b{block}_s{slot}_{op}_{source}"


def _tie(dst: nn.Module, src: nn.Module) -> None:
    """Make ``dst`` use the Parameter objects of ``src`` wherever the two have the same module
    structure (a sep conv at stride 2 and at stride 1); a factorized reduce keeps its own."""
    mods = dict(src.named_modules())
    for name, m in dst.named_modules():
        s = mods.get(name)
        if s is None or type(s) is not type(m):
            continue
        theirs = dict(s.named_parameters(recurse=False))
        for pname, p in list(m.named_parameters(recurse=False)):
            q = theirs.get(pname)
            if q is not None and q.shape == p.shape:
                setattr(m, pname, q)  # registers the shared Parameter under the same name


class CellPosition(nn.Module):
    """Every choice of one cell position (see the module doc)."""

    def __init__(self, ops: Sequence[str], max_blocks: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduce_prev: bool, per_input: bool = False) -> None:
        super().__init__()
        self.reduction, self.per_input = reduction, per_input
        self.pre0 = FactorizedReduce(c_pp, c) if reduce_prev else ReLUConvBN(c_pp, c, 1)
        self.pre1 = ReLUConvBN(c_p, c, 1)
        self.ops = nn.ModuleDict({_op_key(i, s, op, self._source(j)): OPS.get(op)(c, self._stride(j))
                                  for i in range(max_blocks) for s in (0, 1) for op in ops
                                  for j in self._inputs(i)})
        if not per_input and reduction:  # one weight per op whatever its stride
            for i in range(1, max_blocks):
                for s in (0, 1):
                    for op in ops:
                        _tie(self.ops[_op_key(i, s, op, "x2")], self.ops[_op_key(i, s, op, "x1")])
        self.project = nn.ParameterList(nn.Parameter(torch.empty(c, c, 1, 1))
                                        for _ in range(max_blocks))
        self.project_bn = nn.BatchNorm2d(c)

    def _stride(self, ind: int) -> int:
        return 2 if self.reduction and ind < 2 else 1  # reduction: ops on the cell inputs

    def _source(self, ind: int) -> str:
        return f"in{ind}" if self.per_input else f"x{self._stride(ind)}"

    def _inputs(self, block: int) -> list[int]:
        """Input indices whose op modules block ``block`` holds (one per distinct source key)."""
        return list({self._source(j): j for j in range(block + 2)}.values())

    def _used(self, cell: Cell) -> list[nn.Module]:
        return [self.ops[_op_key(i, slot, op, self._source(ind))]
                for i, b in enumerate(cell.blocks)
                for slot, (ind, op) in enumerate(((b.in1, b.op1), (b.in2, b.op2)))]

    def path(self, cell: Cell) -> list[nn.Parameter]:
        mods = [self.pre0, self.pre1, *self._used(cell), self.project_bn]
        return [*(p for m in mods for p in m.parameters()),
                *(self.project[j] for j in cell.loose_ends())]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, cell: Cell) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        ops = self._used(cell)
        for i, b in enumerate(cell.blocks):
            states.append(ops[2 * i](states[b.in1]) + ops[2 * i + 1](states[b.in2]))
        loose = cell.loose_ends()
        x = torch.cat([states[j + 2] for j in loose], dim=1) if len(loose) > 1 else states[loose[0] + 2]
        w = torch.cat([self.project[j] for j in loose], dim=1)
        return self.project_bn(F.conv2d(F.relu(x), w))


class CellSuperNet(SuperNet):
    """Omega of the cell space: every op of every (position, block, slot) with its own weights.

    :param ops: the op set (a name of ``OP_SETS`` or op names).
    :param max_blocks: blocks per cell the children may use.
    :param n_normal, channels: the macro shape (the searched model: N = 1).
    :param per_input: one weight per (block, slot, op) whatever the input (default), or per
        (block, slot, op, input index) as ENAS's code (see the module doc).
    """

    kind = "cell"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *,
                 ops: str | Sequence[str] = ENAS_OPS, max_blocks: int = 7, n_normal: int = 1,
                 channels: int = 8, per_input: bool = False) -> None:
        super().__init__()
        self.ops = tuple(OP_SETS[ops] if isinstance(ops, str) and ops in OP_SETS else ops)
        for op in self.ops:
            OPS.get(op, "ops")
        self.max_blocks, self.n_normal, self.channels = max_blocks, n_normal, channels
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))
        self.cells = nn.ModuleList()
        self.sizes: list[tuple[int, int, int]] = []  # (channels, height, width) of each cell
        c_pp = c_p = c
        reduce_prev, h, w = False, input_shape[1], input_shape[2]
        for stage in range(3):
            for k in range(n_normal + (stage > 0)):
                red = stage > 0 and k == 0
                if red:
                    c, h, w = 2 * c, math.ceil(h / 2), math.ceil(w / 2)
                self.cells.append(CellPosition(self.ops, max_blocks, c_pp, c_p, c, red,
                                               reduce_prev, per_input))
                self.sizes.append((c, h, w))
                c_pp, c_p, reduce_prev = c_p, c, red
        self.classifier = nn.Linear(c_p, num_classes)

    def _cell(self, arch: CellArchitecture, position: int) -> Cell:
        cp = self.cells[position]
        return arch.reduction if cp.reduction and arch.reduction is not None else arch.normal

    def check(self, arch: Architecture) -> None:
        if not isinstance(arch, CellArchitecture):
            raise ArchitectureError(f"a {type(arch).__name__} cannot run on a cell super-network")
        if (arch.n_normal, arch.channels) != (self.n_normal, self.channels):
            raise ArchitectureError(
                f"architecture n_normal={arch.n_normal}, channels={arch.channels}; the "
                f"super-network was built for n_normal={self.n_normal}, channels={self.channels}")
        for cell in (arch.normal, arch.reduction):
            if cell is None:
                continue
            if len(cell.blocks) > self.max_blocks:
                raise ArchitectureError(f"a cell of {len(cell.blocks)} blocks; the super-network "
                                        f"holds {self.max_blocks} (evaluator_kwargs max_blocks)")
            if any(b.combine != "add" for b in cell.blocks):
                raise ArchitectureError("a block with combine='concat': the super-network adds "
                                        "a block's two paths (ENAS); train it with "
                                        "evaluator='train'")
            bad = sorted({op for b in cell.blocks for op in (b.op1, b.op2)} - set(self.ops))
            if bad:
                raise ArchitectureError(f"ops {bad} are not in the super-network's ops "
                                        f"{self.ops} (evaluator_kwargs ops)")

    def path_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        assert isinstance(arch, CellArchitecture)
        params = [*self.stem.parameters()]
        for p, cp in enumerate(self.cells):
            params += cp.path(self._cell(arch, p))
        return unique_parameters([*params, *self.classifier.parameters()])

    def forward(self, x: torch.Tensor, arch: CellArchitecture) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for p, cp in enumerate(self.cells):
            s0, s1 = s1, cp(s0, s1, self._cell(arch, p))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(s1), 1), 1))

    def activation_bytes(self, batch: int) -> int:
        # per position: 2 preprocessed inputs, per block 2 ops of <= 9 maps (sep conv) + the sum,
        # the projection's 3; x2 for the gradients of the backward pass
        maps = 2 + self.max_blocks * 19 + 3
        return 2 * FLOAT_BYTES * batch * sum(maps * c * h * w for c, h, w in self.sizes)
