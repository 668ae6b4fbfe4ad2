"""Tests of nas_gym.data: splits, normalisation, augmentation and the torchvision on-disk formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_gym.data import (
    DataConfig,
    DataSplit,
    augment_batch,
    clear_data_cache,
    load_data,
)
from nas_gym.datasets import DATASETS
from nas_gym.errors import ConfigError, DatasetNotFoundError

TORCHVISION_SETS = ["mnist", "fashion_mnist", "cifar10", "svhn"]


def raw_of(split: DataSplit, x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to the dataset's own pixel units."""
    c = len(split.mean)
    return x * torch.tensor(split.std).view(1, c, 1, 1) + torch.tensor(split.mean).view(1, c, 1, 1)


def rows(x: torch.Tensor) -> list[tuple]:
    return sorted(map(tuple, x.flatten(1).round().long().tolist()))


# ----------------------------------------------------------------------------- offline sets


def test_registry_names():
    assert DATASETS.names() == sorted(["digits", "synthetic", *TORCHVISION_SETS])


def test_digits_shapes_and_split_sizes():
    d = load_data()
    assert (d.name, d.input_shape, d.num_classes, d.augment) == ("digits", (1, 8, 8), 10, "none")
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (1079, 359, 359)  # 60/20/20 of 1797
    for x, y in [(d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)
        assert set(y.tolist()) == set(range(10))  # stratified: every class in every part
    assert d.device == torch.device("cpu") and d.to("cpu").device == torch.device("cpu")


def test_digits_split_is_a_seeded_partition():
    from sklearn.datasets import load_digits

    d = load_data()
    parts = [raw_of(d, x) for x in (d.train_x, d.val_x, d.test_x)]
    # The three parts together are exactly the 1797 digits (the digits have no duplicate images),
    # so they are disjoint and cover everything, and each image keeps its own label.
    assert rows(torch.cat(parts)) == rows(torch.from_numpy(load_digits().images))
    truth = {r: int(t) for r, t in zip(map(tuple, load_digits().data.astype(int).tolist()),
                                       load_digits().target, strict=True)}
    for x, y in zip(parts, (d.train_y, d.val_y, d.test_y), strict=True):
        assert [truth[tuple(r)] for r in x.flatten(1).round().long().tolist()] == y.tolist()

    assert load_data() is d  # cached in-process: envs share tensors
    clear_data_cache()
    again = load_data()
    assert again is not d and all(torch.equal(getattr(again, f), getattr(d, f))
                                  for f in ("train_x", "val_x", "test_x", "train_y"))
    other = load_data(split_seed=1)
    assert not torch.equal(other.val_x, d.val_x)
    assert other.fingerprint != d.fingerprint


def test_normalisation_uses_train_part_only():
    d = load_data()
    assert torch.allclose(d.train_x.mean(dim=(0, 2, 3)), torch.zeros(1), atol=1e-5)
    assert torch.allclose(d.train_x.std(dim=(0, 2, 3)), torch.ones(1), atol=1e-5)
    train_raw = raw_of(d, d.train_x)
    assert d.mean[0] == pytest.approx(train_raw.mean().item(), abs=1e-4)
    all_raw = torch.cat([train_raw, raw_of(d, d.val_x), raw_of(d, d.test_x)])
    assert d.mean[0] != pytest.approx(all_raw.mean().item(), abs=1e-4)
    assert d.val_x.mean().abs() > 1e-4  # validation is not re-centred on itself


def test_train_size_caps_training_only():
    full, small = load_data(), load_data(train_size=50)
    assert len(small.train_x) == 50 and torch.equal(small.val_y, full.val_y)
    assert set(small.train_y.tolist()) == set(range(10))
    assert small.fingerprint["train_size"] == 50


def test_synthetic_is_deterministic_and_disjoint():
    cfg = DataConfig(name="synthetic", synthetic_shape=(3, 6, 5), synthetic_classes=4,
                     synthetic_samples=100)
    a = load_data(cfg)
    clear_data_cache()
    b = load_data(cfg)
    assert a is not b and torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert (a.input_shape, a.num_classes) == ((3, 6, 5), 4)
    assert (len(a.train_x), len(a.val_x), len(a.test_x)) == (60, 20, 20)
    flat = [x.flatten(1) for x in (a.train_x, a.val_x, a.test_x)]
    assert torch.cdist(flat[0], flat[1]).min() > 0 and torch.cdist(flat[1], flat[2]).min() > 0
    assert a.fingerprint["shape"] == [3, 6, 5]
    assert DataConfig(name="synthetic", synthetic_shape=[3, 6, 5]).synthetic_shape == (3, 6, 5)


# ----------------------------------------------------------------------------- errors


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="dataset='cifar' .*'cifar10'.*'digits'"):
        load_data(name="cifar")


@pytest.mark.parametrize("field, value", [
    ("val_fraction", 0.0), ("val_fraction", 0.6), ("train_size", 0), ("split_seed", -1),
    ("synthetic_shape", (1, 8)), ("synthetic_classes", 1), ("synthetic_samples", 20),
])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        DataConfig(**{field: value}).validate()


def test_unknown_keyword_is_a_config_error():
    with pytest.raises(ConfigError, match="val_frac"):
        load_data(val_frac=0.1)


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_missing_torchvision_data_says_how_to_get_it(name, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="download=True"):
        load_data(name=name)
    with pytest.raises(DatasetNotFoundError, match=f"download=True.*{name}.*data_root"):
        load_data(name=name, data_root=tmp_path)


