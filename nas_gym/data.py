"""Datasets as tensors on the device: seeded train / validation / test splits, no DataLoader.

Every dataset becomes a :class:`DataSplit` of float32 NCHW tensors normalised per channel with the
statistics of the *training* part, living on the evaluation device (as in airbench: the whole set
on the device, augmentation there too). Rewards only ever see the validation part, which is cut
out of the official training set (CIFAR-10: 45k/5k, as in ENAS / EPNAS); the test part is kept for
final reports. The datasets themselves (``digits``, ``synthetic`` and the torchvision sets) are
loaded by :mod:`nas_gym.datasets`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DATASETS
from .device import resolve_device
from .errors import ConfigError, bad_value

# bump when a change here or in nas_gym.datasets changes the tensors (invalidates store keys)
_VERSION = 1
_TEST_FRACTION = 0.2  # test part of sets without an official test split (digits, synthetic)
_AUGMENTS = ("none", "crop", "flip", "crop_flip")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and how it is split; everything that changes the tensors is in ``fingerprint``."""

    name: str = "digits"
    """Registered dataset name (``DATASETS.names()``)."""
    data_root: str | None = None
    """Folder holding the torchvision files (as torchvision lays them out); unused offline sets."""
    download: bool = False
    """Let torchvision download missing files into ``data_root`` (needs internet)."""
    split_seed: int = 0
    """Seed of the stratified train / validation (/ test) split (``np.random.default_rng``)."""
    val_fraction: float | None = None
    """Fraction of the training pool held out for validation, in (0, 0.5]; None = dataset default
    (0.1 for the torchvision sets, e.g. CIFAR-10 5000/50000; 0.2 for digits and synthetic)."""
    train_size: int | None = None
    """Optional cap on training samples (a seeded, stratified subset) for quick runs."""
    synthetic_shape: tuple[int, int, int] = (1, 8, 8)
    """(C, H, W) of the ``synthetic`` images."""
    synthetic_classes: int = 10
    """Number of ``synthetic`` classes."""
    synthetic_samples: int = 1200
    """Number of ``synthetic`` samples, split 60/20/20 like ``digits``."""

    def __post_init__(self) -> None:
        # Configs come from YAML / JSON (lists) and tests (pathlib paths): store canonical types.
        if isinstance(self.synthetic_shape, list):
            object.__setattr__(self, "synthetic_shape", tuple(self.synthetic_shape))
        if isinstance(self.data_root, os.PathLike):
            object.__setattr__(self, "data_root", os.fspath(self.data_root))

    def validate(self) -> None:
        """Raise :class:`~nas_gym.errors.ConfigError` naming the first bad field."""
        DATASETS.get(self.name, "dataset")
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise bad_value("data_root", self.data_root, "a folder path or None")
        if not isinstance(self.download, bool):
            raise bad_value("download", self.download, "True or False")
        if not _is_int(self.split_seed) or self.split_seed < 0:
            raise bad_value("split_seed", self.split_seed, "an integer >= 0")
        vf = self.val_fraction
        if vf is not None and (isinstance(vf, bool) or not isinstance(vf, (int, float))
                               or not 0 < vf <= 0.5):
            raise bad_value("val_fraction", vf, "None or a number in (0, 0.5]")
        if self.train_size is not None and (not _is_int(self.train_size) or self.train_size < 1):
            raise bad_value("train_size", self.train_size, "None or an integer >= 1")
        shape = self.synthetic_shape
        if not (isinstance(shape, tuple) and len(shape) == 3
                and all(_is_int(s) and s >= 1 for s in shape)):
            raise bad_value("synthetic_shape", shape, "(C, H, W), three integers >= 1")
        if not _is_int(self.synthetic_classes) or self.synthetic_classes < 2:
            raise bad_value("synthetic_classes", self.synthetic_classes, "an integer >= 2")
        n_min = 5 * self.synthetic_classes if _is_int(self.synthetic_classes) else 10
        if not _is_int(self.synthetic_samples) or self.synthetic_samples < n_min:
            raise bad_value("synthetic_samples", self.synthetic_samples,
                            f"an integer >= 5 * synthetic_classes = {n_min} (every split sees each class)")

    def resolved_val_fraction(self) -> float:
        """``val_fraction``, or the dataset's default when it is None."""
        if self.val_fraction is not None:
            return float(self.val_fraction)
        return float(getattr(DATASETS.get(self.name, "dataset"), "default_val_fraction", 0.1))

    def fingerprint(self) -> dict:
        """JSON-able dict of everything that changes the tensors (a part of evaluation-store keys).

        ``data_root`` and ``download`` are left out: the same files give the same data anywhere.
        """
        fp: dict[str, Any] = {"name": self.name, "split_seed": int(self.split_seed),
                              "val_fraction": self.resolved_val_fraction(), "version": _VERSION,
                              "train_size": None if self.train_size is None else int(self.train_size)}
        if self.name == "synthetic":  # int(): numpy integers are not JSON-able
            fp.update(shape=[int(s) for s in self.synthetic_shape],
                      classes=int(self.synthetic_classes), samples=int(self.synthetic_samples))
        return fp


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class DataSplit:
    """Normalised tensors of one dataset on one device. Shared between envs: never edit in place."""

    name: str
    train_x: torch.Tensor  # float32 (N, C, H, W), normalised with the train part's statistics
    train_y: torch.Tensor  # int64 (N,)
    val_x: torch.Tensor  # validation: the only data rewards ever see
    val_y: torch.Tensor
    test_x: torch.Tensor  # test: final reports only
    test_y: torch.Tensor
    input_shape: tuple[int, int, int]
    num_classes: int
    augment: str  # augment_batch kind: "crop_flip" for 32x32 RGB sets, "none" otherwise
    fingerprint: dict
    mean: tuple[float, ...] = ()  # per-channel train mean (raw units) ...
    std: tuple[float, ...] = ()  # ... and std: raw = x * std + mean

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> DataSplit:
        """A DataSplit with every tensor on ``device`` (tensors already there are not copied)."""
        dev = resolve_device(device)
        tensors = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        return dataclasses.replace(self, **{f: getattr(self, f).to(dev) for f in tensors})


