"""The ENAS / B-ENAS super-network Omega (SPEC §5, ``evaluator="shared"``).

"Prepare a gigantic network that can cover the entire sampled network ... all sampled networks
share the same weight" (ENAS, seed 003); B-ENAS §3.1 trains ``omega in Omega`` by Monte Carlo over
sampled children (eq. 1, M = 1). A :class:`SuperNet` holds one weight per decision a child can take
at one position; :meth:`SuperNet.child` gives a child that runs on its slice: a
:class:`SharedChild` whose ``parameters()`` are the very Parameter objects of its path, so a step
through it changes nothing else (with ``zero_grad(set_to_none=True)`` the optimizer skips every
parameter without a gradient: no momentum, no weight decay off the path).

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

**Macro layers** (:class:`MacroSuperNet`, SPEC §1.2): one weight per (layer, filters, kernel),
stored as one Parameter per input piece it may read (the image, or layer ``j`` at each of its
filter counts) and concatenated along the input channels like the child's concatenated inputs;
its BN per (layer, filters, kernel); any stride runs on the same weights. The head holds one
Parameter per (loose layer, filters[, final size]) piece for ``"flatten"`` and ``"gap"``.

**BatchNorm.** Every BN normalises with the statistics of the current batch, in training and in
scoring, and keeps no running statistics: a shared op sees the inputs of every child that uses it,
so running averages would mix them (ENAS scores its children with BN in training mode).

**Memory.** :func:`build_supernet` counts the parameters on the ``meta`` device first, estimates
parameters + gradients + momentum + the activations of one batch, and warns when that exceeds the
device's free memory (``torch.cuda.mem_get_info`` / ``MemAvailable`` of ``/proc/meminfo``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .arch.base import Architecture
from .arch.cell import ENAS_OPS, OP_SETS, Cell, CellArchitecture
from .arch.macro import FILTERS, KERNELS, STRIDES, MacroArchitecture, conv_out
from .errors import ArchitectureError, bad_value
from .models.builder import he_init_
from .models.cell_ops import OPS, FactorizedReduce, ReLUConvBN

_BYTES = 4  # float32
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_stats_only(module: nn.Module) -> nn.Module:
    """Make every BN of ``module`` normalise with batch statistics always (see the module doc)."""
    for m in module.modules():
        if isinstance(m, BATCH_NORMS):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return module


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
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


# -- cells ----------------------------------------------------------------------------------------
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
        return _unique([*params, *self.classifier.parameters()])

    def forward(self, x: torch.Tensor, arch: CellArchitecture) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for p, cp in enumerate(self.cells):
            s0, s1 = s1, cp(s0, s1, self._cell(arch, p))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(s1), 1), 1))

    def activation_bytes(self, batch: int) -> int:
        # per position: 2 preprocessed inputs, per block 2 ops of <= 9 maps (sep conv) + the sum,
        # the projection's 3; x2 for the gradients of the backward pass
        maps = 2 + self.max_blocks * 19 + 3
        return 2 * _BYTES * batch * sum(maps * c * h * w for c, h, w in self.sizes)


# -- macro layers --------------------------------------------------------------------------------
def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(hw) else F.adaptive_avg_pool2d(x, hw)


class MacroSuperNet(SuperNet):
    """Omega of the macro layer space: one weight per (layer, filters, kernel) (module doc).

    :param filters, kernels, strides: the choice sets of ``MacroNAS-v0``.
    :param max_layers: layers a child may have.
    """

    kind = "macro"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *,
                 filters: Sequence[int] = FILTERS, kernels: Sequence[int] = KERNELS,
                 strides: Sequence[int] = STRIDES, max_layers: int = 8) -> None:
        super().__init__()
        self.filters, self.kernels = tuple(filters), tuple(kernels)
        self.max_layers, self.input_shape = max_layers, tuple(input_shape)
        c_in, h, w = input_shape
        self.convs = nn.ParameterDict()
        self.bns = nn.ModuleDict()
        for i in range(max_layers):
            pieces = [("x", c_in)] if i == 0 else [(j, g) for j in range(i) for g in self.filters]
            for f in self.filters:
                for k in self.kernels:
                    self.bns[f"L{i}_f{f}_k{k}"] = nn.BatchNorm2d(f)
                    for j, g in pieces:
                        self.convs[f"L{i}_f{f}_k{k}_in{j}_{g}"] = nn.Parameter(
                            torch.empty(f, g, k, k))
        self.final_sizes = sorted(self._reachable((h, w), tuple(strides), max_layers))
        self.flat = nn.ParameterDict({f"L{j}_{g}_{fh}x{fw}": nn.Parameter(
            torch.empty(num_classes, g * fh * fw)) for j in range(max_layers)
            for g in self.filters for fh, fw in self.final_sizes})
        self.gap = nn.ParameterDict({f"L{j}_{g}": nn.Parameter(torch.empty(num_classes, g))
                                     for j in range(max_layers) for g in self.filters})
        self.flat_bias = nn.Parameter(torch.zeros(num_classes))
        self.gap_bias = nn.Parameter(torch.zeros(num_classes))

    @staticmethod
    def _reachable(hw: tuple[int, int], strides: tuple[int, ...], layers: int) -> set:
        seen, frontier = set(), {hw}
        for _ in range(layers):
            frontier = {(conv_out(h, 1, s), conv_out(w, 1, s)) for h, w in frontier
                        for s in strides} - seen
            seen |= frontier
        return seen

    def check(self, arch: Architecture) -> None:
        if not isinstance(arch, MacroArchitecture):
            raise ArchitectureError(f"a {type(arch).__name__} cannot run on a macro super-network")
        if len(arch.layers) > self.max_layers:
            raise ArchitectureError(f"{len(arch.layers)} layers; the super-network holds "
                                    f"{self.max_layers} (evaluator_kwargs max_layers)")
        for i, layer in enumerate(arch.layers):
            if layer.filters not in self.filters or layer.kernel not in self.kernels:
                raise ArchitectureError(
                    f"layer {i}: filters={layer.filters}, kernel={layer.kernel} are outside the "
                    f"super-network's filters {self.filters} / kernels {self.kernels} "
                    "(evaluator_kwargs filters, kernels)")
        if arch.head == "flatten" and arch.sizes(*self.input_shape[1:])[-1] not in self.final_sizes:
            raise ArchitectureError("the final feature map size is outside the super-network's "
                                    "strides (evaluator_kwargs strides)")

    def _keys(self, arch: MacroArchitecture) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
        """Per layer (BN key, conv keys in input order); the head's piece keys."""
        layers = []
        for i, layer in enumerate(arch.layers):
            base = f"L{i}_f{layer.filters}_k{layer.kernel}"
            srcs = ["x_" + str(self.input_shape[0])] if i == 0 else \
                [f"{j}_{arch.layers[j].filters}" for j in layer.inputs]
            layers.append((base, base, [f"{base}_in{s}" for s in srcs]))
        fh, fw = arch.sizes(*self.input_shape[1:])[-1]
        size = f"_{fh}x{fw}" if arch.head == "flatten" else ""
        head = [f"L{j}_{arch.layers[j].filters}{size}" for j in arch.loose_ends()]
        return layers, head

    def path_parameters(self, arch: Architecture) -> list[nn.Parameter]:
        assert isinstance(arch, MacroArchitecture)
        layers, head = self._keys(arch)
        params = [p for _, bn, convs in layers for p in
                  (*(self.convs[k] for k in convs), *self.bns[bn].parameters())]
        table, bias = (self.flat, self.flat_bias) if arch.head == "flatten" else \
            (self.gap, self.gap_bias)
        return _unique([*params, *(table[k] for k in head), bias])

    def forward(self, x: torch.Tensor, arch: MacroArchitecture) -> torch.Tensor:
        layers, head = self._keys(arch)
        sizes = arch.sizes(*self.input_shape[1:])
        outs: list[torch.Tensor] = []
        for i, (layer, (_, bn, convs)) in enumerate(zip(arch.layers, layers, strict=True)):
            xs = [x] if i == 0 else [_resize(outs[j], sizes[i - 1]) for j in layer.inputs]
            w = torch.cat([self.convs[k] for k in convs], dim=1)
            y = F.conv2d(torch.cat(xs, dim=1) if len(xs) > 1 else xs[0], w, stride=layer.stride,
                         padding=layer.kernel // 2)
            outs.append(F.relu(self.bns[bn](y)))
        feats = [_resize(outs[j], sizes[-1]) for j in arch.loose_ends()]
        if arch.head == "flatten":
            z = torch.cat([f.flatten(1) for f in feats], dim=1)
            return F.linear(z, torch.cat([self.flat[k] for k in head], dim=1), self.flat_bias)
        z = torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1)
        return F.linear(z, torch.cat([self.gap[k] for k in head], dim=1), self.gap_bias)

    def activation_bytes(self, batch: int) -> int:
        # worst case: every layer at full resolution, reading every earlier layer at max width
        _, h, w = self.input_shape
        fmax = max(self.filters)
        maps = sum(i * fmax + 3 * fmax for i in range(self.max_layers))
        return 2 * _BYTES * batch * maps * h * w


