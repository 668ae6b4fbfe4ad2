"""EPNAS spaces (seed 004, Tables 2-3): values, builders, scale / insert / remove and masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nas_gym
from nas_gym.arch import architecture_from_dict
from nas_gym.arch import epnas_ops as E
from nas_gym.arch.epnas import (
    BRANCH_CHANNELS,
    BRANCH_TYPES,
    LAYER_CHANNELS,
    LAYER_TYPES,
    MAX_BRANCHES,
    MAX_LAYERS,
    Branch,
    EpnasLayer,
    LayerNet,
    ModuleNet,
)
from nas_gym.errors import ArchitectureError, TransformError

L = EpnasLayer


def chain(*layers: EpnasLayer) -> LayerNet:
    return LayerNet(layers=tuple(layers))


def test_tables_follow_the_paper() -> None:
    assert LAYER_TYPES == ("conv2d", "dep_sep_conv2d", "max_pool", "avg_pool", "add")
    assert LAYER_CHANNELS == (16, 32, 64, 96, 128, 256)
    assert BRANCH_CHANNELS == (8, 12, 16, 24, 32)
    assert len(BRANCH_TYPES) == 7
    assert len(E.LAYER_FIELDS["src2"]) == MAX_LAYERS + 1
    assert len(E.BRANCH_FIELDS["src1"]) == MAX_BRANCHES + 1


def test_ignored_fields_are_canonical() -> None:
    assert L("max_pool", filter_width=7, channels=256, activation="elu") == L("max_pool")
    assert Branch("maxpool-none", src2=0, channels=32) == Branch("maxpool-none", channels=8)
    a = chain(L("conv2d"), L("avg_pool", filter_width=5, src1=1))
    b = chain(L("conv2d"), L("avg_pool", src1=1))
    assert a.sha256 == b.sha256


@pytest.mark.parametrize("bad, match", [
    (chain(L("conv2d", src1=1)), "src1=1"),
    (chain(L("conv2d"), L("conv2d", src1=1, src2=2)), "src2=2"),
    (chain(L("add", src2=-1)), "add"),
    (chain(L("conv2d", channels=48)), "channels=48"),
    (chain(L("conv")), "did you mean|expected one of"),
    (LayerNet(layers=()), "1 to"),
    (LayerNet(layers=(L("conv2d"),) * (MAX_LAYERS + 1)), "1 to"),
    (ModuleNet(branches=(Branch("conv-conv", src2=1),)), "src2=1"),
    (ModuleNet(branches=(Branch("conv-none"),), num_modules=0), "num_modules"),
])
def test_validate_rejects(bad, match) -> None:
    with pytest.raises(ArchitectureError, match=match):
        bad.validate()
    with pytest.raises(ArchitectureError):
        architecture_from_dict(json.loads(bad.to_json()))


def test_split_parts() -> None:
    net = chain(*[L("conv2d", src1=i) for i in range(5)])
    assert E.split_parts(net, 2) == [[0, 1, 2], [3, 4]]
    assert E.split_parts(net, 7) == [[0], [1], [2], [3], [4], [], []]
    assert sum(E.split_parts(net, 3), []) == list(range(5))


def test_scale_moves_clamps_and_masks() -> None:
    net = chain(L("conv2d", channels=16), L("max_pool", src1=1), L("conv2d", channels=256, src1=2))
    assert E.scale_mask(net, 3).tolist() == [[False, True, True], [False, True, False],
                                             [True, True, False]]
    up = E.scale(net, [1, 1, 1])
    assert [x.channels for x in up.layers] == [32, 16, 256]  # pool untouched, 256 clamped
    down = E.scale(net, [-1, 0, -1])
    assert [x.channels for x in down.layers] == [16, 16, 128]
    wide = E.scale(net, [1, 0], field="filter_width")
    assert [x.filter_width for x in wide.layers] == [5, 1, 3]  # part 0 = layers 0, 1
    with pytest.raises(ValueError, match="part_moves"):
        E.scale(net, [2])


def test_insert_rewires_the_chain_and_shifts_sources() -> None:
    net = chain(L("conv2d"), L("conv2d", src1=1, src2=0), L("add", src1=2, src2=1))
    out = E.insert(net, 1, L("dep_sep_conv2d", src1=1, src2=0))
    assert [(x.src1, x.src2) for x in out.layers] == [(0, -1), (1, 0), (2, 0), (3, 1)]
    appended = E.insert(net, 3, L("max_pool", src1=3))
    assert appended.layers[:3] == net.layers and appended.layers[3].src1 == 3
    mod = ModuleNet(branches=(Branch("conv-conv", src1=0, src2=0), Branch("conv-conv", src1=1,
                                                                          src2=0)))
    out_m = E.insert(mod, 1, Branch("maxpool-none", src1=1))
    assert [(b.src1, b.src2) for b in out_m.branches] == [(0, 0), (1, 0), (1, 0)]
    with pytest.raises(TransformError, match="src1"):
        E.insert(net, 1, L("conv2d", src1=2))


def test_remove_bypasses_the_removed_layer() -> None:
    net = chain(L("conv2d"), L("conv2d", src1=1), L("conv2d", src1=2, src2=2), L("add", src1=3,
                                                                                 src2=1))
    out = E.remove(net, 1)  # node 2 (layer 1) is read by layer 2: remapped to layer 1's src1 = 1
    assert [(x.src1, x.src2) for x in out.layers] == [(0, -1), (1, 1), (2, 1)]
    with pytest.raises(TransformError, match="one entry"):
        E.remove(chain(L("conv2d")), 0)


def test_positions_and_check_table() -> None:
    net = chain(*[L("conv2d", src1=i) for i in range(10)])
    assert E.op_mask(net).tolist() == [True, True, True]
    assert E.op_mask(chain(L("conv2d"))).tolist() == [True, True, False]
    full = LayerNet(layers=tuple(L("conv2d", src1=i) for i in range(MAX_LAYERS)))
    assert E.op_mask(full).tolist() == [True, False, True]
    ins = E.position_mask(net, "insert")
    assert ins.size == MAX_LAYERS + 5 and np.flatnonzero(ins).tolist() == list(range(15))
    assert [E.resolve_position(net, "insert", v) for v in (0, 10, 11, 12, 13, 14)] == \
        [0, 10, 2, 4, 6, 8]
    assert np.flatnonzero(E.position_mask(net, "remove")).tolist() == list(range(10))
    assert np.flatnonzero(E.position_mask(net, "keep")).tolist() == [0]
    with pytest.raises(TransformError, match="position=10"):
        E.resolve_position(net, "remove", 10)


def test_field_masks() -> None:
    net = chain(L("conv2d"), L("conv2d", src1=1))
    masks = E.field_masks(net, 1)
    assert np.flatnonzero(masks["src1"]).tolist() == [0, 1]
    assert np.flatnonzero(masks["src2"]).tolist() == [0, 1, 2]  # -1, 0, 1
    add = E.field_masks(net, 1, "add")
    assert not add["src2"][0] and add["channels"].sum() == 1 and add["activation"].sum() == 1
    conv = E.field_masks(net, 1, "conv2d")
    assert conv["channels"].all() and conv["pool_width"].sum() == 1
    mod = ModuleNet(branches=(Branch("conv-conv"),))
    one = E.field_masks(mod, 1, "avgpool-none")
    assert np.flatnonzero(one["src2"]).tolist() == [0] and one["pool_width"].all()


def test_nearest_legal_and_numpy_values() -> None:
    mask = np.array([False, True, False, False, True])
    assert [E.nearest_legal(mask, i) for i in range(5)] == [1, 1, 1, 4, 4]
    net = chain(L("conv2d"))
    out = E.insert(net, np.int64(1), {"type": "conv2d", "src1": np.int64(1), "src2": np.int64(0)})
    assert type(out.layers[1].src1) is int and json.loads(out.to_json())


def test_random_nets_are_seeded() -> None:
    a = E.random_layer_net(np.random.default_rng(3), 6)
    assert a == E.random_layer_net(np.random.default_rng(3), 6) and len(a.layers) == 6
    m = E.random_module_net(np.random.default_rng(3), 4, num_modules=2)
    assert m == E.random_module_net(np.random.default_rng(3), 4, num_modules=2)
    assert len(m.branches) == 4 and m.num_modules == 2


def test_builder_shapes_and_share_units() -> None:
    net = chain(L("conv2d", channels=16, activation="crelu"), L("max_pool", pool_width=3, src1=1),
                L("conv2d", channels=64, src1=2, src2=0))
    model = nas_gym.build_model(net, (3, 9, 9), 10)
    assert model.layers[0].out_channels == 32  # crelu doubles
    assert model.layers[2].proj is not None  # skip from the 32-channel stem into 64 channels
    nodes = [model.stem(torch.randn(2, 3, 9, 9))]
    nodes.append(model.layers[0](nodes[0]))
    nodes.append(model.layers[1](nodes[1]))
    assert nodes[2].shape == (2, 32, 5, 5)  # ceil(9 / 2)
    assert list(model.share_units()) == ["stem/conv3x3", "0/conv2d", "1/max_pool", "2/conv2d",
                                         "head/linear"]
    mod = ModuleNet(branches=(Branch("conv-maxpool", channels=8, src1=0, src2=0, propagate=0),
                              Branch("1x7-7x1-none", channels=12, src1=1, propagate=0)),
                    num_modules=2, stem_channels=16)
    mm = nas_gym.build_model(mod, (1, 8, 8), 10)
    # nothing propagates: the loose end (branch 1) is the output; channels x2 in copy 1
    assert mm.stack[0].out_channels == 12 and mm.stack[1].out_channels == 24
    assert mm(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert "m1.b0/conv-maxpool" in mm.share_units()


def _random_transform(arch, rng: np.random.Generator):
    """One random legal transform chosen through the mask helpers only."""
    parts, field = int(rng.integers(1, 5)), E.SCALE_FIELDS[int(rng.integers(2))]
    moves = [E.MOVES[E.sample_masked(rng, row)] for row in E.scale_mask(arch, parts, field=field)]
    op = E.OPS[E.sample_masked(rng, E.op_mask(arch))]
    scaled = E.scale(arch, moves, field=field)
    value = E.sample_masked(rng, E.position_mask(scaled, op))
    entry = None
    if op == "insert":
        pos = E.resolve_position(scaled, op, value)
        table = E.fields_of(arch)
        kind = table["type"][E.sample_masked(rng, E.field_masks(scaled, pos)["type"])]
        masks = E.field_masks(scaled, pos, kind)
        entry = E.make_entry(arch, {n: table[n][E.sample_masked(rng, masks[n])] for n in table})
    return E.apply_transform(arch, moves, op, value, entry, field=field)


def _check(arch, input_shape, seen: set[str] | None = None) -> None:
    assert architecture_from_dict(json.loads(arch.to_json())) == arch
    if seen is not None:
        if arch.sha256 in seen:  # e.g. "keep" with no scale move: already built
            return
        seen.add(arch.sha256)
    model = nas_gym.build_model(arch, input_shape, 10).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, *input_shape))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.fixture
def one_thread():
    # tiny tensors: intra-op threads only add contention on a shared 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["layer", "module"])
def test_random_masked_transform_sequences_always_build(pattern: str, one_thread) -> None:
    """Property: 500 seeded sequences of up to 10 masked transforms from a random start net;
    every reached net validates, JSON round-trips and builds + runs at 1x8x8; a subset at 3x32x32."""
    reached, seen = 0, set()
    for seq in range(500):
        rng = np.random.default_rng(seq)
        if pattern == "layer":
            arch = E.random_layer_net(rng, int(rng.integers(1, 5)))
        else:
            arch = E.random_module_net(rng, int(rng.integers(1, 4)),
                                       num_modules=int(rng.integers(1, 3)))
        _check(arch, (1, 8, 8), seen)
        for _ in range(int(rng.integers(1, 11))):
            arch = _random_transform(arch, rng)
            _check(arch, (1, 8, 8), seen)
            reached += 1
        if seq % 25 == 0:
            _check(arch, (3, 32, 32))
    assert reached > 2000