# ----------------------------------------------------------------------------- augmentation


def crafted(n: int = 64, c: int = 2, h: int = 5, w: int = 7) -> torch.Tensor:
    """Distinct, non-zero pixels, so any window of the padded image identifies its offset."""
    return (torch.arange(c * h * w, dtype=torch.float32) + 1).view(1, c, h, w).repeat(n, 1, 1, 1)


def offsets_of(out: torch.Tensor, x: torch.Tensor, pad: int) -> list[tuple[int, int, bool]]:
    """For each output image, the (dy, dx, flipped) of the padded input it equals."""
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[2:]
    found = []
    for o, p in zip(out, padded, strict=True):
        hits = [(dy, dx, fl) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                for fl in (False, True)
                if torch.equal(o, (lambda win: win.flip(2) if fl else win)(
                    p[:, dy:dy + h, dx:dx + w]))]
        assert hits, "output is not a (flipped) window of the padded image"
        found.append(hits[0])
    return found


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = crafted()
    out = augment_batch(x, torch.Generator().manual_seed(0), "crop_flip", pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    found = offsets_of(out, x, pad=2)
    assert len({(dy, dx) for dy, dx, _ in found}) > 5  # offsets differ per sample
    assert {fl for _, _, fl in found} == {False, True}
    again = augment_batch(x, torch.Generator().manual_seed(0), "crop_flip", pad=2)
    assert torch.equal(out, again)  # same generator seed, same batch


def test_crop_only_and_flip_only():
    x = crafted()
    crops = offsets_of(augment_batch(x, torch.Generator().manual_seed(1), "crop", pad=1), x, 1)
    assert not any(fl for _, _, fl in crops) and len({c[:2] for c in crops}) == 9
    flips = augment_batch(x, torch.Generator().manual_seed(1), "flip")
    is_flip = [torch.equal(f, x[0].flip(2)) for f in flips]
    assert any(is_flip) and not all(is_flip)
    assert all(f or torch.equal(o, x[0]) for f, o in zip(is_flip, flips, strict=True))
    assert augment_batch(x, torch.Generator(), "none") is x


def test_augment_rejects_unknown_kind():
    with pytest.raises(ConfigError, match="kind"):
        augment_batch(crafted(2), torch.Generator(), "cutout")


# ----------------------------------------------------------------------------- torchvision formats
# Tiny fakes in torchvision's real on-disk formats. Pixel value = 80*channel + row + 3*label, so
# the test can check the channel/row layout and that images stay with their labels.
N_TRAIN, N_TEST = 60, 20


def fake_images(n: int, c: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    labels = rng.integers(0, 10, n)
    x = (80 * np.arange(c)[None, :, None, None] + np.arange(size)[None, None, :, None]
         + 3 * labels[:, None, None, None])
    return np.broadcast_to(x, (n, c, size, size)).astype(np.uint8), labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """The big-endian idx-ubyte format of MNIST (magic 0x08 = uint8, then the dims)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fake(name: str, root: Path) -> None:
    rng = np.random.default_rng(0)
    if name in ("mnist", "fashion_mnist"):
        raw = root / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name] / "raw"
        raw.mkdir(parents=True)
        for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
            x, y = fake_images(n, 1, 28, rng)
            write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    elif name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        files = [(f"data_batch_{i}", N_TRAIN // 5) for i in range(1, 6)] + [("test_batch", N_TEST)]
        for fname, n in files:
            x, y = fake_images(n, 3, 32, rng)  # rows of 3072 = R plane, G plane, B plane
            entry = {"batch_label": fname, "labels": y.tolist(), "data": x.reshape(n, 3072)}
            (folder / fname).write_bytes(pickle.dumps(entry))
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    else:
        from scipy.io import savemat

        for fname, n in (("train_32x32.mat", N_TRAIN), ("test_32x32.mat", N_TEST)):
            x, y = fake_images(n, 3, 32, rng)
            y_mat = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # SVHN writes 0 as 10
            savemat(root / fname, {"X": x.transpose(2, 3, 1, 0), "y": y_mat})  # H, W, C, N


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_torchvision_on_disk_formats(name, tmp_path):
    write_fake(name, tmp_path)
    d = load_data(DataConfig(name=name, data_root=tmp_path))
    c, size = (1, 28) if "mnist" in name else (3, 32)
    assert (d.input_shape, d.num_classes) == ((c, size, size), 10)
    assert d.augment == ("crop_flip" if c == 3 else "none")
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (54, 6, N_TEST)  # val 0.1 of train
    for x, y in [(d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)]:
        assert x.shape[1:] == (c, size, size) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
        expected = (80 * torch.arange(c).view(1, c, 1, 1) + torch.arange(size).view(1, 1, size, 1)
                    + 3 * y.view(-1, 1, 1, 1)).expand_as(x)
        assert torch.equal(raw_of(d, x).round().long(), expected)
    assert torch.allclose(d.train_x.mean(dim=(0, 2, 3)), torch.zeros(c), atol=1e-4)
    if name == "svhn":
        assert (torch.cat([d.train_y, d.val_y, d.test_y]) == 0).any()  # the 10s became 0
    assert load_data(name=name, data_root=str(tmp_path)) is d
