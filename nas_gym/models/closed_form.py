"""Pre-training costs of an architecture in closed form, without building a module.

:func:`nas_gym.costs.static_costs` counts the costs of a module with a hook on every leaf module
during one batch-1 forward pass: FLOPs by ``FlopCounterMode``'s rule for the op the module runs
(2 per multiply-accumulate of convolutions and linear layers), parameter bytes, the output bytes of
every leaf (``memory_bytes``) and the bytes every leaf reads and writes (``compute_intensity``).
A closed form adds up the same numbers leaf by leaf from the architecture value (a
:class:`CostTally` per network), in microseconds instead of a model build and a forward pass.

A space registers its closed form with ``@register_costs(kind)``:
``fn(arch, input_shape, num_classes) -> dict | None`` (None: this architecture is not covered,
e.g. an op registered by a user; the caller then counts on a built module). Each closed form
follows its builder line by line; ``tests/test_costs.py`` checks the equality with
``FlopCounterMode`` on every op of every space: change both together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..arch.cell import Cell, CellArchitecture
from ..registry import Registry

BYTES = 4  # float32

CostForm = Callable[[Any, tuple[int, int, int], int], "dict[str, float] | None"]
#: architecture kind -> closed-form costs (see the module doc).
COST_FORMS: Registry[CostForm] = Registry("closed-form costs")


def register_costs(kind: str) -> Callable[[CostForm], CostForm]:
    return COST_FORMS.register(kind)  # type: ignore[return-value]


class CostTally:
    """What the hooks of ``static_costs`` see, added leaf module by leaf module (element counts
    of one sample; float32)."""

    def __init__(self) -> None:
        self.params = self.flops = self.acts = self.moved = 0

    def leaf(self, elems_in: int, elems_out: int, *, params: int = 0, flops: int = 0) -> None:
        self.params += params
        self.flops += flops
        self.acts += elems_out
        self.moved += elems_in + elems_out

    def same(self, elems: int) -> None:
        """A shape-keeping leaf without weights or FLOPs (ReLU, Identity, Flatten)."""
        self.leaf(elems, elems)

    def conv(self, c_in: int, c_out: int, kernel: tuple[int, int], size_in: tuple[int, int],
             size_out: tuple[int, int], *, groups: int = 1, bias: bool = False) -> None:
        per_group = c_in // groups
        out = c_out * size_out[0] * size_out[1]
        self.leaf(c_in * size_in[0] * size_in[1], out,
                  params=per_group * c_out * kernel[0] * kernel[1] + (c_out if bias else 0),
                  flops=2 * out * per_group * kernel[0] * kernel[1])

    def bn(self, c: int, size: tuple[int, int]) -> None:
        self.leaf(c * size[0] * size[1], c * size[0] * size[1], params=2 * c)

    def linear(self, n_in: int, n_out: int) -> None:
        self.leaf(n_in, n_out, params=n_in * n_out + n_out, flops=2 * n_in * n_out)

    def costs(self) -> dict[str, float]:
        param_bytes = BYTES * self.params
        return {"params": self.params, "flops": self.flops,
                "memory_bytes": param_bytes + BYTES * self.acts,
                "compute_intensity": self.flops / max(1, param_bytes + BYTES * self.moved)}


# -- the cell space (nas_gym.models.cell, nas_gym.models.cell_ops) -------------------------------
#: op name -> (shape kind, kernel) of the builders in ``nas_gym.models.cell_ops``.
CELL_OPS: dict[str, tuple[str, int]] = {
    "identity": ("identity", 0), "sep_conv_3x3": ("sep", 3), "sep_conv_5x5": ("sep", 5),
    "sep_conv_7x7": ("sep", 7), "avg_pool_3x3": ("pool", 3), "max_pool_3x3": ("pool", 3),
    "max_pool_5x5": ("pool", 5), "max_pool_7x7": ("pool", 7), "conv_1x1": ("conv", 1),
    "conv_3x3": ("conv", 3), "dil_conv_3x3": ("conv", 3), "conv_1x3_3x1": ("pair", 3),
    "conv_1x7_7x1": ("pair", 7)}


def _half(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return -(-size[0] // stride), -(-size[1] // stride)  # every op maps H to ceil(H / stride)


def _relu_conv_bn(t: CostTally, c_in: int, c_out: int, size: tuple[int, int]) -> None:
    t.same(c_in * size[0] * size[1])
    t.conv(c_in, c_out, (1, 1), size, size)
    t.bn(c_out, size)


def _factorized_reduce(t: CostTally, c_in: int, c_out: int, size: tuple[int, int]
                       ) -> tuple[int, int]:
    out = _half(size, 2)
    t.same(c_in * size[0] * size[1])
    t.conv(c_in, c_out // 2, (1, 1), size, out)  # the shifted input of conv2 is H x W too
    t.conv(c_in, c_out - c_out // 2, (1, 1), size, out)
    t.bn(c_out, out)
    return out


def _cell_op(t: CostTally, op: str, c: int, size: tuple[int, int], stride: int
             ) -> tuple[int, int]:
    kind, k = CELL_OPS[op]
    out = _half(size, stride)
    if kind == "identity":
        if stride == 2:
            return _factorized_reduce(t, c, c, size)
        t.same(c * size[0] * size[1])
    elif kind == "pool":
        t.leaf(c * size[0] * size[1], c * out[0] * out[1])
    else:
        t.same(c * size[0] * size[1])  # the leading ReLU
        if kind == "sep":
            t.conv(c, c, (k, k), size, out, groups=c)
            t.conv(c, c, (1, 1), out, out)
            t.bn(c, out)
            t.same(c * out[0] * out[1])
            t.conv(c, c, (k, k), out, out, groups=c)
            t.conv(c, c, (1, 1), out, out)
        elif kind == "conv":
            t.conv(c, c, (k, k), size, out)
        else:  # 1xk then kx1
            t.conv(c, c, (1, k), size, (size[0], out[1]))
            t.conv(c, c, (k, 1), (size[0], out[1]), out)
        t.bn(c, out)
    return out


def _cell(t: CostTally, cell: Cell, c_pp: int, c_p: int, c: int, reduction: bool,
          reduce_prev: bool, s0: tuple[int, int], s1: tuple[int, int]) -> tuple[int, int]:
    if reduce_prev:
        s0 = _factorized_reduce(t, c_pp, c, s0)
    else:
        _relu_conv_bn(t, c_pp, c, s0)
    _relu_conv_bn(t, c_p, c, s1)
    sizes = [s0, s1]
    for b in cell.blocks:
        out = s1
        for ind, op in ((b.in1, b.op1), (b.in2, b.op2)):
            out = _cell_op(t, op, c, sizes[ind], 2 if reduction and ind < 2 else 1)
        sizes.append(out)
    loose = cell.loose_ends()
    _relu_conv_bn(t, c * len(loose), c, sizes[loose[-1] + 2])
    return sizes[loose[-1] + 2]


@register_costs("cell")
def cell_costs(arch: CellArchitecture, input_shape: tuple[int, int, int], num_classes: int
               ) -> dict[str, float] | None:
    """Costs of :class:`~nas_gym.models.cell.CellNetwork` (None for an op not in ``CELL_OPS``)."""
    cells = [arch.normal] + ([arch.reduction] if arch.reduction is not None else [])
    if any(op not in CELL_OPS for cell in cells for b in cell.blocks for op in (b.op1, b.op2)):
        return None
    t = CostTally()
    c = arch.channels
    size = (input_shape[1], input_shape[2])
    t.conv(input_shape[0], c, (3, 3), size, size)  # stem
    t.bn(c, size)
    s0 = s1 = size
    c_pp, c_p, reduce_prev = c, c, False
    for stage in range(3):
        if stage > 0:
            c *= 2
            out = _cell(t, arch.reduction or arch.normal, c_pp, c_p, c, True, reduce_prev, s0, s1)
            s0, s1, c_pp, c_p, reduce_prev = s1, out, c_p, c, True
        for _ in range(arch.n_normal):
            out = _cell(t, arch.normal, c_pp, c_p, c, False, reduce_prev, s0, s1)
            s0, s1, c_pp, c_p, reduce_prev = s1, out, c_p, c, False
    t.leaf(c_p * s1[0] * s1[1], c_p)  # global average pool (the ReLU before it is functional)
    t.linear(c_p, num_classes)
    return t.costs()
