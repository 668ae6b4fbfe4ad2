"""The plain-CNN architecture value and its builder (SPEC §1.3, EAS Table 1)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from nas_gym import architecture_from_dict, build_model
from nas_gym.arch.plain import (
    DIGITS_START_NET,
    EAS_START_NET,
    ConvLayer,
    FCLayer,
    PlainCNN,
    PoolLayer,
)
from nas_gym.errors import ArchitectureError
from nas_gym.models.plain import ConvBNReLU, FCReLU


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("space", ["plain", "densenet"])
def test_round_trip(space: str) -> None:
    for net in (EAS_START_NET, DIGITS_START_NET):
        arch = replace(net, space=space)
        data = json.loads(arch.to_json())
        assert data["kind"] == "plain" and data["space"] == space
        assert [d["type"] for d in data["layers"]][:3] == ["conv", "pool", "conv"]
        assert architecture_from_dict(data) == arch
        assert architecture_from_dict(arch.to_json()).sha256 == arch.sha256
    assert PoolLayer("max", 3) == PoolLayer("max", 3, 3)


def test_eas_start_net_matches_table_1() -> None:
    model = build_model(EAS_START_NET, (3, 32, 32), 10)
    # C(16,3) C(32,3) C(64,3) C(128,3) (+BN) FC(256) SM(10), counted by hand
    assert n_params(model) == (432 + 32) + (4608 + 64) + (18432 + 128) + (73728 + 256) \
        + (128 * 256 + 256) + (256 * 10 + 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.architecture == EAS_START_NET
    # the global average pool makes any input that the pools fit in work
    assert build_model(EAS_START_NET, (3, 40, 48), 10)(torch.randn(1, 3, 40, 48)).shape == (1, 10)
    digits = build_model(DIGITS_START_NET, (1, 8, 8), 10)
    assert digits(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_layout_by_layer_index() -> None:
    model = build_model(EAS_START_NET, (3, 32, 32), 10)
    assert len(model.layers) == len(EAS_START_NET.layers)
    assert isinstance(model.layers[0], ConvBNReLU) and model.layers[0].conv.out_channels == 16
    assert isinstance(model.layers[1], torch.nn.MaxPool2d)
    assert isinstance(model.layers[7], torch.nn.AvgPool2d)
    assert isinstance(model.layers[8], FCReLU) and model.layers[8].fc.out_features == 256
    assert model.head.in_features == 256 and model.gap_index == 8


def test_densenet_connectivity() -> None:
    arch = PlainCNN((ConvLayer(4, 3), PoolLayer("avg", 2), ConvLayer(5, 3), ConvLayer(6, 1),
                     FCLayer(7)), space="densenet")
    model = build_model(arch, (2, 8, 8), 3).eval()
    assert [model.layers[i].conv.in_channels for i in (0, 2, 3)] == [2, 4, 9]
    assert model.layers[4].fc.in_features == 15
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        o0 = model.layers[0](x)
        s = model.layers[1](o0)  # the pool applies to the whole concatenation
        s = torch.cat([s, model.layers[2](s)], 1)
        s = torch.cat([s, model.layers[3](s)], 1)
        want = model.head(model.layers[4](s.mean(dim=(2, 3))))
        assert torch.allclose(model(x), want, atol=1e-6)


@pytest.mark.parametrize("layers, space, match", [
    ((FCLayer(8), ConvLayer(4, 3)), "plain", "conv after an fc"),
    ((ConvLayer(4, 3), FCLayer(8), PoolLayer("max", 2)), "plain", "pool after an fc"),
    ((ConvLayer(4, 2),), "plain", "kernel"),
    ((ConvLayer(0, 3),), "plain", "filters"),
    ((ConvLayer(4, 3), FCLayer(0)), "plain", "units"),
    ((ConvLayer(4, 3), PoolLayer("min", 2)), "plain", "mode"),
    ((ConvLayer(4, 3), PoolLayer("max", 0)), "plain", "size"),
    ((ConvLayer(4, 3, 2),), "densenet", "stride"),
    ((PoolLayer("max", 2), FCLayer(3)), "plain", "at least one conv"),
    ((ConvLayer(4, 3),), "resnet", "space"),
])
def test_validation(layers: tuple, space: str, match: str) -> None:
    arch = PlainCNN(layers, space=space)
    with pytest.raises(ArchitectureError, match=match):
        arch.validate()
    with pytest.raises(ArchitectureError):
        architecture_from_dict(arch.to_dict())


def test_malformed_dicts() -> None:
    with pytest.raises(ArchitectureError, match="type"):
        architecture_from_dict({"kind": "plain", "layers": [{"type": "dropout"}]})
    with pytest.raises(ArchitectureError):
        architecture_from_dict({"kind": "plain", "layers": [{"type": "conv", "kernel": 3}]})


def test_pool_that_does_not_fit_is_an_architecture_error() -> None:
    # 8 -> 4 -> 2 -> 1, then P(4, 4) cannot fit a 1x1 map
    with pytest.raises(ArchitectureError, match="below 1x1"):
        build_model(EAS_START_NET, (3, 8, 8), 10)
