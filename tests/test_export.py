"""Exporting found networks: every op of every space exports to ONNX and TorchScript, and the
exported programs compute what the PyTorch module computes (onnxruntime for ONNX)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas_gym import build_model
from nas_gym.arch.cell import NASNET_OPS, Block, Cell, CellArchitecture
from nas_gym.arch.epnas import ACTIVATIONS, BRANCH_TYPES, Branch, EpnasLayer, LayerNet, ModuleNet
from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.arch.plain import ConvLayer, FCLayer, PlainCNN, PoolLayer
from nas_gym.checkpoint import save_model
from nas_gym.errors import ConfigError
from nas_gym.experiments.cli import main
from nas_gym.export import FORMATS, export, max_difference

pytest.importorskip("onnxruntime")  # a test extra: pip install -e ".[test]"

SHAPE = (1, 8, 8)


def _cell() -> CellArchitecture:
    """All 13 NASNet ops in one cell (7 blocks = 14 op slots); the cell also serves as the
    reduction cell, so every op is exported at stride 1 and 2 (identity -> factorized reduce)."""
    ops = [*NASNET_OPS, "sep_conv_3x3"]
    blocks = tuple(Block(i, i + 1, ops[2 * i], ops[2 * i + 1]) for i in range(7))
    return CellArchitecture(normal=Cell(blocks), reduction=None, n_normal=1, channels=4)


def _layer_net() -> LayerNet:
    layers = [EpnasLayer("conv2d", filter_width=3, channels=16, activation=a, src1=i)
              for i, a in enumerate(ACTIVATIONS)]
    n = len(layers)
    layers += [EpnasLayer("dep_sep_conv2d", filter_width=5, channels=16, activation="relu",
                          src1=n, src2=1),
               EpnasLayer("max_pool", pool_width=3, src1=n + 1),
               EpnasLayer("avg_pool", pool_width=2, src1=n + 2, src2=n),
               EpnasLayer("add", src1=n + 3, src2=n + 1)]
    return LayerNet(layers=tuple(layers), stem_channels=8)


def _module_net() -> ModuleNet:
    branches = tuple(Branch(t, filter_width=3, pool_width=3, channels=8, src1=b, src2=0,
                            propagate=int(b % 2 == 0)) for b, t in enumerate(BRANCH_TYPES))
    return ModuleNet(branches=branches, num_modules=2, stem_channels=4)


ARCHITECTURES = {
    "cell": _cell(),
    "macro_flatten": MacroArchitecture(layers=(
        MacroLayer(4, 3, 1), MacroLayer(8, 5, 2, (0,)), MacroLayer(4, 1, 1, (0, 1)),
        MacroLayer(8, 7, 1, (2,))), head="flatten"),
    "macro_gap": MacroArchitecture(layers=(MacroLayer(4, 3, 2), MacroLayer(8, 3, 1, (0,))),
                                   head="gap"),
    "plain": PlainCNN(layers=(ConvLayer(8, 3), PoolLayer("max", 2), ConvLayer(8, 5),
                              PoolLayer("avg", 2), FCLayer(16))),
    "densenet": PlainCNN(layers=(ConvLayer(4, 3), ConvLayer(4, 1), ConvLayer(4, 5), FCLayer(8)),
                         space="densenet"),
    "epnas_layer": _layer_net(),
    "epnas_module": _module_net(),
}


def _trained_like(arch) -> torch.nn.Module:
    """The model with non-trivial BN statistics (eval mode uses them), as after training."""
    model = build_model(arch, SHAPE, 10, seed=1)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0)))
    return model.eval()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_space_exports_with_equal_outputs(name, fmt, tmp_path):
    model = _trained_like(ARCHITECTURES[name])
    path = export(model, SHAPE, tmp_path / f"m{fmt}", fmt=fmt)  # checks batches 1 and 3 itself
    x = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(7))
    diff = max_difference(model, path, x, fmt, relative=True)  # / max(1, largest |logit|)
    assert diff is not None and diff <= 1e-5, diff


def test_a_wrong_export_is_caught_and_removed(tmp_path):
    model = _trained_like(ARCHITECTURES["plain"])
    path = export(model, SHAPE, tmp_path / "m.onnx")
    with torch.no_grad():
        model.head.bias.add_(1.0)  # the file no longer matches the module
    assert max_difference(model, path, torch.randn(2, *SHAPE), "onnx") == pytest.approx(1.0,
                                                                                          abs=1e-4)
    with pytest.raises(ValueError, match="format"):
        export(model, SHAPE, tmp_path / "m.x", fmt="tflite")
    with pytest.raises(ConfigError, match="differs"):
        export(model, SHAPE, tmp_path / "bad.onnx", atol=-1.0)
    assert not (tmp_path / "bad.onnx").exists()


def test_cli_export_of_a_final_model_and_a_store_entry(tmp_path, capsys):
    """``nas-gym export RUN`` ships final/model.pt; ``--key`` any store entry of the run."""
    import onnxruntime as ort

    from nas_gym.store import open_store

    run = tmp_path / "run"
    arch = ARCHITECTURES["macro_gap"]
    model = _trained_like(arch)
    save_model(model, run / "final" / "model.pt", input_shape=SHAPE, num_classes=10)
    (run / "config.json").write_text(json.dumps({"config": {"env": "MacroNAS-v0"},
                                                 "env_kwargs": {"dataset": "digits"}}))
    store = open_store(str(run / "store.sqlite"))
    store.put("k1", {"accuracy": 0.5, "status": "ok"}, architecture=arch.to_dict())
    store.close()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    onnx_path = run / "export" / "model.onnx"
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
    got = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()))
    assert main(["export", str(run), "--format", "torchscript", "--key", "k1"]) == 0
    out = capsys.readouterr().out
    assert "k1.pt" in out and "initial weights" in out  # the store keeps no weights for k1
    loaded = torch.jit.load(str(run / "export" / "k1.pt"))
    assert loaded(torch.from_numpy(x)).shape == (4, 10)
    assert main(["export", str(run), "--key", "nope"]) == 2
    assert main(["export", str(tmp_path / "missing")]) == 2
