"""``build_model``: architecture value -> torch module, dispatched on the architecture's kind.

Each search space registers one builder ``fn(arch, input_shape, num_classes) -> nn.Module``.
Weights are then (re)initialised here, once for every space: He (Kaiming normal) for conv and
linear weights, zero biases, BN gamma 1 / beta 0, all drawn from a ``torch.Generator`` seeded by
``seed`` so two builds with one seed are bit-identical (no global random state).

Since the He init overwrites every parameter, a builder may take its parts from :func:`fresh`:
inside ``build_model(init=True)`` a part is a copy of a cached prototype with new parameters
instead of a freshly constructed module (``nn.Module`` construction costs ~5x more: most of a
tiny child's build; issue 15). The built module is the same, and so is what the build draws from
torch's global generator (``tests/test_models_build.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
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
#: module types whose every parameter and buffer :func:`he_init_` sets
HE_INIT_TYPES: tuple[type[nn.Module], ...] = (*_HE_WEIGHTED, *_HE_NORMS)
M = TypeVar("M", bound=nn.Module)
_FRESH = contextvars.ContextVar("nas_gym_fresh_parts", default=False)  # in build_model(init=True)
_PROTOTYPES: dict[tuple[Any, ...], Any] = {}  # None: not copyable, construct it
_MAX_PROTOTYPES = 1024
_MISSING = object()
_SCALARS = (bool, int, float, str, type(None))
_CONTAINERS = (dict, OrderedDict, list, set)


@contextlib.contextmanager
def prototype_parts(enabled: bool = True) -> Iterator[None]:
    """Inside (when ``enabled``), :func:`fresh` copies prototypes: the parts' parameters are not
    torch's default init (BN's are left uninitialised), so the caller must then set every one
    (``build_model`` runs :func:`he_init_`)."""
    token = _FRESH.set(enabled)
    try:
        yield
    finally:
        _FRESH.reset(token)


def fresh(factory: Callable[..., M], *args: Any, **kwargs: Any) -> M:
    """``factory(*args, **kwargs)``, a part of a model. Inside :func:`prototype_parts` (as in
    ``build_model(init=True)``, which then sets every parameter) a copy of a prototype built once
    per arguments, with its own new parameters, buffers and containers; a part holding a tensor
    the He init does not set, or an attribute a shallow copy would share, is built every time."""
    if not _FRESH.get():
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
        _PROTOTYPES[key] = _copy(built, draw=False) if _copyable(built) else None
        return built
    return factory(*args, **kwargs) if proto is None else _copy(proto, draw=True)


def _immutable(value: Any) -> bool:
    return isinstance(value, _SCALARS) or (
        type(value) is tuple and all(isinstance(v, _SCALARS) for v in value))


def _copyable(module: nn.Module) -> bool:
    for m in module.modules():
        tensors = [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
        if tensors and type(m) not in HE_INIT_TYPES:
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


def _copy(proto: M, *, draw: bool) -> M:
    """A new module equal to ``proto`` but for the parameters' values (what
    ``nn.Module._replicate_for_data_parallel`` does, with new tensors). ``draw``: the new conv
    and linear layers reset their parameters, drawing from torch's global generator what their
    construction draws (torch's default init): a search whose agent samples from that generator
    (Stable-Baselines3's) sees the same stream as with constructed parts."""
    attrs = {k: v.copy() if type(v) in _CONTAINERS else v for k, v in vars(proto).items()}
    attrs["_parameters"] = {k: None if p is None else nn.Parameter(torch.empty_like(p),
                                                                   p.requires_grad)
                            for k, p in attrs["_parameters"].items()}
    attrs["_buffers"] = {k: None if b is None else b.clone() for k, b in attrs["_buffers"].items()}
    attrs["_modules"] = {k: None if m is None else _copy(m, draw=draw)
                         for k, m in attrs["_modules"].items()}
    new = object.__new__(type(proto))
    new.__dict__.update(attrs)
    if draw and isinstance(new, _HE_WEIGHTED):
        new.reset_parameters()
    return new


def he_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """He init (ENAS / B-ENAS children) from ``generator``; returns ``module``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _HE_WEIGHTED):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu",
                                        generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, _HE_NORMS):
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
    # prototypes hold float32 CPU tensors: under another default every part is constructed
    copying = init and torch.get_default_dtype() == torch.float32 \
        and torch.get_default_device().type == "cpu"
    try:
        with prototype_parts(copying):
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
