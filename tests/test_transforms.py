"""Net2Net transforms (SPEC §1.3): function preservation is a tested property (EAS eq. 1-5)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from nas_gym import build_model
from nas_gym.arch.plain import (
    DIGITS_START_NET,
    EAS_START_NET,
    ConvLayer,
    FCLayer,
    PlainCNN,
    PoolLayer,
)
from nas_gym.errors import TransformError
from nas_gym.models.net2net import deepen, legal_deepen_positions, legal_widen_layers, widen

N_NETS = 200  # random networks per space in the property test
MAX_STEPS = 10  # transforms per sequence
MAX_WIDTH = 40  # keeps tensors small: widths above this are not widened further


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: intra-op threads only add contention (10x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_net(rng: np.random.Generator, space: str) -> tuple[PlainCNN, tuple[int, int, int]]:
    """A random valid plain CNN for a small input: 1-3 blocks of 1-2 convs, pools, 0-2 fcs."""
    size = int(rng.choice([6, 8]))
    shape = (int(rng.choice([1, 3])), size, size)
    layers: list = []
    if rng.random() < 0.15:  # a pool before the first conv reads the raw input
        layers.append(PoolLayer(str(rng.choice(["max", "avg"])), 2, 1))
        size -= 1
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(int(rng.integers(1, 3))):
            stride = 2 if space == "plain" and size >= 4 and rng.random() < 0.15 else 1
            layers.append(ConvLayer(int(rng.integers(2, 13)), int(rng.choice([1, 3, 5])), stride))
            size = (size - 1) // stride + 1
        if size >= 2 and rng.random() < 0.7:
            pool_size = int(rng.choice([2, 3])) if size >= 3 else 2
            stride = int(rng.choice([1, pool_size]))
            layers.append(PoolLayer(str(rng.choice(["max", "avg"])), pool_size, stride))
            size = (size - pool_size) // stride + 1
    layers += [FCLayer(int(rng.integers(2, 13))) for _ in range(int(rng.integers(0, 3)))]
    arch = PlainCNN(tuple(layers), space=space)
    arch.validate()
    return arch, shape


def trained_model(arch: PlainCNN, shape: tuple[int, int, int], seed: int) -> torch.nn.Module:
    """A built model whose BN statistics and affine parameters are far from their defaults.
    The head is scaled down so that logits are O(1), the scale an absolute 1e-5 bound is meant
    for (float32 resolution is ~1e-6 at 16)."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(arch, shape, 5, seed=seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=gen))
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) - 0.5)
            elif isinstance(module, torch.nn.Linear):
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        model.head.weight.mul_(0.25)
        model.train()
        for _ in range(4):  # running stats move towards the statistics of shifted data
            model(1.5 * torch.randn(16, *shape, generator=gen) + 0.3)
    return model.eval()


def random_step(model: torch.nn.Module, rng: np.random.Generator) -> torch.nn.Module:
    """One random legal transform (widen or deepen, any kind), driven only by ``rng``."""
    arch = model.architecture
    widenable = [i for i in legal_widen_layers(arch)
                 if getattr(arch.layers[i], "filters", getattr(arch.layers[i], "units", 0))
                 < MAX_WIDTH]
    if widenable and rng.random() < 0.5:
        layer = int(rng.choice(widenable))
        spec = arch.layers[layer]
        current = spec.filters if isinstance(spec, ConvLayer) else spec.units
        width = None if current < 16 and rng.random() < 0.3 else current + int(rng.integers(1, 6))
        return widen(model, layer, width, rng=rng)
    position = int(rng.choice(legal_deepen_positions(arch)))
    layer_type = None
    if position == arch.gap_index:
        layer_type = str(rng.choice(["conv", "fc"]))
    return deepen(model, position, int(rng.choice([1, 3, 5])), rng=rng, layer_type=layer_type)


def assert_same_structure(model: torch.nn.Module, shape: tuple[int, int, int]) -> None:
    rebuilt = build_model(model.architecture, shape, 5)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    assert got == want
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in rebuilt.parameters())
    assert [type(m) for m in model.modules()] == [type(m) for m in rebuilt.modules()]


