"""Function-preserving Net2Net transforms of plain CNNs (EAS; Chen et al. 2015; SPEC §1.3).

Both transforms are pure: ``(model, args, rng) -> new model``. The input model is deep-copied and
only the copy is edited, by replacing the affected modules with new ones of the new shape (never
resizing tensors in place). The result has exactly the module structure that
``build_model(result.architecture, ...)`` builds (see :mod:`nas_gym.models.plain`), and
``result.architecture`` is the updated :class:`~nas_gym.arch.plain.PlainCNN`.

- :func:`widen` -- Net2WiderNet, EAS eq. 1-3 (plain) and eq. 4 (DenseNet: every later reader).
- :func:`deepen` -- Net2DeeperNet: an identity conv + BN + ReLU, or an identity fc + ReLU; EAS
  eq. 5 for DenseNet (the new filters copy chosen input channels).

Layers are addressed by their index in ``arch.layers`` (== ``model.layers``); ``deepen(position)``
inserts the new layer so that it becomes ``layers[position]``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..arch.plain import CONV_WIDTHS, FC_UNITS, ConvLayer, FCLayer, PlainCNN, PoolLayer, next_level
from ..errors import ArchitectureError, TransformError
from .plain import ConvBNReLU, FCReLU, PlainNet

__all__ = ["deepen", "legal_deepen_positions", "legal_widen_layers", "widen"]

Reader = int | None  # index of a conv / fc layer reading a layer's output; None = the head


# -- legal actions --------------------------------------------------------------------------------
def legal_widen_layers(arch: PlainCNN) -> list[int]:
    """Conv / fc layers below the top level of ``CONV_WIDTHS`` / ``FC_UNITS``."""
    out = []
    for i, layer in enumerate(arch.layers):
        if isinstance(layer, ConvLayer) and next_level(layer.filters, CONV_WIDTHS) is not None:
            out.append(i)
        elif isinstance(layer, FCLayer) and next_level(layer.units, FC_UNITS) is not None:
            out.append(i)
    return out


def legal_deepen_positions(arch: PlainCNN, layer_type: str | None = None) -> list[int]:
    """Positions where :func:`deepen` may insert a layer of ``layer_type``.

    A conv goes after the first conv (an identity conv + ReLU needs the non-negative features of a
    ReLU below it) and before the global pool (``position <= gap_index``); an fc goes after the
    global pool (``position >= gap_index``). ``None``: either, with the default type of
    :func:`deepen` (conv at ``gap_index``).
    """
    first_conv, gap, n = arch.conv_indices[0], arch.gap_index, len(arch.layers)
    if layer_type == "conv":
        return list(range(first_conv + 1, gap + 1))
    if layer_type == "fc":
        return list(range(gap, n + 1))
    if layer_type is None:
        return list(range(first_conv + 1, n + 1))
    raise TransformError(f"layer_type={layer_type!r} is not accepted; expected 'conv', 'fc' or None")


# -- helpers --------------------------------------------------------------------------------------
def _architecture(model: nn.Module) -> PlainCNN:
    arch = getattr(model, "architecture", None)
    if not isinstance(model, PlainNet) or not isinstance(arch, PlainCNN):
        raise TransformError(
            f"model={type(model).__name__} is not accepted; expected a plain-CNN model built by "
            "nas_gym.build_model from a PlainCNN architecture (kind 'plain')"
        )
    return arch


def _like(module: nn.Module, ref: torch.Tensor, training: bool) -> nn.Module:
    """A freshly built module moved to ``ref``'s device and dtype, in the model's mode."""
    return module.to(device=ref.device, dtype=ref.dtype).train(training)


def _readers(arch: PlainCNN, layer: int) -> list[Reader]:
    """The layers whose input contains the output of conv / fc ``layer``."""
    n, gap = len(arch.layers), arch.gap_index
    after_gap: Reader = gap if gap < n else None  # first fc, else the head
    if isinstance(arch.layers[layer], FCLayer):
        return [layer + 1 if layer + 1 < n else None]
    later = [i for i in arch.conv_indices if i > layer]
    if arch.dense:  # EAS eq. 4: every later conv, and the global pool, reads it
        return [*later, after_gap]
    return [later[0] if later else after_gap]


def _reader_module(model: PlainNet, reader: Reader) -> nn.Module:
    if reader is None:
        return model.head
    block = model.layers[reader]
    return block.conv if isinstance(block, ConvBNReLU) else block.fc


def _set_reader(model: PlainNet, reader: Reader, module: nn.Module) -> None:
    if reader is None:
        model.head = module
    elif isinstance(model.layers[reader], ConvBNReLU):
        model.layers[reader].conv = module
    else:
        model.layers[reader].fc = module


def _remap_inputs(module: nn.Module, index: torch.Tensor, training: bool) -> nn.Module:
    """EAS eq. 3: new input channel ``t`` is a copy of old input ``index[t]``; its incoming weights
    are the old ones divided by how many copies of ``index[t]`` the new input holds."""
    weight = module.weight.detach()
    index = index.to(weight.device)
    counts = torch.bincount(index, minlength=weight.shape[1]).to(weight.dtype)
    shape = (1, -1) + (1,) * (weight.dim() - 2)
    new_weight = weight[:, index] / counts[index].reshape(shape)
    if isinstance(module, nn.Conv2d):
        new = nn.Conv2d(len(index), module.out_channels, module.kernel_size, module.stride,
                        module.padding, bias=module.bias is not None)
    else:
        new = nn.Linear(len(index), module.out_features, bias=module.bias is not None)
    new = _like(new, weight, training)
    with torch.no_grad():
        new.weight.copy_(new_weight)
        if module.bias is not None:
            new.bias.copy_(module.bias)
    return new


def _remap_readers(model: PlainNet, readers: list[Reader], offset: int, seg: int,
                   index: torch.Tensor) -> None:
    """Apply ``_remap_inputs`` to every reader: its old input channels ``[offset, offset + seg)``
    become ``offset + index``; the channels before and after the segment are kept (eq. 4)."""
    for reader in readers:
        module = _reader_module(model, reader)
        old_in = module.weight.shape[1]
        full = torch.cat([torch.arange(offset), offset + index,
                          torch.arange(offset + seg, old_in)])
        _set_reader(model, reader, _remap_inputs(module, full, model.training))


# -- Net2WiderNet ---------------------------------------------------------------------------------
def widen(model: nn.Module, layer: int, width: int | None = None, *, rng: np.random.Generator,
          noise: float = 0.0) -> nn.Module:
    """Net2WiderNet (EAS eq. 1-3; eq. 4 for ``space="densenet"``).

    :param model: a plain-CNN model from ``build_model``; never modified.
    :param layer: index in ``model.architecture.layers`` of a conv or fc layer.
    :param width: new filters / units, above the current ones; default: the next level of
        ``CONV_WIDTHS`` / ``FC_UNITS`` above the current width.
    :param rng: draws the remapping ``G`` (eq. 1) and the noise.
    :param noise: std, relative to the std of the layer's weights, of Gaussian noise added to the
        new units' incoming weights to break symmetry (Net2Net); 0 keeps the function exactly.
    :return: the widened copy. New unit ``j`` copies unit ``G(j)``: its incoming weights, bias,
        and BN gamma, beta, running mean and running var; each reader's incoming weights of a
        replicated unit are divided by the unit's replication count (eq. 3).
    """
    arch = _architecture(model)
    layer, width = _check_widen(arch, layer, width)
    spec = arch.layers[layer]
    is_conv = isinstance(spec, ConvLayer)
    old = spec.filters if is_conv else spec.units
    new_model = copy.deepcopy(model)
    index = torch.from_numpy(np.concatenate(
        [np.arange(old), rng.integers(0, old, size=width - old)]).astype(np.int64))  # eq. 1
    new_spec = _widen_block(new_model.layers[layer], spec, index, rng, noise, new_model.training)
    offset = sum(arch.layers[i].filters for i in arch.conv_indices if i < layer) \
        if arch.dense and is_conv else 0
    _remap_readers(new_model, _readers(arch, layer), offset, old, index)
    layers = arch.layers[:layer] + (new_spec,) + arch.layers[layer + 1:]
    return _finish(new_model, replace(arch, layers=layers))


def _check_widen(arch: PlainCNN, layer: int, width: int | None) -> tuple[int, int]:
    """The checked ``(layer, width)`` of a :func:`widen` request (``width`` resolved)."""
    n = len(arch.layers)
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not 0 <= layer <= n:
        raise TransformError(f"layer={layer!r} is not accepted; expected a layer index in "
                             f"[0, {n - 1}]")
    layer = int(layer)
    if layer == n:
        raise TransformError(f"layer={layer} is the output (softmax) layer, whose width is "
                             f"num_classes; expected a conv or fc layer index in [0, {n - 1}]")
    spec = arch.layers[layer]
    if isinstance(spec, PoolLayer):
        widenable = [i for i, s in enumerate(arch.layers) if not isinstance(s, PoolLayer)]
        raise TransformError(f"layer={layer} is a pool layer, which has no width; expected a conv "
                             f"or fc layer, one of {widenable}")
    is_conv = isinstance(spec, ConvLayer)
    old = spec.filters if is_conv else spec.units
    if width is None:
        width = next_level(old, CONV_WIDTHS if is_conv else FC_UNITS)
        if width is None:
            raise TransformError(f"layer={layer} already has the top width {old}; nothing "
                                 "to widen to")
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width <= old:
        raise TransformError(f"width={width!r} is not accepted for layer={layer}; expected an "
                             f"integer above the current width {old}")
    return layer, int(width)


def _widen_block(block: nn.Module, spec: ConvLayer | FCLayer, index: torch.Tensor,
                 rng: np.random.Generator, noise: float, training: bool) -> ConvLayer | FCLayer:
    """Replace ``block``'s conv + BN / fc by ``len(index)`` units, unit ``j`` a copy of unit
    ``index[j]`` (EAS eq. 2, plus the symmetry-breaking noise); return the widened spec."""
    is_conv = isinstance(spec, ConvLayer)
    old, width = (spec.filters if is_conv else spec.units), len(index)
    base = block.conv if is_conv else block.fc
    weight = base.weight.detach()
    on_device = index.to(weight.device)
    new_weight = weight[on_device].clone()  # eq. 2
    if noise:
        scale = float(noise) * float(weight.std()) if weight.numel() > 1 else float(noise)
        eps = rng.standard_normal(size=tuple(new_weight[old:].shape))
        new_weight[old:] += torch.as_tensor(scale * eps, dtype=weight.dtype, device=weight.device)
    if is_conv:
        conv = _like(nn.Conv2d(base.in_channels, width, base.kernel_size, base.stride,
                               base.padding, bias=False), weight, training)
        bn_old = block.bn
        bn = _like(nn.BatchNorm2d(width, eps=bn_old.eps, momentum=bn_old.momentum),
                   weight, training)
        with torch.no_grad():
            conv.weight.copy_(new_weight)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(bn_old, name)[on_device])
            bn.num_batches_tracked.copy_(bn_old.num_batches_tracked)
        block.conv, block.bn = conv, bn
        return replace(spec, filters=width)
    fc = _like(nn.Linear(base.in_features, width), weight, training)
    with torch.no_grad():
        fc.weight.copy_(new_weight)
        fc.bias.copy_(base.bias[on_device])
    block.fc = fc
    return FCLayer(width)


# -- Net2DeeperNet --------------------------------------------------------------------------------
def deepen(model: nn.Module, position: int, kernel: int = 3, *, rng: np.random.Generator,
           layer_type: str | None = None, data: torch.Tensor | None = None) -> nn.Module:
    """Net2DeeperNet: insert an identity layer so that it becomes ``layers[position]``.

    :param model: a plain-CNN model from ``build_model``; never modified.
    :param position: in ``[0, len(layers)]``; see :func:`legal_deepen_positions`.
    :param kernel: odd kernel size of a new conv (EAS: from ``CONV_KERNELS``); unused for fc.
    :param rng: densenet only: draws the input channel each new filter copies (EAS eq. 5).
    :param layer_type: ``"conv"`` (only before the global pool, ``position <= gap_index``) or
        ``"fc"`` (only after it, ``position >= gap_index``); default: conv up to ``gap_index``,
        fc after it.
    :param data: an optional input batch (N, C, H, W) used to set the new BN (see below).
    :return: the deeper copy. A new conv has the width of the conv below (plain: the channels it
        reads), an identity kernel (1 at the centre of channel c -> c; densenet: c -> the channel
        chosen for it), and a BN that undoes its normalisation: ``running_mean = m``,
        ``running_var = v``, ``gamma = sqrt(v + eps)``, ``beta = m`` -- exactly the identity in eval
        mode for any ``(m, v)``; the following ReLU is idempotent on the non-negative input.
        In train mode BN normalises with batch statistics, so ``(m, v)`` are the statistics the new
        BN would see: with ``data``, the per-channel batch mean and biased variance of the new
        layer's input on ``data`` with the model in train mode (so a train-mode pass on ``data``
        is unchanged too); without it, the moments of ``relu(z)``, ``z ~ N(beta_s, gamma_s^2)``,
        for the BN of the conv producing each channel (exact for pre-ReLU features distributed as
        BN intends them, pools ignored). A new fc is ``ReLU(I x + 0)``, with no BN.
    """
    arch = _architecture(model)
    position, layer_type = _check_deepen(arch, position, kernel, layer_type)
    features = arch.features_at(position)
    new_model = copy.deepcopy(model)
    ref = new_model.head.weight.detach()
    if layer_type == "fc":
        block = _like(FCReLU(features, features), ref, new_model.training)
        with torch.no_grad():
            block.fc.weight.copy_(torch.eye(features, dtype=ref.dtype))
            block.fc.bias.zero_()
        new_spec: ConvLayer | FCLayer = FCLayer(features)
    else:
        block, new_spec = _identity_conv(model, new_model, arch, position, int(kernel), rng, data)
    new_model.layers.insert(position, block)
    layers = arch.layers[:position] + (new_spec,) + arch.layers[position:]
    return _finish(new_model, replace(arch, layers=layers))


def _check_deepen(arch: PlainCNN, position: int, kernel: int, layer_type: str | None
                  ) -> tuple[int, str]:
    """The checked ``(position, layer_type)`` of a :func:`deepen` request (type resolved)."""
    n, gap = len(arch.layers), arch.gap_index
    if not isinstance(position, (int, np.integer)) or isinstance(position, bool) \
            or not 0 <= position <= n:
        raise TransformError(f"position={position!r} is not accepted; expected an integer in "
                             f"[0, {n}]")
    position = int(position)
    if layer_type is None:
        layer_type = "conv" if position <= gap else "fc"
    if layer_type not in ("conv", "fc"):
        raise TransformError(f"layer_type={layer_type!r} is not accepted; expected 'conv', 'fc' "
                             "or None")
    if layer_type == "fc" and position < gap:
        raise TransformError(f"position={position} is before the global average pool (at "
                             f"{gap}); an fc layer may only be inserted at positions "
                             f"{list(range(gap, n + 1))}")
    if layer_type == "conv":
        if position > gap:
            raise TransformError(f"position={position} is after the global average pool / an fc "
                                 f"layer; only an fc may be inserted there (conv positions: "
                                 f"{legal_deepen_positions(arch, 'conv')})")
        if position <= arch.conv_indices[0]:
            raise TransformError(f"position={position} has no conv below it: an identity conv + "
                                 "ReLU would clip the (possibly negative) input; expected one of "
                                 f"{legal_deepen_positions(arch, 'conv')}")
        if not isinstance(kernel, (int, np.integer)) or kernel < 1 or kernel % 2 == 0:
            raise TransformError(f"kernel={kernel!r} is not accepted; expected an odd integer "
                                 ">= 1 (EAS uses 1, 3, 5)")
    return position, layer_type


def _identity_conv(model: PlainNet, new_model: PlainNet, arch: PlainCNN, position: int,
                   kernel: int, rng: np.random.Generator, data: torch.Tensor | None
                   ) -> tuple[ConvBNReLU, ConvLayer]:
    """The identity conv + BN + ReLU block that :func:`deepen` inserts at ``position`` (densenet:
    EAS eq. 5, and ``new_model``'s later readers take its outputs), and its spec."""
    n, gap, features = len(arch.layers), arch.gap_index, arch.features_at(position)
    ref = new_model.head.weight.detach()
    if arch.dense:  # EAS eq. 5: each filter copies one chosen input channel
        below = [arch.layers[i] for i in arch.conv_indices if i < position][-1]
        src = torch.from_numpy(rng.integers(0, features, size=below.filters).astype(np.int64))
    else:
        src = torch.arange(features)
    width = len(src)
    block = _like(ConvBNReLU(features, width, kernel), ref, new_model.training)
    mean, var = _input_stats(model, arch, position, data)
    on_device = src.to(ref.device)
    mean, var = mean[on_device], var[on_device]
    with torch.no_grad():
        weight = torch.zeros_like(block.conv.weight)
        weight[torch.arange(width, device=ref.device), on_device, kernel // 2,
               kernel // 2] = 1.0
        block.conv.weight.copy_(weight)
        block.bn.running_mean.copy_(mean)
        block.bn.running_var.copy_(var)
        block.bn.weight.copy_(torch.sqrt(block.bn.running_var + block.bn.eps))
        block.bn.bias.copy_(block.bn.running_mean)
    if arch.dense:  # the new outputs join every later reader's input after the first
        readers = [i for i in arch.conv_indices if i >= position]  # `features` channels
        readers.append(gap if gap < n else None)
        index = torch.cat([torch.arange(features), src])
        _remap_readers(new_model, readers, 0, features, index)
    return block, ConvLayer(width, kernel)


def _input_stats(model: PlainNet, arch: PlainCNN, position: int, data: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of the feature map entering ``position``."""
    ref = model.head.weight.detach()
    if data is not None:
        probe = copy.deepcopy(model).train()  # a train-mode pass updates BN buffers: a copy
        with torch.no_grad():
            x = probe.forward_until(data.to(device=ref.device, dtype=ref.dtype), position)
        return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    convs = [i for i in arch.conv_indices if i < position]
    sources = convs if arch.dense else convs[-1:]
    beta = torch.cat([model.layers[i].bn.bias.detach() for i in sources])
    sigma = torch.cat([model.layers[i].bn.weight.detach() for i in sources]).abs()
    sigma = sigma.clamp_min(torch.finfo(ref.dtype).tiny)
    a = beta / sigma
    cdf = 0.5 * (1.0 + torch.erf(a / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    m1 = beta * cdf + sigma * pdf  # moments of the rectified Gaussian relu(N(beta, sigma^2))
    m2 = (beta * beta + sigma * sigma) * cdf + beta * sigma * pdf
    return m1, (m2 - m1 * m1).clamp_min(0.0)


def _finish(model: PlainNet, arch: PlainCNN) -> PlainNet:
    try:
        arch.validate()
    except ArchitectureError as exc:  # an internal bug: the checks above should prevent it
        raise TransformError(f"transform produced an invalid architecture: {exc}") from exc
    model.architecture = arch  # type: ignore[assignment]
    return model
