"""Ship a found network: ONNX or TorchScript files of any model :func:`nas_gym.build_model` builds.

``export(model, input_shape, "model.onnx", fmt="onnx")`` writes the file and checks it: the exported
program is run on seeded random inputs and its outputs must equal the PyTorch module's (max
absolute difference <= ``atol``), else :class:`~nas_gym.errors.ConfigError` is raised and the file is
removed. ONNX is checked with ``onnxruntime`` when it is installed (``pip install nas_gym[test]``);
TorchScript is always checked.

TorchScript comes from ``torch.jit.trace``, not ``torch.jit.script``: the builders keep the
architecture value in Python (block lists, index tables) and index module lists with loop
variables, which ``script`` does not compile; every architecture is a static graph for a given
input size, so the trace records it exactly (the outputs check proves it). ONNX uses the
TorchScript-based exporter (``dynamo=False``: no ``onnxscript`` dependency) with a dynamic batch
axis, opset 17.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, bad_value

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 17


def _inputs(input_shape: Sequence[int], batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *[int(s) for s in input_shape]), generator=gen)


def export(model: nn.Module, input_shape: Sequence[int], path: str | os.PathLike, *,
           fmt: str = "onnx", check: bool = True, atol: float = 1e-5, seed: int = 0) -> Path:
    """Write ``model`` (eval mode, CPU, float32) to ``path`` in ``fmt`` and check its outputs.

    :param input_shape: ``(channels, height, width)`` of one sample (the batch axis is dynamic).
    :param check: run the exported file on random inputs (batches of 1 and 3) and compare.
    :param atol: largest output difference accepted by the check, relative to ``max(1, largest
        |output|)``.
    :return: the written path.
    """
    if fmt not in FORMATS:
        raise bad_value("format", fmt, FORMATS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().float().eval()
    example = _inputs(input_shape, 2, seed)
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(path))
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if check:
        try:
            inputs = [_inputs(input_shape, batch, seed + batch) for batch in (1, 3)]
            diff = max_difference(model, path, inputs, fmt, relative=True)
            if diff is not None and not diff <= atol:
                raise ConfigError(f"the {fmt} export of {type(model).__name__} differs from "
                                  f"the PyTorch model by {diff:.3g} relative to its largest "
                                  f"output (> atol={atol})")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return path


def run_exported(path: str | os.PathLike, inputs: Sequence[torch.Tensor],
                 fmt: str) -> list[np.ndarray] | None:
    """The outputs of an exported file on each input (None for ONNX without ``onnxruntime``)."""
    if fmt == "torchscript":
        loaded = torch.jit.load(str(path), map_location="cpu")
        # no profiling / fusion passes: they recompile per input shape and cost seconds here
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return [loaded(x).numpy() for x in inputs]
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x.numpy()})[0] for x in inputs]


def max_difference(model: nn.Module, path: str | os.PathLike,
                   inputs: torch.Tensor | Sequence[torch.Tensor], fmt: str, *,
                   relative: bool = False) -> float | None:
    """Max absolute difference between ``model(x)`` and the exported file's output over the
    inputs (divided by ``max(1, max |model(x)|)`` with ``relative``: float32 rounding grows with
    the logits); None for ONNX without ``onnxruntime``."""
    inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    outputs = run_exported(path, inputs, fmt)
    if outputs is None:
        return None
    worst = 0.0
    for x, got in zip(inputs, outputs, strict=True):
        with torch.no_grad():
            want = model.eval()(x).numpy()
        if got.shape != want.shape:
            raise ConfigError(f"the exported {fmt} model gives shape {got.shape}, not "
                              f"{want.shape}")
        diff = float(np.max(np.abs(got - want)))
        worst = max(worst, diff / max(1.0, float(np.max(np.abs(want)))) if relative else diff)
    return worst