@pytest.mark.parametrize("space", ["plain", "densenet"])
def test_function_preservation_property(space: str) -> None:
    """>= 200 random nets x random sequences of <= 10 transforms: max |diff| <= 1e-5 (float32),
    <= 1e-10 (float64), in eval mode."""
    worst = {torch.float32: 0.0, torch.float64: 0.0}
    for case in range(N_NETS):
        rng = np.random.default_rng([case, space == "densenet"])
        arch, shape = random_net(rng, space)
        model32 = trained_model(arch, shape, seed=case)
        n_steps = int(rng.integers(1, MAX_STEPS + 1))
        x = 1.5 * torch.randn(6, *shape, generator=torch.Generator().manual_seed(case)) + 0.3
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
            model = model32 if dtype == torch.float32 else copy.deepcopy(model32).to(dtype)
            step_rng = np.random.default_rng([case, 7])  # same sequence for both dtypes
            with torch.no_grad():
                before = model(x.to(dtype))
                new = model
                for _ in range(n_steps):
                    new = random_step(new, step_rng)
                after = new(x.to(dtype))
            diff = float((after - before).abs().max())
            worst[dtype] = max(worst[dtype], diff)
            assert diff <= tol, (case, dtype, diff, new.architecture.to_json())
            assert not any(m.training for m in new.modules())
        assert_same_structure(new, shape)
    print(f"\n{space}: worst max|diff| float32={worst[torch.float32]:.3g} "
          f"float64={worst[torch.float64]:.3g}")


@pytest.mark.parametrize("space", ["plain", "densenet"])
def test_train_mode_preserved_with_data(space: str) -> None:
    """deepen(data=batch) sets the new BN from the batch statistics it sees: a train-mode pass on
    that batch is unchanged (<= 1e-4); widen is exact in train mode too (copied channels)."""
    worst = 0.0
    for case in range(30):
        rng = np.random.default_rng([case, 11, space == "densenet"])
        arch, shape = random_net(rng, space)
        model = trained_model(arch, shape, seed=case)
        data = 1.5 * torch.randn(16, *shape, generator=torch.Generator().manual_seed(case)) + 0.3
        position = int(rng.choice(legal_deepen_positions(arch, "conv")))
        new = deepen(model, position, int(rng.choice([1, 3, 5])), rng=rng, data=data)
        layer = int(rng.choice(legal_widen_layers(arch)))
        wide = widen(model, layer, rng=rng)
        with torch.no_grad():
            for other in (new, wide):
                want = copy.deepcopy(model).train()(data)
                got = copy.deepcopy(other).train()(data)
                worst = max(worst, float((got - want).abs().max()))
                assert float((got - want).abs().max()) <= 1e-4
                x = torch.randn(4, *shape)  # eval mode stays exact on any input
                assert float((other(x) - model(x)).abs().max()) <= 1e-5
    print(f"\n{space}: worst train-mode max|diff| = {worst:.3g}")


