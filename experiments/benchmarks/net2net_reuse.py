"""Does Net2Net weight reuse pay? Epochs to reach the from-scratch accuracy, inherited vs scratch.

EAS (Cai et al. 2018) fine-tunes each child 20 epochs, at a lower learning rate (0.02), from
weights inherited through function-preserving transforms, where from-scratch search trains 50+.
This measures the saving on one child per seed:

1. ``Net2Net-v0`` trains its start net (``--start-epochs``), then a masked random policy applies
   the EAS allowance of transforms (5 deepen, 4 widen); the child's inherited weights are rebuilt
   from the store's lineage (``nas_gym.lineage.replay(..., finetune=False)``).
2. From scratch: the child's architecture trained ``E`` epochs (``--max-epochs``, the training
   preset's lr) gives the target accuracy; then ``e = 1, 2, ..`` epochs, each ``e`` a separate run
   with its own cosine schedule (as the env's ``epochs=e`` trains), until one reaches the target.
3. Inherited: the inherited weights fine-tuned ``e = 0, 1, ..`` epochs (``--finetune-lr``, EAS's
   smaller lr; same seed) until they reach the target.

"Reaches" means validation accuracy >= target - ``--tolerance`` (digits validates on 359 images:
one image is 0.28 points). It prints one row per (dataset, seed) and the ratio of epochs needed,
inherited / scratch (0 when the inherited weights meet the target untrained; inf when not within
E; the mean counts such a run as E + 1 epochs, so it is then a lower bound). The start net's training is paid once per search, not per child, so it is not counted.

    python -m nas_gym.experiments.benchmarks.net2net_reuse                     # digits, 3 seeds, CPU
    python -m nas_gym.experiments.benchmarks.net2net_reuse --data-root DIR     # + CIFAR-10 on a GPU

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
from nas_gym.lineage import replay
from nas_gym.training import evaluate, train


@dataclass
class Config:
    seeds: int = 3
    """Seeds (each: its own start net, transform path and training seed)."""
    max_epochs: int = 5
    """E: the from-scratch accuracy after E epochs is the target."""
    tolerance: float = 0.005
    """An accuracy >= target - tolerance reaches the target."""
    start_epochs: int = 20
    """Training of the digits start net (CIFAR-10: 5x this; EAS trains its start net long)."""
    training: str = "digits"
    """Training preset (``nas_gym.training.PRESETS``) of the start net and the scratch runs."""
    finetune_lr: float = 0.02
    """Initial lr of the inherited runs (EAS: 0.02, "smaller ... for this reason")."""
    widen_noise: float = 0.0
    """Net2Wider symmetry-breaking noise (the env's ``widen_noise``)."""
    train_size: int | None = None
    """Cap on training samples (None: the whole training split)."""
    device: str = "auto"
    """Evaluation device."""
    data_root: str | None = None
    """Folder with the torchvision CIFAR-10 files; CIFAR-10 runs only with it and a GPU."""


def run_one(dataset: str, seed: int, cfg: Config) -> dict:
    """One child: its epochs to the scratch target, inherited and from scratch."""
    start_epochs = cfg.start_epochs * (5 if dataset == "cifar10" else 1)
    env = gym.make("Net2Net-v0", dataset=dataset, data_root=cfg.data_root,
                   train_size=cfg.train_size, seed=seed,
                   training=cfg.training, epochs=1, start_epochs=start_epochs,
                   widen_noise=cfg.widen_noise, store=":memory:", measure_latency=False,
                   device=cfg.device).unwrapped
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    done = False
    while not done:  # masked random transforms until the EAS allowance is used up
        action = int(rng.choice(np.flatnonzero(info["action_mask"][:-1])))
        _, _, done, _, info = env.step(action)
    data, config = env.data, env.components.train_config
    inherited = replay(env.store, info["store_key"], data, finetune=False)
    arch = inherited.architecture

    def accuracy(make_model, epochs: int, **changes) -> float:
        model = make_model()
        if epochs:
            train(model, data, config.replace(epochs=epochs, **changes), seed=seed)
        return evaluate(model.to(data.device), data.val_x, data.val_y)[0]

    def scratch_model():
        return nas_gym.build_model(arch, data.input_shape, data.num_classes, seed=seed)

    start = time.perf_counter()
    target = accuracy(scratch_model, cfg.max_epochs)
    scratch, inherited_curve = [], []
    for e in range(1, cfg.max_epochs + 1):
        scratch.append(target if e == cfg.max_epochs else accuracy(scratch_model, e))
        if scratch[-1] >= target - cfg.tolerance:
            break
    lr = {"lr": cfg.finetune_lr, "lr_min": min(cfg.finetune_lr, config.lr_min)}
    for e in range(cfg.max_epochs + 1):
        inherited_curve.append(accuracy(lambda: copy.deepcopy(inherited), e, **lr))
        if inherited_curve[-1] >= target - cfg.tolerance:
            break
    e_scratch = len(scratch)
    one_epoch = inherited_curve[1] if len(inherited_curve) > 1 else \
        accuracy(lambda: copy.deepcopy(inherited), 1, **lr)
    e_inherited = len(inherited_curve) - 1 if inherited_curve[-1] >= target - cfg.tolerance \
        else math.inf
    return {"dataset": dataset, "seed": seed, "layers": len(arch.layers),
            "params": info["costs"]["params"], "start_acc": env.store.get(env.start_key)["accuracy"],
            "target": target, "e_scratch": e_scratch, "e_inherited": e_inherited,
            "ratio": e_inherited / e_scratch, "scratch": scratch, "inherited": inherited_curve,
            "acc1_scratch": scratch[0], "acc1_inherited": one_epoch,
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
                            type={"int": int, "float": float, "int | None": int}.get(f.type, str))
    cfg = Config(**vars(parser.parse_args(argv)))
    rows = [run_one(d, seed, cfg) for d in datasets(cfg) for seed in range(cfg.seeds)]
    print(f"\nNet2Net reuse: epochs to reach the from-scratch validation accuracy after "
          f"E={cfg.max_epochs} epochs (tolerance {cfg.tolerance}; preset {cfg.training!r}, "
          f"inherited lr {cfg.finetune_lr})")
    print(f"{'dataset':8} {'seed':>4} {'layers':>6} {'params':>8} {'start':>6} {'target':>6} "
          f"{'ep scratch':>10} {'ep inherited':>12} {'ratio':>6} {'seconds':>7}")
    for r in rows:
        print(f"{r['dataset']:8} {r['seed']:>4} {r['layers']:>6} {r['params']:>8} "
              f"{r['start_acc']:>6.3f} {r['target']:>6.3f} {r['e_scratch']:>10} "
              f"{r['e_inherited']:>12} {r['ratio']:>6.2f} {r['seconds']:>7.1f}")
    for r in rows:
        print(f"  {r['dataset']} seed {r['seed']}: scratch (e = 1, ..; E last) "
              f"{' '.join(f'{a:.3f}' for a in r['scratch'])} | inherited (e = 0, 1, ..) "
              f"{' '.join(f'{a:.3f}' for a in r['inherited'])}")
    for d in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == d]
        reached = sum(math.isfinite(r["e_inherited"]) for r in sel)
        # an inherited run that never reached the target within E counts as E + 1: a lower bound
        mean_i = np.mean([min(r["e_inherited"], cfg.max_epochs + 1) for r in sel])
        mean_s = np.mean([r["e_scratch"] for r in sel])
        bound = ">= " if reached < len(sel) else ""
        print(f"{d}: inherited reached the target in {reached}/{len(sel)} seeds; mean epochs "
              f"inherited {bound}{mean_i:.2f} / scratch {mean_s:.2f} -> ratio {bound}"
              f"{mean_i / mean_s:.2f}; after 1 epoch: inherited "
              f"{np.mean([r['acc1_inherited'] for r in sel]):.3f} vs scratch "
              f"{np.mean([r['acc1_scratch'] for r in sel]):.3f}")
    return rows


if __name__ == "__main__":
    main()
