"""Costs are counted on the real module: FLOPs of a plain conv net equal the analytic count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nas_gym
from nas_gym.arch import epnas_ops as E
from nas_gym.arch.base import Architecture
from nas_gym.arch.cell import ENAS_OPS, NASNET_OPS, Block, Cell, CellArchitecture
from nas_gym.arch.epnas import ACTIVATIONS, BRANCH_TYPES, LAYER_TYPES
from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.arch.plain import DIGITS_START_NET, ConvLayer, FCLayer, PlainCNN, PoolLayer
from nas_gym.costs import (
    architecture_costs,
    count_params,
    counted_by_hooks,
    flop_counter_costs,
    measure_latency,
    static_costs,
)
from nas_gym.models import COST_FORMS


def test_flops_of_plain_conv_net_equal_analytic_count() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),          # 8x8 out
        nn.Conv2d(8, 16, 5, stride=2, padding=2), nn.ReLU(),  # 4x4 out
        nn.Conv2d(16, 16, 3, padding=1, groups=16),          # depthwise, 4x4
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    analytic = (
        2 * 3 * 8 * 3 * 3 * 8 * 8
        + 2 * 8 * 16 * 5 * 5 * 4 * 4
        + 2 * 1 * 16 * 3 * 3 * 4 * 4
        + 2 * 16 * 10
    )
    costs = static_costs(net, (3, 8, 8))
    assert costs["flops"] == analytic
    assert costs["params"] == sum(p.numel() for p in net.parameters()) == count_params(net)


def test_memory_and_intensity() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, 10))
    costs = static_costs(net, (1, 8, 8))
    param_bytes = 4 * count_params(net)
    activation_bytes = 4 * (4 * 64 + 4 * 64 + 4 * 64 + 10)  # conv, relu, flatten, linear outputs
    assert costs["memory_bytes"] == param_bytes + activation_bytes
    assert 0 < costs["compute_intensity"] < costs["flops"]
    assert net.training  # the mode is restored


def test_frozen_parameters_are_not_counted() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    assert count_params(net) == 4 + 4 * 2 + 2


def test_latency_is_measured() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 10))
    ms = measure_latency(net, (1, 8, 8), torch.device("cpu"), min_run_time=0.01)
    assert 0 < ms < 1000


# -- fast counts equal FlopCounterMode on every op of every space ---------------------------------
def _cell_archs() -> list[tuple[Architecture, tuple[int, int, int]]]:
    """Every cell op at normal and reduction positions, reading cell inputs and blocks, with
    B-ENAS's shared and ENAS's separate reduction cell, odd widths and odd map sizes."""
    ops = sorted(set(NASNET_OPS) | set(ENAS_OPS))
    out = []
    for i, op in enumerate(ops):
        other = ops[(i + 5) % len(ops)]
        normal = Cell((Block(0, 1, op, other), Block(2, 0, other, op), Block(1, 3, op, op)))
        reduction = Cell((Block(1, 0, op, op), Block(2, 1, other, op))) if i % 2 else None
        arch = CellArchitecture(normal, reduction, n_normal=1 + i % 2, channels=5 + i % 3)
        out.append((arch, ((1, 8, 8), (3, 9, 7))[i % 2]))
    return out


def _macro_archs() -> list[tuple[Architecture, tuple[int, int, int]]]:
    rng = np.random.default_rng(3)
    out = []
    for n in range(8):
        layers = []
        for i in range(int(rng.integers(1, 5))):
            inputs = () if i == 0 else tuple(sorted(rng.choice(
                i, size=int(rng.integers(1, i + 1)), replace=False).tolist()))
            layers.append(MacroLayer(int(rng.choice([3, 8])), int(rng.choice([1, 3, 5, 7])),
                                     int(rng.choice([1, 2, 4])), inputs))
        arch = MacroArchitecture(tuple(layers), head=("flatten", "gap")[n % 2])
        out.append((arch, ((1, 8, 8), (3, 13, 9))[n % 2]))
    return out


def _plain_archs() -> list[tuple[Architecture, tuple[int, int, int]]]:
    plain = PlainCNN((ConvLayer(6, 3), PoolLayer("max", 2), ConvLayer(8, 5, 2),
                      PoolLayer("avg", 3, 1), ConvLayer(4, 1), FCLayer(12), FCLayer(7)))
    dense = PlainCNN((ConvLayer(6, 3), ConvLayer(5, 1), PoolLayer("avg", 2), ConvLayer(3, 5),
                      FCLayer(9)), space="densenet")
    return [(plain, (3, 16, 16)), (dense, (1, 8, 8)), (DIGITS_START_NET, (1, 8, 8))]


def _covering(sample, names) -> list[Architecture]:
    """Random EPNAS nets until every value of ``names(net)`` has been seen."""
    rng, seen, out = np.random.default_rng(0), set(), []
    for _ in range(300):
        net = sample(rng)
        if not names(net) <= seen:
            seen |= names(net)
            out.append(net)
    return out, seen


def _epnas_archs() -> list[tuple[Architecture, tuple[int, int, int]]]:
    layers, seen_l = _covering(lambda r: E.random_layer_net(r, 5, stem_channels=8),
                               lambda n: {x.type for x in n.layers} | {x.activation
                                                                       for x in n.layers})
    modules, seen_m = _covering(
        lambda r: E.random_module_net(r, 4, num_modules=2, stem_channels=8),
        lambda n: {x.type for x in n.branches})
    assert seen_l >= set(LAYER_TYPES) | set(ACTIVATIONS) and seen_m >= set(BRANCH_TYPES)
    return [(a, (1, 8, 8)) for a in layers] + [(a, (3, 9, 7)) for a in modules]


@pytest.mark.parametrize("space", ["cell", "macro", "plain", "epnas"])
def test_fast_costs_equal_flop_counter_on_every_op(space: str) -> None:
    archs = {"cell": _cell_archs, "macro": _macro_archs, "plain": _plain_archs,
             "epnas": _epnas_archs}[space]()
    for arch, shape in archs:
        model = nas_gym.build_model(arch, shape, 10)
        assert counted_by_hooks(model), arch  # the fast path, not the fallback
        reference = flop_counter_costs(model, shape)
        assert static_costs(model, shape) == reference, arch
        assert architecture_costs(arch, shape, 10) == reference, arch
    if space in ("cell", "macro"):  # a closed form: no module is built
        assert all(COST_FORMS.get(a.kind)(a, s, 10) is not None for a, s in archs)


def test_unknown_modules_are_counted_by_flop_counter() -> None:
    class Bilinear(nn.Module):  # a parameter used functionally: the hooks cannot see it
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), Bilinear())
    assert not counted_by_hooks(net)
    costs = static_costs(net, (1, 4, 4))
    assert costs == flop_counter_costs(net, (1, 4, 4))
    assert costs["flops"] == 2 * 16 * 4 + 2 * 4 * 4
