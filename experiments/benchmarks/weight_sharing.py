"""Seconds per architecture evaluation: ``evaluator="shared"`` (ENAS / B-ENAS weight sharing)
against ``evaluator="train"`` (from scratch), both with the env's default settings, and the rank
correlation of the two evaluators' accuracies on the same cells.

1. ``--archs`` distinct cells are sampled from a B-ENAS controller (``nas_gym.experiments.benas``).
2. Timing, per cell, with ``CellNAS-v0``'s defaults (digits preset: 4 epochs, batch 64; shared:
   one TrainChild mini-batch + one validation mini-batch, Omega kept across cells): the env step
   (the pipeline's evaluation of the new cell: key, store lookup and write, pre-training costs,
   the module build from scratch needs, the evaluator, reward, info) and, within it, the
   evaluator's ``evaluate``. Omega's build and a warm-up evaluation are not counted.
3. Rank correlation: a B-ENAS child-training phase of ``--phase-steps`` mini-batches of
   ``--phase-batch`` (a fresh cell from the near-uniform initial controller for each), then
   Omega's accuracy of each cell on the whole validation split against its from-scratch accuracy
   from step 2 (Spearman).

    python -m nas_gym.experiments.benchmarks.weight_sharing [--archs 10] [--phase-steps 1500]
        [-E channels=16 -E max_blocks=2] [--dataset cifar10 --data-root DIR --device cuda]

CIFAR-10 runs only when a CUDA device is present and the files are under ``--data-root``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import gymnasium as gym
import torch
from scipy.stats import spearmanr

import nas_gym  # noqa: F401  (registers the envs)
from nas_gym.arch.base import Architecture
from nas_gym.experiments.benas import BenasSearch
from nas_gym.experiments.benas_config import BenasConfig
from nas_gym.experiments.benchmarks.eval_overhead import Timed
from nas_gym.experiments.cli import parse_mapping


def distinct_cells(search: BenasSearch, n: int, tries: int = 50) -> list[Architecture]:
    cells: dict[str, Architecture] = {}
    for _ in range(tries * n):
        arch = search.sample_architectures(1)[0]
        cells.setdefault(arch.sha256, arch)
        if len(cells) == n:
            break
    return list(cells.values())


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run(archs: int, phase_steps: int, phase_batch: int, env_kwargs: dict[str, Any],
        seed: int = 0) -> dict[str, Any]:
    kwargs = {"store": ":memory:", "seed": seed, **env_kwargs}
    search = BenasSearch(BenasConfig(budget=None, batch_size=phase_batch, final_epochs=0,
                                     env_kwargs=kwargs, seed=seed))
    cells = distinct_cells(search, archs)
    space = {k: kwargs[k] for k in ("ops", "max_blocks") if k in kwargs}
    shared_env = gym.make("CellNAS-v0", evaluator="shared", evaluator_kwargs=space, **kwargs)
    scratch_env = gym.make("CellNAS-v0", evaluator="train", **kwargs)
    shared = shared_env.unwrapped.components.evaluator
    _, build_s = timed(shared.build, cells[0], seed=seed)
    shared.evaluate(cells[0], seed=seed)  # warm-up
    steps = {}  # env step = the pipeline's evaluation of a new cell; its evaluator's share timed
    for name, env in (("shared", shared_env), ("scratch", scratch_env)):
        pipeline = env.unwrapped.components.pipeline
        pipeline.evaluator = Timed(pipeline.evaluator)
        steps[name] = pipeline
    rows = []
    for arch in cells:
        _, shared_step = timed(steps["shared"].evaluate, arch, seed=seed)
        shared_s = steps["shared"].evaluator.last
        (info, _), scratch_step = timed(steps["scratch"].evaluate, arch, seed=seed)
        assert not info["cache_hit"]
        rows.append({"shared_s": shared_s, "scratch_s": steps["scratch"].evaluator.last,
                     "shared_step_s": shared_step, "scratch_step_s": scratch_step,
                     "scratch_accuracy": info["accuracy"]})
    stats = search.train_child(phase_steps)
    shared_acc = [search.evaluator.score(arch, None)[0] for arch in cells]
    scratch_acc = [r["scratch_accuracy"] for r in rows]
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("shared_s", "scratch_s", "shared_step_s", "scratch_step_s")}
    return {
        "device": str(shared.data.device), "env_kwargs": {k: v for k, v in kwargs.items()
                                                          if k != "store"},
        "archs": len(cells), "supernet_params": shared.supernet_params,
        "supernet_memory_bytes": shared.supernet_memory_bytes, "supernet_build_s": build_s,
        "median_s": med, "ratio_evaluator": med["scratch_s"] / med["shared_s"],
        "ratio_env_step": med["scratch_step_s"] / med["shared_step_s"],
        "phase_steps": stats["child_steps"], "phase_batch": phase_batch,
        "shared_accuracy": shared_acc, "scratch_accuracy": scratch_acc,
        "mean_shared_accuracy": statistics.fmean(shared_acc),
        "spearman": float(spearmanr(shared_acc, scratch_acc).correlation),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--phase-steps", type=int, default=1500)
    ap.add_argument("--phase-batch", type=int, default=16)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-E", "--env-kwarg", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dataset == "cifar10" and not torch.cuda.is_available():
        print("skipped: CIFAR-10 is benchmarked only on a CUDA device")
        return
    env_kwargs: dict[str, Any] = {"dataset": args.dataset, "device": args.device}
    if args.data_root:
        env_kwargs["data_root"] = args.data_root
    for item in args.env_kwarg:
        env_kwargs.update(parse_mapping(item, "--env-kwarg"))
    try:
        out = run(args.archs, args.phase_steps, args.phase_batch, env_kwargs, args.seed)
    except FileNotFoundError as exc:  # a torchvision set that is not on disk
        print(f"skipped: {exc}")
        return
    med = out["median_s"]
    print(f"{out['archs']} cells on {out['env_kwargs']['dataset']} ({out['device']}), env "
          f"kwargs {out['env_kwargs']}")
    print(f"super-network: {out['supernet_params']:,} params, ~"
          f"{out['supernet_memory_bytes'] / 2**20:.0f} MiB estimated, built in "
          f"{out['supernet_build_s']:.1f}s")
    print(f"seconds per evaluation (median): shared {med['shared_s']:.3f}, from scratch "
          f"{med['scratch_s']:.2f} -> {out['ratio_evaluator']:.0f}x faster")
    print(f"seconds per env step (the pipeline's evaluation of a new cell: store, key, costs, "
          f"model build, reward; median): shared {med['shared_step_s']:.3f}, from scratch "
          f"{med['scratch_step_s']:.2f} -> {out['ratio_env_step']:.0f}x faster (target >= 50x)")
    print(f"rank correlation after {out['phase_steps']} shared mini-batches of "
          f"{out['phase_batch']}: Spearman {out['spearman']:+.2f}, mean shared accuracy "
          f"{out['mean_shared_accuracy']:.3f} (scratch mean "
          f"{statistics.fmean(out['scratch_accuracy']):.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
