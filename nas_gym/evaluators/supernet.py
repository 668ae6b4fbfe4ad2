"""The ENAS / B-ENAS super-network Omega (SPEC §5, ``evaluator="shared"``): building one.

:func:`build_supernet` gives the super-network of an architecture's space, one of ``SUPERNETS``:
:class:`~nas_gym.evaluators.supernet_cell.CellSuperNet` (cells) or
:class:`~nas_gym.evaluators.supernet_macro.MacroSuperNet` (macro layers). Both are a
:class:`~nas_gym.evaluators.supernet_base.SuperNet`, whose module tells how a child shares its weights and
how its BatchNorms normalise.

**Memory.** :func:`build_supernet` counts the parameters on the ``meta`` device first, estimates
parameters + gradients + momentum + the activations of one batch, and warns when that exceeds the
device's free memory (``torch.cuda.mem_get_info`` / ``MemAvailable`` of ``/proc/meminfo``).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import torch
from torch import nn

from ..arch.base import Architecture
from ..arch.cell import CellArchitecture
from ..errors import bad_value
from ..models.builder import he_init_
from ..training import place_model
from .supernet_base import FLOAT_BYTES, SuperNet, batch_stats_only
from .supernet_cell import CellSuperNet
from .supernet_macro import MacroSuperNet

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
    memory = 3 * FLOAT_BYTES * params + meta.activation_bytes(batch_size)  # weights, grads, momentum
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
    # the memory-format rule for shared weights (channels_last on every device); the conversion
    # keeps the Parameter objects (their .data is replaced)
    return place_model(net, torch.device(device), shared_weights=True)
