"""The datasets :func:`nas_gym.data.load_data` reads, as raw tensors on the CPU (``DATASETS``).

A loader takes the :class:`~nas_gym.data.DataConfig` and returns unnormalised NCHW images and int
labels, with the official test set where there is one; :mod:`nas_gym.data` splits, normalises and
moves them to the device. ``digits`` (scikit-learn, bundled) and ``synthetic`` work offline;
``mnist``, ``fashion_mnist``, ``cifar10`` and ``svhn`` are read from torchvision's on-disk format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import DatasetNotFoundError
from .registry import Registry

if TYPE_CHECKING:
    from .data import DataConfig

_SYNTHETIC_SEED = 20240601  # the synthetic *problem* is fixed; split_seed only moves the split


@dataclass
class _Raw:
    """What a loader returns: unnormalised NCHW images (any dtype) and int labels, on the CPU."""

    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor | None  # None: no official test set, nas_gym.data carves one out of x
    test_y: torch.Tensor | None
    num_classes: int
    augment: str = "none"


DATASETS: Registry[Callable[[DataConfig], _Raw]] = Registry("dataset")


def _register(name: str, val_fraction: float) -> Callable:
    """Register a loader with the validation fraction used when ``val_fraction=None``."""

    def add(fn: Callable) -> Callable:
        fn.default_val_fraction = val_fraction
        return DATASETS.register(name, fn)
    return add


@_register("digits", val_fraction=0.2)
def _load_digits(config: DataConfig) -> _Raw:
    """scikit-learn's 8x8 digits (1797 samples, values 0..16), split 60/20/20."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1)
    return _Raw(x, torch.from_numpy(d.target.astype(np.int64)), None, None, 10)


@_register("synthetic", val_fraction=0.2)
def _load_synthetic(config: DataConfig) -> _Raw:
    """Per-class smooth random prototypes plus Gaussian noise (std 2.5 x the prototypes' std).

    At the default 1x8x8 a linear classifier gets ~85% of the validation set: learnable, not
    trivial (larger shapes are easier: more pixels average the noise away).

    The problem is fixed by its shape, classes and sample count (seed ``_SYNTHETIC_SEED``); the
    split follows ``split_seed`` like every other dataset.
    """
    rng = np.random.default_rng(_SYNTHETIC_SEED)
    k, n = config.synthetic_classes, config.synthetic_samples
    c, h, w = config.synthetic_shape
    proto = rng.standard_normal((k, c, h, w))
    # A 3x3 box blur (wrapping) gives the prototypes spatial structure for convolutions to use.
    proto = sum(np.roll(proto, (a, b), axis=(2, 3)) for a in (-1, 0, 1) for b in (-1, 0, 1)) / 9
    proto /= proto.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    y = np.arange(n) % k  # balanced classes
    x = proto[y] + 2.5 * rng.standard_normal((n, c, h, w))
    return _Raw(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)),
                None, None, k)


_IDX = [f"{p}-{f}-ubyte" for p in ("train", "t10k") for f in ("images-idx3", "labels-idx1")]
_TV_FILES = {  # what torchvision reads, relative to data_root (MNIST: uncompressed raw files)
    "mnist": [f"MNIST/raw/{f}" for f in _IDX],
    "fashion_mnist": [f"FashionMNIST/raw/{f}" for f in _IDX],
    "cifar10": [f"cifar-10-batches-py/{f}" for f in [*(f"data_batch_{i}" for i in range(1, 6)),
                                                     "test_batch", "batches.meta"]],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
}