_CACHE: dict[tuple[str, str | None, str], DataSplit] = {}


def clear_data_cache() -> None:
    """Forget the in-process cache of :func:`load_data` (frees the tensors it holds)."""
    _CACHE.clear()


def load_data(config: DataConfig | None = None, *, device: str | torch.device = "cpu",
              **overrides: Any) -> DataSplit:
    """Validate, load, split, normalise and move a dataset to ``device`` (once).

    ``overrides`` replace fields of ``config`` (``load_data(name="cifar10", data_root=...)``).
    Results are cached per (fingerprint, data_root, device) in this process, so many envs share
    the same tensors: the returned object must not be modified in place.
    """
    if config is None:
        config = DataConfig()
    if not isinstance(config, DataConfig):
        raise bad_value("config", config, "a DataConfig or None")
    fields = [f.name for f in dataclasses.fields(DataConfig)]
    for key in overrides:
        if key not in fields:
            raise bad_value("load_data keyword", key, fields)
    config = dataclasses.replace(config, **overrides) if overrides else config
    config.validate()
    dev = resolve_device(device)
    fp = config.fingerprint()
    key = (json.dumps(fp, sort_keys=True), config.data_root, str(dev))
    if key not in _CACHE:
        _CACHE[key] = _build(config, fp, dev)
    return _CACHE[key]


