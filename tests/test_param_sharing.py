"""EPNAS §3.4 parameter-sharing dictionary: exact / spliced / padded loads, clashes, processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import nas_gym
from nas_gym.arch import epnas_ops as E
from nas_gym.arch.epnas import EpnasLayer, LayerNet
from nas_gym.evaluators.param_sharing import ParamShareDict, fit_tensor

L = EpnasLayer
NET = LayerNet(layers=(L("conv2d", channels=32, filter_width=3),
                       L("max_pool", src1=1),
                       L("conv2d", channels=64, filter_width=3, src1=2, src2=1)))
SHAPE = (3, 8, 8)


def build(arch=NET, seed: int = 0):
    return nas_gym.build_model(arch, SHAPE, 10, seed=seed)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def with_layer0(**fields) -> LayerNet:
    import dataclasses
    return dataclasses.replace(NET, layers=(dataclasses.replace(NET.layers[0], **fields),
                                            *NET.layers[1:]))


def test_same_keys_and_shapes_load_exactly() -> None:
    a = build(seed=1)
    shared = ParamShareDict()
    assert shared.update_from(a, 0.5)["stored"] == ["stem/conv3x3", "0/conv2d", "2/conv2d",
                                                    "head/linear"]
    b = build(seed=2)
    report = shared.load_into(b)
    assert report["exact"] == ["stem/conv3x3", "0/conv2d", "2/conv2d", "head/linear"]
    assert report["spliced"] == report["padded"] == report["missing"] == []
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


def test_widened_and_larger_kernel_is_padded() -> None:
    a = build(seed=1)
    shared = ParamShareDict()
    shared.update_from(a, 0.5)
    wide = E.scale(E.scale(NET, [1, 0, 0]), [1, 0, 0], field="filter_width")
    assert wide.layers[0].channels == 64 and wide.layers[0].filter_width == 5
    c = build(wide, seed=3)
    fresh = state(c)
    report = shared.load_into(c)
    assert "0/conv2d" in report["padded"] and "0/conv2d" not in report["spliced"]
    old, new = a.layers[0].op[0].weight, c.layers[0].op[0].weight  # (32,32,3,3) -> (64,32,5,5)
    assert torch.equal(new[:32, :, 1:4, 1:4], old)  # kernel centred
    ring = new[:32].clone()
    ring[:, :, 1:4, 1:4] = 0
    assert ring.abs().max() == 0  # zero-padded kernel taps
    assert torch.equal(new[32:], fresh["layers.0.op.0.weight"][32:])  # new units keep fresh init
    bn_old, bn_new = a.layers[0].op[1], c.layers[0].op[1]
    assert torch.equal(bn_new.running_var[:32], bn_old.running_var)
    assert torch.equal(bn_new.weight[32:], fresh["layers.0.op.1.weight"][32:])
    # the next conv reads 64 instead of 32 channels: new input columns are zero
    old2, new2 = a.layers[2].op[0].weight, c.layers[2].op[0].weight
    assert torch.equal(new2[:, :32], old2) and new2[:, 32:].abs().max() == 0
    assert "stem/conv3x3" in report["exact"]


def test_narrowed_and_smaller_kernel_is_spliced() -> None:
    a = build(seed=1)
    shared = ParamShareDict(pad="zeros")
    shared.update_from(a, 0.5)
    c = build(with_layer0(channels=16, filter_width=1), seed=3)
    report = shared.load_into(c)
    assert "0/conv2d" in report["spliced"]
    assert torch.equal(c.layers[0].op[0].weight, a.layers[0].op[0].weight[:16, :, 1:2, 1:2])
    # layer 2 reads the pooled 16 channels now: its input columns are cropped too
    assert torch.equal(c.layers[2].op[0].weight, a.layers[2].op[0].weight[:, :16])
    assert "2/conv2d" in report["spliced"]


def test_zeros_mode_pads_new_units_with_zero() -> None:
    shared = ParamShareDict(pad="zeros")
    a = build(seed=1)
    shared.update_from(a, 0.5)
    c = build(with_layer0(channels=64), seed=3)
    shared.load_into(c)
    assert c.layers[0].op[0].weight[32:].abs().max() == 0
    out, cropped, padded = fit_tensor(torch.ones(2, 3), torch.full((3, 2), 5.0), "zeros")
    assert out.tolist() == [[1, 1], [1, 1], [0, 0]] and cropped and padded


def test_clash_keeps_the_more_accurate_model() -> None:
    shared = ParamShareDict()
    m1, m2, m3 = build(seed=1), build(seed=2), build(seed=3)
    shared.update_from(m1, 0.5)
    assert shared.update_from(m2, 0.7)["kept"] == []
    assert shared.update_from(m3, 0.6)["stored"] == []
    assert shared.update_from(m3, float("nan"))["stored"] == []
    target = build(seed=4)
    shared.load_into(target)
    assert torch.equal(target.layers[0].op[0].weight, m2.layers[0].op[0].weight)
    # other shapes under one key: with one variant per key (the paper) accuracy decides too
    wide = build(with_layer0(channels=64), seed=5)
    assert "0/conv2d" in shared.update_from(wide, 0.65)["kept"]
    assert "0/conv2d" in shared.update_from(wide, 0.9)["stored"]
    assert len(shared.variants("0/conv2d")) == 1


def test_closest_shape_variant_is_chosen() -> None:
    shared = ParamShareDict(max_variants=2)
    narrow, wide = build(seed=1), build(with_layer0(channels=64), seed=2)
    shared.update_from(narrow, 0.9)
    shared.update_from(wide, 0.4)
    assert len(shared.variants("0/conv2d")) == 2
    target = build(with_layer0(channels=96), seed=3)
    shared.load_into(target)
    assert torch.equal(target.layers[0].op[0].weight[:64], wide.layers[0].op[0].weight)


def test_module_nets_share_per_copy_and_branch() -> None:
    arch = E.random_module_net(np.random.default_rng(0), 3, num_modules=2)
    a = nas_gym.build_model(arch, SHAPE, 10, seed=1)
    shared = ParamShareDict()
    shared.update_from(a, 0.5)
    b = nas_gym.build_model(arch, SHAPE, 10, seed=2)
    report = shared.load_into(b)
    assert "m1/pre" in report["exact"] and not report["missing"]
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


def test_in_memory_dict_pickles_and_merges() -> None:
    left, right = ParamShareDict(), ParamShareDict()
    m1, m2 = build(seed=1), build(seed=2)
    left.update_from(m1, 0.5)
    right.update_from(m2, 0.8)
    left.merge(pickle.loads(pickle.dumps(right)))
    target = build(seed=3)
    left.load_into(target)
    assert torch.equal(target.head.weight, m2.head.weight)


WORKER = textwrap.dedent("""
    import pickle, sys
    import nas_gym
    shared = pickle.loads(bytes.fromhex(sys.argv[1]))
    arch = nas_gym.architecture_from_dict(sys.argv[2])
    for step in range(5):
        model = nas_gym.build_model(arch, (3, 8, 8), 10, seed=int(sys.argv[3]) + step)
        shared.update_from(model, float(sys.argv[4]) + step / 100)
""")


def test_file_backed_dict_works_from_two_processes(tmp_path: Path) -> None:
    shared = ParamShareDict(tmp_path / "share.sqlite")
    blob = pickle.dumps(shared).hex()
    # process A: seeds 10..14 at accuracies 0.30..0.34; B: seeds 20..24 at 0.60..0.64
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, blob, NET.to_json(), str(seed),
                               str(acc)]) for seed, acc in ((10, 0.3), (20, 0.6))]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert shared.variants("0/conv2d")[0].accuracy == pytest.approx(0.64)
    target = build(seed=0)
    assert shared.load_into(target)["exact"] == ["stem/conv3x3", "0/conv2d", "2/conv2d",
                                                 "head/linear"]
    best = build(seed=24)
    for name, value in best.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    reopened = pickle.loads(pickle.dumps(shared))
    assert reopened.keys() == shared.keys() and len(reopened) == 4
