"""Costs are counted on the real module: FLOPs of a plain conv net equal the analytic count."""

from __future__ import annotations

import torch
from torch import nn

from nas_gym.costs import count_params, measure_latency, static_costs


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
