"""``build_model``: architecture value -> torch module, dispatched on the architecture's kind.

Each search space registers one builder ``fn(arch, input_shape, num_classes) -> nn.Module``.
Weights are then (re)initialised here, once for every space: He (Kaiming normal) for conv and
linear weights, zero biases, BN gamma 1 / beta 0, all drawn from a ``torch.Generator`` seeded by
``seed`` so two builds with one seed are bit-identical (no global random state).

A builder takes its parts from :func:`fresh`: a copy of a cached prototype with its parameters
reset is what constructing the part gives (the same values, the same draws from torch's global
generator: ``tests/test_models_build.py``), for a fifth of the cost (``nn.Module`` construction is
most of a tiny child's build; issue 15).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..arch.base import Architecture, architecture_from_dict
from ..errors import ArchitectureError, bad_value
from ..registry import Registry

Builder = Callable[[Any, tuple[int, ...], int], nn.Module]
BUILDERS: Registry[Builder] = Registry("model builder")


def register_builder(kind: str) -> Callable[[Builder], Builder]:
    return BUILDERS.register(kind)  # type: ignore[return-value]


_HE_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
_HE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
#: parts :func:`fresh` copies hold tensors only in these modules: their default init
#: (``reset_parameters``) draws every parameter from torch's global generator (rerun on a copy)
#: or, for the norms, sets every tensor to the same values (copied from the prototype)
DRAWN_TYPES, FIXED_TYPES = _HE_WEIGHTED, _HE_NORMS
M = TypeVar("M", bound=nn.Module)
_COPYING = contextvars.ContextVar("nas_gym_copying_parts", default=True)
_PROTOTYPES: dict[tuple[Any, ...], Any] = {}  # None: not copyable, construct it
_MAX_PROTOTYPES = 1024
_MISSING = object()
_SCALARS = (bool, int, float, str, type(None))
_CONTAINERS = (dict, OrderedDict, list, set)


@contextlib.contextmanager
def copying_parts(enabled: bool) -> Iterator[None]:
    """Whether :func:`fresh` copies prototypes inside (it does by default; ``False`` constructs
    every part, the reference of ``tests/test_models_build.py``)."""
    token = _COPYING.set(enabled)
    try:
        yield
    finally:
        _COPYING.reset(token)


def fresh(factory: Callable[..., M], *args: Any, **kwargs: Any) -> M:
    """``factory(*args, **kwargs)``, a part of a model, made faster: a copy of a prototype built
    once per arguments, with its own parameters, buffers and containers, its conv and linear
    parameters reset (torch's default init: the same values and the same draws from torch's
    global generator as a construction; ``nn.Module`` construction itself costs ~5x more). A part
    holding a tensor outside :data:`DRAWN_TYPES` and :data:`FIXED_TYPES`, or an attribute a
    shallow copy would share, is built every time; so is every part under a default dtype or
    device other than float32 on CPU."""
    if not (_COPYING.get() and torch.get_default_dtype() == torch.float32
            and torch.get_default_device().type == "cpu"):
        return factory(*args, **kwargs)
    key = (factory, args, tuple(sorted(kwargs.items())))
    try:
        proto = _PROTOTYPES.get(key, _MISSING)
    except TypeError:  # unhashable arguments: no prototype
        return factory(*args, **kwargs)
    if proto is _MISSING:
        if len(_PROTOTYPES) >= _MAX_PROTOTYPES:
            _PROTOTYPES.clear()
        built = factory(*args, **kwargs)
        _PROTOTYPES[key] = _copy(built, reset=False) if _copyable(built) else None
        return built
    return factory(*args, **kwargs) if proto is None else _copy(proto, reset=True)


def _immutable(value: Any) -> bool:
    return isinstance(value, _SCALARS) or (
        type(value) is tuple and all(isinstance(v, _SCALARS) for v in value))


def _copyable(module: nn.Module) -> bool:
    for m in module.modules():
        tensors = [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
        if tensors and type(m) not in (*DRAWN_TYPES, *FIXED_TYPES):
            return False
        for name, value in vars(m).items():
            if name in ("_parameters", "_buffers", "_modules"):
                continue
            if type(value) in _CONTAINERS:
                items = value.items() if isinstance(value, dict) else ((v, None) for v in value)
                if not all(_immutable(k) and _immutable(v) for k, v in items):
                    return False
            elif not _immutable(value):
                return False
    return True


def _copy(proto: M, *, reset: bool) -> M:
    """A new module equal to ``proto``, with copies of its tensors (what
    ``nn.Module._replicate_for_data_parallel`` does, with new tensors); ``reset``: then the
    :data:`DRAWN_TYPES` parts reset their parameters, in the order a construction does."""
    attrs = {k: v.copy() if type(v) in _CONTAINERS else v for k, v in vars(proto).items()}
    attrs["_parameters"] = {k: None if p is None else nn.Parameter(p.detach().clone(),
                                                                   p.requires_grad)
                            for k, p in attrs["_parameters"].items()}
    attrs["_buffers"] = {k: None if b is None else b.clone() for k, b in attrs["_buffers"].items()}
    attrs["_modules"] = {k: None if m is None else _copy(m, reset=reset)
                         for k, m in attrs["_modules"].items()}
    new = object.__new__(type(proto))
    new.__dict__.update(attrs)
    if reset and isinstance(new, DRAWN_TYPES):
        _reset_drawn(new)
    return new


def _reset_drawn(m: nn.Module) -> None:
    """``m.reset_parameters()`` of a conv or linear layer (the same draws from torch's global
    generator, the same values) without its per-call overhead (~20 us, most of a copy's cost)."""
    weight, bias = m.weight, m.bias
    if weight.numel() == 0:
        m.reset_parameters()  # its warning
        return
    w_bound, b_bound = _default_bounds(tuple(weight.shape))
    weight.detach().uniform_(-w_bound, w_bound)
    if bias is not None:
        bias.detach().uniform_(-b_bound, b_bound)


@functools.cache
def _default_bounds(shape: tuple[int, ...]) -> tuple[float, float]:
    """Bounds of torch's default init of a conv / linear weight of ``shape`` and of its bias, as
    ``_ConvNd.reset_parameters`` / ``Linear.reset_parameters`` compute them:
    ``kaiming_uniform_(weight, a=sqrt(5))``, bias U(+-1 / sqrt(fan_in))."""
    fan_in = shape[1] * math.prod(shape[2:])
    std = nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(fan_in)
    return math.sqrt(3.0) * std, 1 / math.sqrt(fan_in)


def he_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """He init (ENAS / B-ENAS children) from ``generator``; returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _HE_WEIGHTED):
                if m.weight.numel() == 0:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu",
                                            generator=generator)  # its warning
                else:  # kaiming_normal_(mode="fan_in", nonlinearity="relu") without its overhead
                    m.weight.normal_(0, _he_std(tuple(m.weight.shape)), generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, _HE_NORMS):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                m.reset_running_stats()
    return module


@functools.cache
def _he_std(shape: tuple[int, ...]) -> float:
    """The std ``kaiming_normal_(w, mode="fan_in", nonlinearity="relu")`` draws a weight of
    ``shape`` with."""
    return nn.init.calculate_gain("relu") / math.sqrt(shape[1] * math.prod(shape[2:]))


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