# -- building, memory -----------------------------------------------------------------------------
SUPERNETS: dict[str, type[SuperNet]] = {"cell": CellSuperNet, "macro": MacroSuperNet}


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA; on the CPU psutil's
    ``available`` when installed, else ``MemAvailable`` of ``/proc/meminfo``; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(needed: int, device: torch.device, *, available: int | None = None,
                 what: str = "the super-network") -> bool:
    """Warn (``ResourceWarning``) when ``needed`` bytes exceed the free memory of ``device``
    (``available`` overrides the measurement); returns whether it fits (True when unknown)."""
    free = available_memory(device) if available is None else available
    if free is None or needed <= free:
        return True
    warnings.warn(f"{what} needs about {needed / 2**20:,.1f} MiB on {device} but only "
                  f"{free / 2**20:,.1f} MiB are free; expect an out-of-memory error "
                  "(reduce channels, max_blocks / max_layers, the op set or the batch size)",
                  ResourceWarning, stacklevel=3)
    return False


def build_supernet(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int, *,
                   batch_size: int, device: torch.device | str = "cpu", seed: int = 0,
                   **space: Any) -> SuperNet:
    """The super-network covering ``arch``'s space (``space``: the keyword arguments of the
    class of ``arch.kind``; a cell network's ``n_normal`` and ``channels`` come from ``arch``),
    He-initialised from ``seed``, on ``device``. Sets ``num_params`` and ``memory_bytes`` (the
    estimate checked by :func:`check_memory` before anything is allocated)."""
    if arch.kind not in SUPERNETS:
        raise bad_value("architecture kind", arch.kind, sorted(SUPERNETS))
    if arch.kind == "cell":
        assert isinstance(arch, CellArchitecture)
        space = {**space, "n_normal": arch.n_normal, "channels": arch.channels}
    make = partial(SUPERNETS[arch.kind], tuple(input_shape), int(num_classes), **space)
    device = torch.device(device)
    with torch.device("meta"):
        meta = make()
    params = meta.num_params
    memory = 3 * _BYTES * params + meta.activation_bytes(batch_size)  # weights, grads, momentum
    check_memory(memory, device)
    net = batch_stats_only(make())
    gen = torch.Generator().manual_seed(int(seed))
    he_init_(net, gen)
    done = {id(m.weight) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    with torch.no_grad():  # the pieces that are not Conv2d / Linear modules: He (fan-in) too
        for p in net.parameters():
            if p.dim() >= 2 and id(p) not in done:
                nn.init.kaiming_normal_(p, mode="fan_in", nonlinearity="relu", generator=gen)
    net.check(arch)
    net.memory_bytes = memory
    # channels_last on every device (not only CUDA, nas_gym.training.device_layout's rule): the
    # super-network's steps measured ~20% faster on CPU with it; conversion keeps the Parameter
    # objects (their .data is replaced)
    return net.to(device, memory_format=torch.channels_last)