def test_widen_copies_bn_of_the_copied_units() -> None:
    model = trained_model(DIGITS_START_NET, (1, 8, 8), seed=3)
    new = widen(model, 2, 50, rng=np.random.default_rng(0))
    old_conv, old_bn = model.layers[2].conv, model.layers[2].bn
    conv, bn = new.layers[2].conv, new.layers[2].bn
    assert conv.out_channels == 50 and bn.num_features == 50
    for j in range(50):
        matches = [g for g in range(32) if torch.equal(conv.weight[j], old_conv.weight[g])]
        assert len(matches) == 1 and (j >= 32 or matches[0] == j)
        g = matches[0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert getattr(bn, name)[j] == getattr(old_bn, name)[g], name
    assert int(bn.num_batches_tracked) == int(old_bn.num_batches_tracked)
    assert new.architecture.layers[2] == ConvLayer(50, 3)
    # default width: the next level of CONV_WIDTHS / FC_UNITS
    assert widen(model, 0, rng=np.random.default_rng(0)).architecture.layers[0].filters == 32
    assert widen(model, 3, rng=np.random.default_rng(0)).architecture.layers[3].units == 128


def test_deepen_identity_layer_and_bn() -> None:
    model = trained_model(DIGITS_START_NET, (1, 8, 8), seed=4)
    new = deepen(model, 3, 5, rng=np.random.default_rng(0))
    block = new.layers[3]
    assert new.architecture.layers[3] == ConvLayer(32, 5)
    weight = torch.zeros(32, 32, 5, 5)
    weight[range(32), range(32), 2, 2] = 1
    assert torch.equal(block.conv.weight, weight)
    bn = block.bn
    assert torch.allclose(bn.weight, torch.sqrt(bn.running_var + bn.eps))
    assert torch.equal(bn.bias, bn.running_mean)
    fc = deepen(model, 4, rng=np.random.default_rng(0))  # after the only fc: an fc
    assert fc.architecture.layers[4] == FCLayer(64)
    assert torch.equal(fc.layers[4].fc.weight, torch.eye(64))
    gap = deepen(model, 3, rng=np.random.default_rng(0), layer_type="fc")
    assert gap.architecture.layers[3] == FCLayer(32)


def test_input_model_untouched_and_deterministic() -> None:
    for space in ("plain", "densenet"):
        model = trained_model(replace(DIGITS_START_NET, space=space), (1, 8, 8), seed=5)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        arch = model.architecture
        outs, data = [], torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        for _ in range(2):
            rng = np.random.default_rng(42)
            a = widen(model, 0, 40, rng=rng, noise=0.01)
            b = deepen(a, 2, rng=rng, data=data)
            outs.append(deepen(model, 3, rng=rng))
            outs.append(b)
        assert model.architecture == arch
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        for x, y in ((outs[0], outs[2]), (outs[1], outs[3])):  # same seed, same result
            assert all(torch.equal(v, y.state_dict()[k]) for k, v in x.state_dict().items())


def test_noise_breaks_symmetry_only_in_new_units() -> None:
    model = trained_model(DIGITS_START_NET, (1, 8, 8), seed=6)
    new = widen(model, 0, 24, rng=np.random.default_rng(1), noise=0.05)
    assert torch.equal(new.layers[0].conv.weight[:16], model.layers[0].conv.weight)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        diff = float((new(x) - model(x)).abs().max())
    assert 0 < diff < 1.0


def test_illegal_requests_raise() -> None:
    model = trained_model(EAS_START_NET, (3, 32, 32), seed=0)
    rng = np.random.default_rng(0)
    n = len(EAS_START_NET.layers)  # 9; the first fc (and the global pool) at index 8
    cases = [
        (widen, (model, 1), {}, "pool"),
        (widen, (model, n), {}, "output"),
        (widen, (model, n + 1), {}, "layer="),
        (widen, (model, -1), {}, "layer="),
        (widen, (model, 0, 16), {}, "above the current width"),
        (widen, (model, 0, 8), {}, "above the current width"),
        (deepen, (model, 3), {"layer_type": "fc"}, "before the global average pool"),
        (deepen, (model, n), {"layer_type": "conv"}, "after the global average pool"),
        (deepen, (model, 0), {}, "no conv below"),
        (deepen, (model, n + 1), {}, "position="),
        (deepen, (model, 3, 4), {}, "kernel="),
        (deepen, (model, 3), {"layer_type": "pool"}, "layer_type="),
        (deepen, (torch.nn.Linear(2, 2), 1), {}, "plain-CNN"),
    ]
    for fn, args, kwargs, match in cases:
        with pytest.raises(TransformError, match=match):
            fn(*args, rng=rng, **kwargs)
    top = build_model(PlainCNN((ConvLayer(512, 1), FCLayer(1024))), (1, 4, 4), 3)
    with pytest.raises(TransformError, match="top width"):
        widen(top, 0, rng=rng)
    with pytest.raises(TransformError, match="top width"):
        widen(top, 1, rng=rng)


def test_legal_actions() -> None:
    assert legal_widen_layers(EAS_START_NET) == [0, 2, 4, 6, 8]
    assert legal_deepen_positions(EAS_START_NET, "conv") == list(range(1, 9))
    assert legal_deepen_positions(EAS_START_NET, "fc") == [8, 9]
    assert legal_deepen_positions(EAS_START_NET) == list(range(1, 10))
    top = PlainCNN((PoolLayer("max", 2), ConvLayer(512, 3), ConvLayer(20, 1), FCLayer(1024)))
    assert legal_widen_layers(top) == [2]
    assert legal_deepen_positions(top) == [2, 3, 4]
    model = build_model(top, (1, 8, 8), 3)
    rng = np.random.default_rng(0)
    for position in range(len(top.layers) + 1):
        if position in legal_deepen_positions(top):
            deepen(model, position, rng=rng)
        else:
            with pytest.raises(TransformError):
                deepen(model, position, rng=rng)