def _build(config: DataConfig, fp: dict, device: torch.device) -> DataSplit:
    raw = DATASETS.get(config.name, "dataset")(config)
    rng = np.random.default_rng(config.split_seed)
    n = len(raw.y)
    n_test = 0 if raw.test_x is not None else round(n * _TEST_FRACTION)
    n_val = max(1, round(n * config.resolved_val_fraction()))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ConfigError(f"dataset={config.name!r} has only {n} samples: too few to split with "
                          f"val_fraction={config.resolved_val_fraction()}")
    order = _stratified_order(raw.y.numpy(), rng)
    train_idx = order[:n_train]
    if config.train_size is not None:
        train_idx = train_idx[: config.train_size]  # order is stratified, so any prefix is too
    val_idx = order[n_train:n_train + n_val]
    if raw.test_x is None:
        test_idx = torch.from_numpy(order[n_train + n_val:])
        test_x, test_y = raw.x[test_idx], raw.y[test_idx]
    else:
        test_x, test_y = raw.test_x, raw.test_y

    def prep(x: torch.Tensor) -> torch.Tensor:  # move raw (often uint8, 4x smaller), then convert
        return x.to(device).to(torch.float32)

    train_x = prep(raw.x[torch.from_numpy(train_idx)])
    std, mean = torch.std_mean(train_x, dim=(0, 2, 3), keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays as it is
    xs = [train_x, prep(raw.x[torch.from_numpy(val_idx)]), prep(test_x)]
    for x in xs:
        x.sub_(mean).div_(std)
    ys = [raw.y[torch.from_numpy(train_idx)], raw.y[torch.from_numpy(val_idx)], test_y]
    ys = [y.to(device=device, dtype=torch.int64) for y in ys]
    return DataSplit(
        name=config.name, train_x=xs[0], train_y=ys[0], val_x=xs[1], val_y=ys[1],
        test_x=xs[2], test_y=ys[2], input_shape=tuple(int(s) for s in raw.x.shape[1:]),
        num_classes=raw.num_classes, augment=raw.augment, fingerprint=fp,
        mean=tuple(mean.flatten().tolist()), std=tuple(std.flatten().tolist()),
    )


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation in which every class is spread evenly, so each cut is stratified.

    Each sample gets its (random) rank within its class divided by the class size; sorting by it
    interleaves the classes, and any contiguous slice holds each class in proportion.
    """
    perm = rng.permutation(len(y))
    yp = y[perm]
    by_class = np.argsort(yp, kind="stable")
    counts = np.bincount(yp)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(y), dtype=np.float64)
    rank[by_class] = np.arange(len(y)) - starts[yp[by_class]]
    return perm[np.argsort((rank + 0.5) / counts[yp], kind="stable")]


def augment_batch(x: torch.Tensor, generator: torch.Generator, kind: str = "crop_flip",
                  pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding plus random horizontal flip, per sample, on ``x``'s device.

    The standard CIFAR augmentation (He et al. 2016, used by ENAS / EPNAS): pad by ``pad``, crop
    back to H x W at a random offset, flip half of the samples. Zero padding is applied to the
    normalised batch, i.e. it pads with the training mean. Crop and flip are one gather (no
    Python loop). ``kind``: ``"crop_flip"``, ``"crop"``, ``"flip"`` or ``"none"`` (returns ``x``).
    ``generator`` must live on ``x``'s device (``torch.Generator(device=x.device)``).
    """
    if kind not in _AUGMENTS:
        raise bad_value("kind", kind, _AUGMENTS)
    if not _is_int(pad) or pad < 0:
        raise bad_value("pad", pad, "an integer >= 0")
    if kind == "none":
        return x
    if generator.device.type != x.device.type:
        raise bad_value("generator", f"a generator on {generator.device}",
                        f"a torch.Generator on x's device ({x.device})")
    n, c, h, w = x.shape
    p = pad if kind in ("crop", "crop_flip") else 0
    dev = x.device
    dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator, device=dev)
    dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    if kind in ("flip", "crop_flip"):
        flip = torch.rand((n, 1), generator=generator, device=dev) < 0.5
        cols = torch.where(flip, w - 1 - cols, cols)  # flip = read the crop's columns backwards
    rows = dy + torch.arange(h, device=dev)
    cols = dx + cols
    padded = F.pad(x, (p, p, p, p)) if p else x
    return padded[torch.arange(n, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
