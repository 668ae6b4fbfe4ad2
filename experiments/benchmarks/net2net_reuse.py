"""Does Net2Net weight reuse pay? Epochs to reach the from-scratch accuracy, inherited vs scratch.

EAS (Cai et al. 2018) fine-tunes each child 20 epochs from weights inherited through
function-preserving transforms, where from-scratch search trains 50+. This measures the saving on
one child per seed:

1. ``Net2Net-v0`` trains its start net (``--start-epochs``), then a masked random policy applies
   the EAS allowance of transforms (5 deepen, 4 widen); the child's inherited weights are rebuilt
   from the store's lineage (``nas_gym.stages.replay(..., finetune=False)``).
2. From scratch: the child's architecture is trained ``e = 1 .. E`` epochs (``--max-epochs``), each
   ``e`` a separate run with its own cosine schedule, as ``epochs=e`` would train it; the target is
   the accuracy after ``E`` epochs.
3. Inherited: the inherited weights are fine-tuned ``e = 0, 1, ..`` epochs (same config and seed)
   until they reach the target.

It prints one row per (dataset, seed) -- validation accuracies -- and the ratio of epochs needed,
inherited / scratch (0 when the inherited weights already meet the target untrained). The start
net's own training is paid once per search, not per child, so it is not counted.

    python -m experiments.benchmarks.net2net_reuse                     # digits, 3 seeds, CPU
    python -m experiments.benchmarks.net2net_reuse --data-root DIR     # + CIFAR-10 on a GPU

CIFAR-10 runs when a CUDA device is visible and its torchvision files are under ``--data-root``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch

import nas_gym
from nas_gym.data import DataConfig, load_data
from nas_gym.errors import DatasetNotFoundError
from nas_gym.stages import replay
from nas_gym.training import evaluate, train


@dataclass
class Config:
    seeds: int = 3
    """Seeds (each: its own start net, transform path and training seed)."""
    max_epochs: int = 10
    """E: the from-scratch accuracy after E epochs is the target."""
    start_epochs: int = 10
    """Training of the digits start net (CIFAR-10: 5x this, EAS trains its start net long)."""
    training: str = "digits"
    """Training preset of children (``nas_gym.training.PRESETS``; "eas" = EAS's lr 0.02)."""
    device: str = "auto"
    """Evaluation device."""
    data_root: str | None = None
    """Folder with the torchvision CIFAR-10 files; CIFAR-10 runs only with it and a GPU."""


def run_one(dataset: str, seed: int, cfg: Config) -> dict:
    """One child: its epochs to the scratch target, inherited and from scratch."""
    start_epochs = cfg.start_epochs * (5 if dataset == "cifar10" else 1)
    env = gym.make("Net2Net-v0", dataset=dataset, data_root=cfg.data_root, seed=seed,
                   training=cfg.training, epochs=1, start_epochs=start_epochs,
                   store=":memory:", measure_latency=False, device=cfg.device).unwrapped
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    done = False
    while not done:  # masked random transforms until the EAS allowance is used up
        action = int(rng.choice(np.flatnonzero(info["action_mask"][:-1])))
        _, _, done, _, info = env.step(action)
    data, config = env.data, env.components.train_config
    inherited = replay(env.store, info["store_key"], data, finetune=False)
    arch = inherited.architecture

    def accuracy(make_model, epochs: int) -> float:
        model = make_model()
        if epochs:
            train(model, data, config.replace(epochs=epochs), seed=seed)
        return evaluate(model.to(data.device), data.val_x, data.val_y)[0]

    start = time.perf_counter()
    scratch = [accuracy(lambda: nas_gym.build_model(arch, data.input_shape, data.num_classes,
                                                    seed=seed), e)
               for e in range(1, cfg.max_epochs + 1)]
    target = scratch[-1]
    inherited_curve = []
    for e in range(cfg.max_epochs + 1):
        inherited_curve.append(accuracy(lambda: copy.deepcopy(inherited), e))
        if inherited_curve[-1] >= target:
            break
    e_scratch = next(e for e, acc in enumerate(scratch, 1) if acc >= target)
    e_inherited = len(inherited_curve) - 1 if inherited_curve[-1] >= target else math.inf
    return {"dataset": dataset, "seed": seed, "layers": len(arch.layers),
            "params": info["costs"]["params"], "start_acc": env.store.get(env.start_key)["accuracy"],
            "target": target, "e_scratch": e_scratch, "e_inherited": e_inherited,
            "ratio": e_inherited / e_scratch, "scratch": scratch, "inherited": inherited_curve,
            "seconds": time.perf_counter() - start}


def datasets(cfg: Config) -> list[str]:
    out = ["digits"]
    if cfg.data_root is None or not torch.cuda.is_available():
        print("CIFAR-10: skipped (needs a CUDA device and --data-root with its files)")
        return out
    try:
        load_data(DataConfig(name="cifar10", data_root=cfg.data_root))
    except DatasetNotFoundError as exc:
        print(f"CIFAR-10: skipped ({exc})")
        return out
    return [*out, "cifar10"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(Config):
        parser.add_argument(f"--{f.name.replace('_', '-')}", default=f.default,
                            type=int if f.type == "int" else str)
    cfg = Config(**vars(parser.parse_args(argv)))
    rows = [run_one(d, seed, cfg) for d in datasets(cfg) for seed in range(cfg.seeds)]
    print(f"\nNet2Net reuse: epochs to reach the from-scratch accuracy after E={cfg.max_epochs} "
          f"epochs (validation; training preset {cfg.training!r})")
    print(f"{'dataset':8} {'seed':>4} {'layers':>6} {'params':>8} {'start':>6} {'target':>6} "
          f"{'ep scratch':>10} {'ep inherited':>12} {'ratio':>6} {'seconds':>7}")
    for r in rows:
        print(f"{r['dataset']:8} {r['seed']:>4} {r['layers']:>6} {r['params']:>8} "
              f"{r['start_acc']:>6.3f} {r['target']:>6.3f} {r['e_scratch']:>10} "
              f"{r['e_inherited']:>12} {r['ratio']:>6.2f} {r['seconds']:>7.1f}")
    for r in rows:
        print(f"  {r['dataset']} seed {r['seed']}: scratch "
              f"{' '.join(f'{a:.3f}' for a in r['scratch'])} | inherited (from 0 epochs) "
              f"{' '.join(f'{a:.3f}' for a in r['inherited'])}")
    for d in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == d]
        mean_i = np.mean([r["e_inherited"] for r in sel])
        mean_s = np.mean([r["e_scratch"] for r in sel])
        print(f"{d}: mean epochs inherited {mean_i:.2f} / scratch {mean_s:.2f} -> "
              f"ratio {mean_i / mean_s:.2f}")
    return rows


if __name__ == "__main__":
    main()
