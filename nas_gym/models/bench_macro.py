"""Builder of :class:`~nas_gym.arch.bench_macro.BenchMacroArchitecture` networks (NAS-Bench-Macro,
Su et al. CVPR 2021) and their pre-training costs in closed form.

The network is the published one (see ``nas_gym.arch.bench_macro``); parameters and
``FlopCounterMode`` FLOPs equal the table's ``params`` and 2 x its ``flops`` (the table counts
multiply-accumulates) for all 6,561 architectures (``tests/test_bench_macro.py``).
:func:`bench_macro_costs` follows the modules line by line and counts what
:func:`nas_gym.costs.static_costs` counts (params; 2 FLOPs per multiply-accumulate of convs and
the linear layer; parameter bytes plus the output bytes of every leaf module, float32), so the
hard budget and table episodes never build a module: change both together.
"""

from __future__ import annotations

import torch
from torch import nn

from ..arch.bench_macro import HEAD_CHANNELS, OPS, STEM_CHANNELS, BenchMacroArchitecture, layer_plan
from .builder import register_builder

_BYTES = 4  # float32


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018): conv1x1 expand (x ``expansion``) + BN + ReLU,
    depthwise kxk (``stride``) + BN + ReLU, conv1x1 project + BN; plus the input when the shapes
    match (NAS-Bench-Macro uses ReLU, not ReLU6)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.conv = nn.Sequential(*_conv_bn(cin, hidden), nn.ReLU(),
                                  *_conv_bn(hidden, hidden, kernel, stride, groups=hidden),
                                  nn.ReLU(), *_conv_bn(hidden, cout))
        self.shortcut = cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x if self.shortcut else self.conv(x)


def _layer(op: int, cin: int, cout: int, stride: int) -> nn.Module | None:
    """The module of one searched layer (None: an identity that keeps the shape)."""
    name, expansion, kernel = OPS[op]
    if name == "identity":
        return None if (cin == cout and stride == 1) else nn.Sequential(
            *_conv_bn(cin, cout, 1, stride))
    return InvertedResidual(cin, cout, stride, expansion, kernel)


class BenchMacroNetwork(nn.Module):
    def __init__(self, arch: BenchMacroArchitecture, input_shape: tuple[int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(input_shape[0], STEM_CHANNELS, 3), nn.ReLU())
        layers = [_layer(op, *plan) for op, plan in zip(arch.ops, layer_plan(), strict=True)]
        self.features = nn.Sequential(*(m for m in layers if m is not None))
        self.head = nn.Sequential(*_conv_bn(layer_plan()[-1][1], HEAD_CHANNELS), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(HEAD_CHANNELS, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


@register_builder("nas_bench_macro")
def build_bench_macro_network(arch: BenchMacroArchitecture, input_shape: tuple[int, int, int],
                              num_classes: int) -> nn.Module:
    return BenchMacroNetwork(arch, input_shape, num_classes)


def _half(n: int) -> int:
    """Output length of a stride-2 conv with odd kernel k and padding k // 2."""
    return (n - 1) // 2 + 1


def bench_macro_costs(arch: BenchMacroArchitecture, input_shape: tuple[int, int, int],
                      num_classes: int) -> dict[str, int]:
    """``params``, ``flops`` and ``memory_bytes`` of ``build_model(arch, ...)`` in closed form
    (equal to :func:`nas_gym.costs.static_costs` on the module; see the module doc)."""
    c_in, h, w = input_shape
    hw = h * w
    params = c_in * STEM_CHANNELS * 9 + 2 * STEM_CHANNELS
    macs = c_in * STEM_CHANNELS * 9 * hw
    acts = 3 * STEM_CHANNELS * hw  # conv, BN, ReLU outputs
    for op, (cin, cout, stride) in zip(arch.ops, layer_plan(), strict=True):
        oh, ow = (_half(h), _half(w)) if stride == 2 else (h, w)
        ohw = oh * ow
        name, t, k = OPS[op]
        if name == "identity":
            if cin != cout or stride != 1:
                params += cin * cout + 2 * cout
                macs += cin * cout * ohw
                acts += 2 * cout * ohw
        else:
            hid = cin * t
            params += cin * hid + 2 * hid + hid * k * k + 2 * hid + hid * cout + 2 * cout
            macs += cin * hid * hw + hid * k * k * ohw + hid * cout * ohw
            acts += 3 * hid * hw + 3 * hid * ohw + 2 * cout * ohw
        h, w, hw = oh, ow, ohw
    cout = layer_plan()[-1][1]
    params += cout * HEAD_CHANNELS + 2 * HEAD_CHANNELS + HEAD_CHANNELS * num_classes + num_classes
    macs += cout * HEAD_CHANNELS * hw + HEAD_CHANNELS * num_classes
    acts += 3 * HEAD_CHANNELS * hw + 2 * HEAD_CHANNELS + num_classes  # + pool, flatten, linear
    return {"params": params, "flops": 2 * macs, "memory_bytes": _BYTES * (params + acts)}
