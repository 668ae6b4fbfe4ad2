"""Cost metrics of a child network (SPEC §2), all counted on the real module.

- ``params``: trainable parameter count.
- ``flops``: FLOPs of one forward pass on one sample, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, 2 FLOPs per
  multiply-accumulate; element-wise ops, BN and pooling are not counted, as in torch).
- ``memory_bytes``: parameter bytes + bytes of every intermediate activation of one sample (what a
  training step keeps for the backward pass), float32.
- ``compute_intensity``: FLOPs per byte moved (EPNAS Table 5), bytes moved = parameter bytes + the
  bytes each leaf module reads and writes.
- ``latency_ms``: measured on one thread, the median of blocks of timed batch-1 forward passes on
  the eval device after warm-up (``torch.utils.benchmark`` ``blocked_autorange``).
- ``train_seconds``: measured by the training loop; known only after training (B-ENAS).

``params``, ``flops``, ``memory_bytes`` and ``compute_intensity`` are known before training and
computed before it, so infeasible children can be rejected untrained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Costs computed before training, from the architecture alone.
PRETRAIN_METRICS: tuple[str, ...] = ("params", "flops", "memory_bytes", "compute_intensity")
#: Every metric a budget or a penalty may name.
COST_METRICS: tuple[str, ...] = PRETRAIN_METRICS + ("latency_ms", "train_seconds")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _leaf(m: nn.Module) -> bool:
    return next(iter(m.children()), None) is None


def static_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """params, flops, memory_bytes and compute_intensity of ``model`` for one sample, in one
    eval-mode forward pass on CPU (the module's mode and device are restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    activations = 0
    moved = 0

    def hook(_m: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal activations, moved
        out = output if isinstance(output, torch.Tensor) else None
        if out is None:
            return
        activations += out.numel() * out.element_size()
        moved += out.numel() * out.element_size()
        moved += sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in model.modules() if _leaf(m)]
    try:
        model.eval()
        x = torch.zeros((1, *input_shape), device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    flops = int(counter.get_total_flops())
    return {
        "params": count_params(model),
        "flops": flops,
        "memory_bytes": int(param_bytes + activations),
        "compute_intensity": flops / max(1, param_bytes + moved),
    }


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
