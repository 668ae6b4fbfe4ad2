"""``build_model``: architecture value -> torch module, dispatched on the architecture's kind.

Each search space registers one builder ``fn(arch, input_shape, num_classes) -> nn.Module``.
Weights are then (re)initialised here, once for every space: He (Kaiming normal) for conv and
linear weights, zero biases, BN gamma 1 / beta 0, all drawn from a ``torch.Generator`` seeded by
``seed`` so two builds with one seed are bit-identical (no global random state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..arch.base import Architecture, architecture_from_dict
from ..errors import ArchitectureError, bad_value
from ..registry import Registry

Builder = Callable[[Any, tuple[int, ...], int], nn.Module]
BUILDERS: Registry[Builder] = Registry("model builder")


def register_builder(kind: str) -> Callable[[Builder], Builder]:
    return BUILDERS.register(kind)  # type: ignore[return-value]


def he_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """He init (ENAS / B-ENAS children) from ``generator``; returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu",
                                        generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                m.reset_running_stats()
    return module


def check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[tuple[int, ...], int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise bad_value("input_shape", input_shape, "(channels, height, width), all >= 1")
    if int(num_classes) < 2:
        raise bad_value("num_classes", num_classes, "an integer >= 2")
    return shape, int(num_classes)


def build_model(
    architecture: Architecture | dict[str, Any],
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int = 0,
    init: bool = True,
) -> nn.Module:
    """Build the torch module for any architecture an env reports.

    :param architecture: an architecture value or its dict (``info["architecture"]``; JSON-loaded).
    :param input_shape: ``(channels, height, width)`` of one sample.
    :param num_classes: output classes.
    :param seed: seed of the He initialisation.
    :param init: False skips it (the module keeps torch's default init: only its shapes matter,
        e.g. to count its costs).
    :return: the module on CPU, float32, with ``module.architecture`` set to the value.
    """
    arch = architecture_from_dict(architecture)
    shape, classes = check_shape(input_shape, num_classes)
    builder = BUILDERS.get(arch.kind, "architecture['kind']")
    try:
        model = builder(arch, shape, classes)
    except ArchitectureError:
        raise
    except (RuntimeError, ValueError) as exc:  # shapes that do not fit, etc.
        raise ArchitectureError(
            f"architecture of kind {arch.kind!r} cannot be built for input_shape={shape}: {exc}"
        ) from exc
    if init:
        he_init_(model, torch.Generator().manual_seed(int(seed)))
    model.architecture = arch  # type: ignore[assignment]
    return model
