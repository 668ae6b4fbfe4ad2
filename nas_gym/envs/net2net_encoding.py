"""The action and observation encoding of ``Net2Net-v0`` (see
:class:`~nas_gym.envs.net2net.Net2NetEnv`, "Action Space" and "Observation Space"): actions as
transform records, the masks of the deepen actions, and the network as layer-slot codes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arch.plain import (
    CONV_KERNELS,
    CONV_WIDTHS,
    FC_UNITS,
    ConvLayer,
    FCLayer,
    PlainCNN,
    next_level,
)
from ..models.net2net import legal_deepen_positions

LAYER_TYPES = ("empty", "conv", "max_pool", "avg_pool", "fc")  # observation type codes
SLOT_NVEC = (len(LAYER_TYPES), len(CONV_WIDTHS) + 1, 4)  # type, width level, kernel / pool code


def decode_action(a: int, arch: PlainCNN, max_layers: int, *, noise: float,
                  batch_size: int) -> dict[str, Any]:
    """The transform record of action ``a`` on ``arch`` (without its seed).

    ``noise``: the widen noise of a widen record; ``batch_size``: the ``batch`` of a conv deepen
    record (the data batch that sets the new BN)."""
    L = max_layers
    if a < L:
        spec = arch.layers[a]
        width = next_level(spec.filters, CONV_WIDTHS) if isinstance(spec, ConvLayer) \
            else next_level(spec.units, FC_UNITS)
        return {"op": "widen", "layer": a, "width": width, "noise": noise}
    b = a - L
    if b < 3 * (L + 1):
        return {"op": "deepen", "position": b // 3, "kernel": CONV_KERNELS[b % 3],
                "layer_type": "conv", "batch": batch_size}
    return {"op": "deepen", "position": b - 3 * (L + 1), "kernel": 1, "layer_type": "fc",
            "batch": 0}


def allow_deepen(mask: np.ndarray, arch: PlainCNN, max_layers: int, deeper_left: int) -> None:
    """Set the legal deepen actions of ``arch`` in ``mask``, while deepen steps remain and the net
    has fewer than ``max_layers`` layers."""
    L = max_layers
    if deeper_left > 0 and len(arch.layers) < L:
        for p in legal_deepen_positions(arch, "conv"):
            mask[L + 3 * p: L + 3 * p + 3] = True
        mask[[L + 3 * (L + 1) + p for p in legal_deepen_positions(arch, "fc")]] = True


def encode_observation(arch: PlainCNN, shape: tuple[int, ...], deeper_left: int,
                       wider_left: int) -> np.ndarray:
    """The observation of ``arch`` (``shape``: the observation space's) with the steps left."""
    obs = np.zeros(shape, dtype=np.int64)
    for i, layer in enumerate(arch.layers):
        if isinstance(layer, ConvLayer):
            code = (1, sum(w <= layer.filters for w in CONV_WIDTHS), min(layer.kernel // 2, 3))
        elif isinstance(layer, FCLayer):
            code = (4, sum(u <= layer.units for u in FC_UNITS), 0)
        else:
            code = (2 if layer.mode == "max" else 3, 0, min(layer.size - 1, 3))
        obs[3 * i: 3 * i + 3] = code
    obs[-2:] = deeper_left, wider_left
    return obs
