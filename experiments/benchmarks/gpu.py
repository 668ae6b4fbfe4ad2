"""GPU figures of child training, each ratio measured side by side in one run (issue 15).

On a CIFAR-10-sized child (a fixed 5-block B-ENAS cell, the N=1 search model, ``--channels``)
and synthetic 3x32x32 data (``nas_gym`` dataset ``"synthetic"``, 10 classes), trained with the
same hyperparameters everywhere (SGD Nesterov, cosine, gradient clipping, crop + flip):

1. **bf16 vs fp32**: an airbench-style hand-written loop (data and augmentation on the device,
   channels_last on CUDA) with bf16 autocast, against the same loop in float32.
2. **device-resident data vs a DataLoader**: that loop fed by ``nas_gym.data.augment_batch`` on
   the device, against a ``torch.utils.data.DataLoader`` (per-sample crop + flip in
   ``--loader-workers`` worker processes, pinned memory on CUDA, a host-to-device copy per batch).
3. **nas_gym vs hand-written**: :func:`nas_gym.training.train` (what every env runs), against the
   airbench-style loop with the same precision policy (bf16 on CUDA, float32 elsewhere).
4. **1 vs k children at once** through the process backend (:class:`nas_gym.evaluators.remote.
   ProcessEvaluator`, one worker process per child, all on one device): k children trained one
   after the other by one worker, against k workers training one each at the same time
   (throughput ratio; workers are warmed up first).

Pairs run alternately ``--repeats`` times; each ratio is the median. Seconds are wall seconds
with the device synchronised. ``--tiny`` is a CPU-sized run (100 3x8x8 images, a 2-block cell of 4
channels, 2 children) that exercises every code path (``tests/test_gpu_benchmark.py``).

    python -m nas_gym.experiments.benchmarks.gpu [--device cuda] [--children 4] [--json out.json]
    python -m nas_gym.experiments.benchmarks.gpu --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import nas_gym
from nas_gym.arch.cell import Block, Cell, CellArchitecture
from nas_gym.data import DataConfig, DataSplit, augment_batch, load_data
from nas_gym.device import resolve_device
from nas_gym.evaluators.remote import EvaluatorSpec, ProcessEvaluator
from nas_gym.training import TrainConfig, evaluate, make_optimizer, make_scheduler, train

#: full size (one GPU, under 5 minutes) and the CPU-sized ``--tiny`` run
SIZES = {"full": {"shape": (3, 32, 32), "samples": 25_000, "channels": 20, "blocks": 5,
                  "epochs": 2, "batch": 256, "children": 4, "repeats": 3, "loader_workers": 4},
         "tiny": {"shape": (3, 8, 8), "samples": 100, "channels": 4, "blocks": 2,
                  "epochs": 1, "batch": 30,
                  "children": 2, "repeats": 1, "loader_workers": 0}}


def child_architecture(channels: int, blocks: int = 5) -> CellArchitecture:
    """A fixed cell of the ENAS ops (B-ENAS's shared normal / reduction cell), its first
    ``blocks`` blocks."""
    normal = Cell((Block(0, 1, "sep_conv_3x3", "identity"),
                   Block(1, 2, "sep_conv_5x5", "avg_pool_3x3"),
                   Block(0, 3, "max_pool_3x3", "sep_conv_3x3"),
                   Block(2, 1, "identity", "sep_conv_5x5"),
                   Block(4, 5, "sep_conv_3x3", "avg_pool_3x3"))[:blocks])
    return CellArchitecture(normal, None, n_normal=1, channels=channels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Augmented(torch.utils.data.Dataset):
    """CPU samples with per-sample crop (pad 4) + flip: what a torchvision pipeline does. Each
    worker draws from its own generator, seeded by the DataLoader's (no global random state)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.cpu(), y.cpu()
        self._rng: tuple[int, np.random.Generator] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        seed = info.seed if info is not None else 0
        if self._rng is None or self._rng[0] != seed:
            self._rng = (seed, np.random.default_rng(seed % 2**63))
        rng = self._rng[1]
        h, w = self.x.shape[2:]
        dy, dx = (int(v) for v in rng.integers(0, 9, 2))
        img = F.pad(self.x[i], (4, 4, 4, 4))[:, dy:dy + h, dx:dx + w]
        return (img.flip(-1) if rng.random() < 0.5 else img), self.y[i]


def hand_loop(model: nn.Module, data: DataSplit, cfg: TrainConfig, *, seed: int, bf16: bool,
              loader: torch.utils.data.DataLoader | None = None) -> float:
    """The airbench way, written out: seconds of ``cfg.epochs`` epochs of SGD on ``model``."""
    device = data.device
    model.to(device).train()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    n = int(data.train_x.shape[0])
    batch = min(cfg.batch_size, n)
    steps = n // batch
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    _sync(device)
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        if loader is None:
            perm = torch.randperm(n, generator=gen, device=device)
            batches = ((augment_batch(data.train_x[idx], gen, "crop_flip"), data.train_y[idx])
                       for idx in perm[:steps * batch].view(steps, batch))
        else:
            batches = ((xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
                       for xb, yb in loader)
        for x, y in batches:
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            opt.step()
            sched.step()
    _sync(device)
    return time.perf_counter() - start


def _pairs(repeats: int, a: Any, b: Any) -> tuple[list[float], list[float]]:
    """Run ``a()`` and ``b()`` (each returns seconds) ``repeats`` times, alternating the order."""
    ta, tb = [], []
    for r in range(repeats):
        for fn in ((a, b) if r % 2 == 0 else (b, a)):
            (ta if fn is a else tb).append(fn())
    return ta, tb


def single_device(size: dict[str, Any], device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Figures 1-3 (one process, one device)."""
    config = DataConfig(name="synthetic", synthetic_shape=size["shape"],
                        synthetic_samples=size["samples"])
    data = dataclasses.replace(load_data(config, device=device), augment="crop_flip")
    cfg = TrainConfig(epochs=size["epochs"], batch_size=size["batch"])
    arch = child_architecture(size["channels"], size["blocks"])

    def fresh() -> nn.Module:
        return nas_gym.build_model(arch, data.input_shape, data.num_classes, seed=seed)

    cuda = device.type == "cuda"
    hand_loop(fresh(), data, cfg, seed=seed, bf16=cuda)  # warm-up: kernels, cuDNN, allocator
    out: dict[str, Any] = {"device": str(device), "params": sum(
        p.numel() for p in fresh().parameters()), "train_samples": int(data.train_x.shape[0])}
    bf16, fp32 = _pairs(size["repeats"],
                        lambda: hand_loop(fresh(), data, cfg, seed=seed, bf16=True),
                        lambda: hand_loop(fresh(), data, cfg, seed=seed, bf16=False))
    out["bf16_s"], out["fp32_s"] = statistics.median(bf16), statistics.median(fp32)
    loader = torch.utils.data.DataLoader(
        Augmented(data.train_x, data.train_y), batch_size=cfg.batch_size, shuffle=True,
        drop_last=True, num_workers=size["loader_workers"], pin_memory=cuda,
        persistent_workers=size["loader_workers"] > 0,
        generator=torch.Generator().manual_seed(seed))
    resident, loaded = _pairs(size["repeats"],
                              lambda: hand_loop(fresh(), data, cfg, seed=seed, bf16=cuda),
                              lambda: hand_loop(fresh(), data, cfg, seed=seed, bf16=cuda,
                                                loader=loader))
    out["resident_s"], out["loader_s"] = statistics.median(resident), statistics.median(loaded)

    def ours() -> float:
        model = fresh()
        _sync(device)
        start = time.perf_counter()
        run = train(model, data, cfg, seed=seed)
        _sync(device)
        assert run.status == "ok", run
        return time.perf_counter() - start

    mine, hand = _pairs(size["repeats"], ours,
                        lambda: hand_loop(fresh(), data, cfg, seed=seed, bf16=cuda))
    out["nas_gym_s"], out["hand_s"] = statistics.median(mine), statistics.median(hand)
    model = fresh()
    train(model, data, cfg, seed=seed)
    out["nas_gym_val_accuracy"] = evaluate(model, data.val_x, data.val_y)[0]
    return out


def children_at_once(size: dict[str, Any], device: torch.device, seed: int = 0
                     ) -> dict[str, Any]:
    """Figure 4: k children one after the other in one worker, then k workers at once."""
    k = size["children"]
    config = DataConfig(name="synthetic", synthetic_shape=size["shape"],
                        synthetic_samples=size["samples"])
    spec = EvaluatorSpec("train", config, TrainConfig(epochs=size["epochs"],
                                                      batch_size=size["batch"]))
    arch = child_architecture(size["channels"], size["blocks"])
    workers = [ProcessEvaluator(spec, device=str(device), threads=1) for _ in range(k)]
    try:
        with ThreadPoolExecutor(k) as pool:
            def run(jobs: list[tuple[int, int]]) -> float:
                start = time.perf_counter()
                results = list(pool.map(lambda j: workers[j[0]].evaluate(arch, seed=j[1]),
                                        jobs))
                assert all(r.status == "ok" for r in results), results
                return time.perf_counter() - start

            run([(w, seed + 100 + w) for w in range(k)])  # warm-up: start, data, first child
            one = sum(run([(0, seed + i)]) for i in range(k))
            at_once = run([(i, seed + i) for i in range(k)])
    finally:
        for w in workers:
            w.close()
    return {"children": k, "one_at_a_time_s": one, "at_once_s": at_once}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a CPU-sized run of every code path")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--children", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    size = dict(SIZES["tiny" if args.tiny else "full"])
    for name in ("children", "repeats"):
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    device = resolve_device("cpu" if args.tiny and args.device == "auto" else args.device)
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: run with --tiny (CPU-sized) or on a GPU")
        return {}
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        out = {**single_device(size, device), **children_at_once(size, device), "size": size}
    finally:
        torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    shape = "x".join(map(str, size["shape"]))
    print(f"child: {size['blocks']}-block cell, {out['params']:,} params, synthetic {shape}, "
          f"{out['train_samples']} training samples x {size['epochs']} epochs, batch "
          f"{size['batch']}, on {name} (median of {size['repeats']})")
    print(f"1. bf16 autocast {out['bf16_s']:.2f} s vs fp32 {out['fp32_s']:.2f} s: "
          f"{out['fp32_s'] / out['bf16_s']:.2f}x")
    print(f"2. device-resident data + on-device augmentation {out['resident_s']:.2f} s vs "
          f"DataLoader ({size['loader_workers']} workers) {out['loader_s']:.2f} s: "
          f"{out['loader_s'] / out['resident_s']:.2f}x")
    print(f"3. nas_gym training {out['nas_gym_s']:.2f} s vs airbench-style hand-written loop "
          f"{out['hand_s']:.2f} s: ratio {out['nas_gym_s'] / out['hand_s']:.3f} (val accuracy "
          f"{out['nas_gym_val_accuracy']:.3f})")
    print(f"4. {out['children']} children: one at a time {out['one_at_a_time_s']:.2f} s, at once "
          f"through the process backend {out['at_once_s']:.2f} s: "
          f"{out['one_at_a_time_s'] / out['at_once_s']:.2f}x throughput")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
