"""Cost metrics of a child network (SPEC §2), all counted on the real module's structure.

- ``params``: trainable parameter count.
- ``flops``: FLOPs of one forward pass on one sample, as ``torch.utils.flop_counter.FlopCounterMode``
  counts them (convolutions and matrix products, 2 FLOPs per multiply-accumulate; element-wise ops,
  BN and pooling are not counted, as in torch).
- ``memory_bytes``: parameter bytes + bytes of every intermediate activation of one sample (what a
  training step keeps for the backward pass), float32.
- ``compute_intensity``: FLOPs per byte moved (EPNAS Table 5), bytes moved = parameter bytes + the
  bytes each leaf module reads and writes.
- ``latency_ms``: measured on one thread, the median of blocks of timed batch-1 forward passes on
  the eval device after warm-up (``torch.utils.benchmark`` ``blocked_autorange``).
- ``train_seconds``: measured by the training loop; known only after training (B-ENAS).

``params``, ``flops``, ``memory_bytes`` and ``compute_intensity`` are known before training and
computed before it, so infeasible children can be rejected untrained.

**How they are counted, fast.** :func:`static_costs` runs one batch-1 eval-mode forward pass with a
hook on every leaf module: the FLOPs of a convolution or linear layer follow ``FlopCounterMode``'s
rule for the aten op it runs (2 x output elements x input channels per group x kernel area;
2 x output elements x input features), bytes come from the tensors the hooks see. A model with a
module it has no rule for (an unknown leaf type, or a module holding its own parameters) is
counted by ``FlopCounterMode`` itself (:func:`flop_counter_costs`, also the reference
``tests/test_costs.py`` compares with on every op of every space). :func:`architecture_costs` gives
the same numbers from the architecture value: the space's closed form
(:mod:`nas_gym.models.closed_form`) when it has one, else the hooks on a module built without
initialisation. Why: ``FlopCounterMode`` is a Python dispatch mode (the slowest part of a new
architecture's pre-training costs), and its first use imports ``torch._dynamo`` (~2 s per process).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .arch.base import Architecture
from .models import COST_FORMS, build_model

#: Costs computed before training, from the architecture alone.
PRETRAIN_METRICS: tuple[str, ...] = ("params", "flops", "memory_bytes", "compute_intensity")
#: Every metric a budget or a penalty may name.
COST_METRICS: tuple[str, ...] = PRETRAIN_METRICS + ("latency_ms", "train_seconds")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Leaf module types that run no op ``FlopCounterMode`` counts. A model's own module class joins
#: them with a class attribute ``counts_no_flops = True`` (its forward runs no convolution or
#: matrix product).
_NO_FLOPS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.SiLU,
    nn.GELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.MaxPool1d,
    nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.ZeroPad2d, nn.ConstantPad2d,
    nn.Sequential, nn.ModuleList, nn.ModuleDict)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _leaf(m: nn.Module) -> bool:
    return next(iter(m.children()), None) is None


def counted_by_hooks(model: nn.Module) -> bool:
    """Whether the leaf hooks see every FLOP of ``model`` (see the module doc)."""
    for m in model.modules():
        kind = type(m)
        if kind in _CONVS or kind is nn.Linear or kind in _NO_FLOPS \
                or getattr(kind, "counts_no_flops", False):
            continue
        if _leaf(m) or next(m.parameters(recurse=False), None) is not None:
            return False
    return True


def static_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """params, flops, memory_bytes and compute_intensity of ``model`` for one sample, in one
    eval-mode forward pass on the module's device (its mode is restored)."""
    return _forward_costs(model, input_shape, flop_counter=not counted_by_hooks(model))


def flop_counter_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """:func:`static_costs` with the FLOPs counted by ``FlopCounterMode`` (the reference)."""
    return _forward_costs(model, input_shape, flop_counter=True)


def _forward_costs(model: nn.Module, input_shape: tuple[int, ...], *,
                   flop_counter: bool) -> dict[str, float]:
    device = next(model.parameters()).device
    was_training = model.training
    activations = moved = flops = 0

    def hook(m: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal activations, moved, flops
        if not isinstance(output, torch.Tensor):
            return
        out = output.numel() * output.element_size()
        activations += out
        moved += out + sum(t.numel() * t.element_size() for t in inputs
                           if isinstance(t, torch.Tensor))
        kind = type(m)
        if kind in _CONVS:
            flops += 2 * output.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        elif kind is nn.Linear:
            flops += 2 * output.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if _leaf(m)]
    try:
        model.eval()
        x = torch.zeros((1, *input_shape), device=device)
        with torch.no_grad():
            if flop_counter:  # imported here: its first use imports torch._dynamo
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    model(x)
                flops = int(counter.get_total_flops())
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "params": count_params(model),
        "flops": int(flops),
        "memory_bytes": int(param_bytes + activations),
        "compute_intensity": flops / max(1, param_bytes + moved),
    }


def architecture_costs(arch: Architecture, input_shape: tuple[int, int, int],
                       num_classes: int) -> dict[str, float]:
    """:func:`static_costs` of ``build_model(arch, input_shape, num_classes)``, from the
    architecture: its space's closed form when there is one, else counted on a module built
    without initialisation (same numbers either way; ``tests/test_costs.py``)."""
    if arch.kind in COST_FORMS:
        costs = COST_FORMS.get(arch.kind)(arch, tuple(input_shape), int(num_classes))
        if costs is not None:
            return costs
    return static_costs(build_model(arch, input_shape, num_classes, init=False), input_shape)


def measure_latency(model: nn.Module, input_shape: tuple[int, ...],
                    device: torch.device | str = "cpu", *, min_run_time: float = 0.05) -> float:
    """Milliseconds of one batch-1 eval-mode forward pass on ``device``, on one torch thread: the
    median over blocks of passes timed by ``torch.utils.benchmark.Timer.blocked_autorange`` (which
    warms up, sizes the blocks so the timer's overhead is negligible, and synchronises CUDA),
    ``min_run_time`` seconds in all. One thread because a deployed net answers one request per core
    and a multi-threaded reading depends on what else runs on the machine (it read 2-3 s instead of
    16-23 ms on the loaded 2-core machine)."""
    import logging

    # torch.utils.benchmark imports cpp_extension, which logs a warning when CUDA is absent
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    if not (isinstance(min_run_time, (int, float)) and min_run_time > 0):
        raise ValueError(f"min_run_time={min_run_time!r} is not accepted; expected seconds > 0")
    was_training = model.training
    model.eval()
    x = torch.zeros((1, *input_shape), device=device)
    try:
        with torch.no_grad():
            timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x},
                                    num_threads=1)
            seconds = timer.blocked_autorange(min_run_time=float(min_run_time)).median
    finally:
        model.train(was_training)
    return float(seconds * 1e3)
