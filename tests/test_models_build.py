"""``build_model``'s parts copied from cached prototypes (issue 15) give the very module a plain
construction gives: the same structure, the same weights for every seed (with and without the He
init), the same draws from torch's global generator."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import nas_gym
from nas_gym.arch import epnas_ops as E
from nas_gym.arch.base import Architecture
from nas_gym.arch.bench_macro import NUM_LAYERS, BenchMacroArchitecture
from nas_gym.arch.cell import ENAS_OPS, NASNET_OPS, Block, Cell, CellArchitecture
from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.arch.plain import DIGITS_START_NET
from nas_gym.models import he_init_
from nas_gym.models.builder import copying_parts, fresh
from nas_gym.models.cell_ops import SepConv


def _cells(rng: np.random.Generator) -> list[tuple[Architecture, tuple[int, int, int]]]:
    """Every op at normal and reduction positions, both combines, shared and separate
    reduction cells, odd widths and map sizes, then random cells."""
    ops = sorted(set(NASNET_OPS) | set(ENAS_OPS))
    out = []
    for i, op in enumerate(ops):
        other, combine = ops[(i + 5) % len(ops)], ("add", "concat")[i % 2]
        normal = Cell((Block(0, 1, op, other), Block(2, 0, other, op, combine)))
        reduction = Cell((Block(1, 0, op, op), Block(2, 1, other, op))) if i % 2 else None
        out.append((CellArchitecture(normal, reduction, n_normal=1 + i % 2, channels=4 + i % 3),
                    ((1, 8, 8), (3, 9, 7))[i % 2]))
    for _ in range(10):
        blocks = [Block(int(rng.integers(0, 2 + b)), int(rng.integers(0, 2 + b)),
                        str(rng.choice(ops)), str(rng.choice(ops))) for b in range(3)]
        out.append((CellArchitecture(Cell(tuple(blocks)), channels=4), (1, 8, 8)))
    return out


def _others(rng: np.random.Generator) -> list[tuple[Architecture, tuple[int, int, int]]]:
    macro = MacroArchitecture((MacroLayer(8, 3, 1, ()), MacroLayer(3, 5, 2, (0,)),
                               MacroLayer(8, 1, 1, (0, 1))), head="gap")
    return [(macro, (1, 8, 8)), (DIGITS_START_NET, (1, 8, 8)),
            (BenchMacroArchitecture(tuple(int(k) for k in rng.integers(0, 3, NUM_LAYERS))),
             (3, 8, 8)),
            (E.random_layer_net(rng, 4, stem_channels=8), (1, 8, 8)),
            (E.random_module_net(rng, 3, num_modules=2, stem_channels=8), (3, 9, 7))]


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    assert repr(a) == repr(b)
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert [(n, p.requires_grad) for n, p in a.named_parameters()] == \
        [(n, p.requires_grad) for n, p in b.named_parameters()]
    for ma, mb in zip(a.modules(), b.modules(), strict=True):
        assert sorted(vars(ma)) == sorted(vars(mb))


@pytest.mark.parametrize("space", ["cell", "others"])
def test_copied_parts_equal_constructed_ones(space: str) -> None:
    """Parts copied from prototypes (the default) give the module constructed parts give, with
    and without the He init, for every op and space; the build draws as much from torch's global
    generator (an SB3 agent samples from it between builds)."""
    rng = np.random.default_rng(0)
    for arch, shape in (_cells if space == "cell" else _others)(rng):
        for seed in (0, 3):
            for init in (True, False):
                start = torch.random.get_rng_state()
                built = nas_gym.build_model(arch, shape, 10, seed=seed, init=init)
                drawn = torch.random.get_rng_state()
                torch.random.set_rng_state(start)
                with copying_parts(False):
                    reference = nas_gym.build_model(arch, shape, 10, seed=seed, init=init)
                _assert_same(built, reference)
                assert torch.equal(torch.random.get_rng_state(), drawn)


def test_copied_parts_share_no_state() -> None:
    arch = _cells(np.random.default_rng(1))[0][0]
    a, b = (nas_gym.build_model(arch, (1, 8, 8), 10, seed=0) for _ in range(2))
    ptrs = {t.data_ptr() for t in [*a.parameters(), *a.buffers()] if t.numel()}
    assert not ptrs & {t.data_ptr() for t in [*b.parameters(), *b.buffers()] if t.numel()}
    for ma, mb in zip(a.modules(), b.modules(), strict=True):
        assert ma is not mb
        for k, v in vars(ma).items():
            if isinstance(v, (dict, list, set)):
                assert v is not vars(mb)[k], k
    a.cells[0].pre1.register_forward_hook(lambda *_: None)
    assert not b.cells[0].pre1._forward_hooks  # a hook on one child is not on the other
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_fresh_copies_only_what_it_can_reset() -> None:
    assert fresh(SepConv, 4, 3, 1) is not fresh(SepConv, 4, 3, 1)
    # a LayerNorm is not among the reset types: built every time
    assert torch.equal(fresh(nn.LayerNorm, 6).weight, torch.ones(6))
    for factory, args in ((nn.Conv2d, (3, 2, 3)), (nn.Conv1d, (2, 5, 1)), (nn.Linear, (7, 3))):
        fresh(factory, *args)  # the prototype
        start = torch.random.get_rng_state()
        copied = fresh(factory, *args)  # a copy, its parameters reset, the bias too
        drawn = torch.random.get_rng_state()
        torch.random.set_rng_state(start)
        _assert_same(copied, factory(*args))
        assert torch.equal(torch.random.get_rng_state(), drawn)
    assert fresh(nn.Conv2d, 2, 2, [3, 3]).kernel_size == (3, 3)  # unhashable: constructed
    with torch.device("meta"):  # not the default device: constructed there
        assert fresh(nn.Conv2d, 2, 2, 3).weight.is_meta


def test_he_init_is_kaiming_normal_from_the_generator() -> None:
    """``he_init_`` (its std cached per shape) draws what ``nn.init.kaiming_normal_`` draws."""
    rng = np.random.default_rng(2)
    for arch, shape in [*_cells(rng)[:4], *_others(rng)]:
        model = nas_gym.build_model(arch, shape, 10, init=False)
        reference = copy.deepcopy(model)
        he_init_(model, torch.Generator().manual_seed(5))
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for m in reference.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu",
                                            generator=gen)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                    m.reset_running_stats()
        _assert_same(model, reference)