def _torchvision(config: DataConfig, make: Callable[[str, bool, bool], Any]) -> list[Any]:
    """Open the train and test sets through torchvision, with errors that say how to get them."""
    name, root = config.name, config.data_root
    how = f"pass download=True (needs internet) or put the torchvision files for {name} under"
    if root is None:
        raise DatasetNotFoundError(f"dataset={name!r} needs data_root=FOLDER, a folder holding "
                                   f"{', '.join(_TV_FILES[name])}; {how} data_root=FOLDER")
    missing = [f for f in _TV_FILES[name] if not os.path.isfile(os.path.join(root, f))]
    if missing and not config.download:
        raise DatasetNotFoundError(f"dataset={name!r}: {', '.join(missing)} not found under "
                                   f"data_root={root!r}; {how} data_root={root!r}")
    try:
        return [make(root, train, config.download) for train in (True, False)]
    except (RuntimeError, OSError) as e:
        if not config.download:
            raise
        raise DatasetNotFoundError(f"dataset={name!r}: downloading into data_root={root!r} "
                                   f"failed ({e}); check the internet connection, or put the "
                                   f"torchvision files there and pass download=False") from e


def _mnist_like(config: DataConfig, cls_name: str) -> _Raw:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)  # MNIST checks only that its files exist: no md5 to skip
    train, test = _torchvision(config, lambda r, t, d: cls(r, train=t, download=d))
    return _Raw(train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets, 10)


@_register("mnist", val_fraction=0.1)
def _load_mnist(config: DataConfig) -> _Raw:
    """MNIST 1x28x28, official 60k train (split into train/validation) and 10k test."""
    return _mnist_like(config, "MNIST")


@_register("fashion_mnist", val_fraction=0.1)
def _load_fashion_mnist(config: DataConfig) -> _Raw:
    """Fashion-MNIST 1x28x28, official 60k train (split into train/validation) and 10k test."""
    return _mnist_like(config, "FashionMNIST")


@cache
def _existence_checked() -> tuple[type, type]:
    """CIFAR10 / SVHN that check that their files exist instead of hashing them, unless downloading.

    torchvision md5-hashes ~180 MB (CIFAR-10) / ~600 MB (SVHN) on every construction. With the
    sums set to None its own ``check_integrity`` only tests existence; downloads keep the sums.
    Built lazily so that importing nas_gym does not import torchvision.datasets.
    """
    import torchvision.datasets as tvd

    class CIFAR10Local(tvd.CIFAR10):
        def __init__(self, root: str, train: bool, download: bool) -> None:
            if not download:  # instance attributes shadow the class's lists of sums
                self.train_list = [[f, None] for f, _ in tvd.CIFAR10.train_list]
                self.test_list = [[f, None] for f, _ in tvd.CIFAR10.test_list]
                self.meta = {**tvd.CIFAR10.meta, "md5": None}
            super().__init__(root, train=train, download=download)

    class SVHNLocal(tvd.SVHN):
        def __init__(self, root: str, split: str, download: bool) -> None:
            if not download:
                self.split_list = {k: [url, f, None] for k, (url, f, _) in tvd.SVHN.split_list.items()}
            super().__init__(root, split=split, download=download)

    return CIFAR10Local, SVHNLocal


@_register("cifar10", val_fraction=0.1)
def _load_cifar10(config: DataConfig) -> _Raw:
    """CIFAR-10 3x32x32: official 50k train split 45k/5k (ENAS, EPNAS), 10k test."""
    cls = _existence_checked()[0]
    train, test = _torchvision(config, cls)

    def nchw(ds: Any) -> torch.Tensor:  # torchvision keeps (N, H, W, C) uint8
        return torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))

    return _Raw(nchw(train), torch.tensor(train.targets, dtype=torch.int64), nchw(test),
                torch.tensor(test.targets, dtype=torch.int64), 10, augment="crop_flip")


@_register("svhn", val_fraction=0.1)
def _load_svhn(config: DataConfig) -> _Raw:
    """SVHN 3x32x32 (train and test .mat files; "extra" unused); torchvision maps label 10 to 0."""
    cls = _existence_checked()[1]
    train, test = _torchvision(config, lambda r, t, d: cls(r, "train" if t else "test", d))

    def labels(ds: Any) -> torch.Tensor:
        return torch.from_numpy(np.asarray(ds.labels, dtype=np.int64).reshape(-1))

    return _Raw(torch.from_numpy(train.data), labels(train), torch.from_numpy(test.data),
                labels(test), 10, augment="crop_flip")
