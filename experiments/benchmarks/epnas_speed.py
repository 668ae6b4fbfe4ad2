"""EPNAS performance prediction (seed 004, §3.4) against training from scratch, per network.

The networks are those a search visits: a masked random policy runs ``ProgressiveNAS-v0``
episodes (seeded random start nets, one scale + insert transform per step; no training while
they are collected), and each distinct network, in visiting order, is evaluated by

- ``scratch``: :class:`~nas_gym.evaluators.TrainEvaluator`, the env's training config
  (``--epochs``), from scratch;
- ``epnas``: the ``"epnas"`` evaluator given the same config: large batch, scaled lr, cosine,
  half the epochs, early stop, and the parameter-sharing dictionary, which fills up as the
  search goes on;
- ``scratch-short``: from scratch, the env's batch and lr, as many epochs as ``epnas`` trains;
- ``epnas-noshare``: ``epnas`` without the dictionary (ablation),

interleaved per network so machine noise hits every side. Prints
seconds per network (CPU and wall), validation and test accuracy, and the rank correlation of the
predicted accuracies with the from-scratch ones (what a search needs from a predictor).

    python -m nas_gym.experiments.benchmarks.epnas_speed [--pattern layer] [--episodes 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import nas_gym  # noqa: F401  (registers the env ids)
from nas_gym.evaluators import EVALUATORS
from nas_gym.models import build_model

SIDES = ("scratch", "epnas", "scratch-short", "epnas-noshare")


class _Collect:
    """Collecting the networks needs no accuracy: a constant evaluator, no training."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "epnas-speed-collect"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        return {"accuracy": 0.0}


def visited_networks(pattern: str, episodes: int, seed: int) -> tuple[list[dict], Any]:
    """Distinct networks of ``episodes`` masked-random episodes, in visiting order (start nets
    included), and the env (its data and training config)."""
    env = gym.make("ProgressiveNAS-v0", pattern=pattern, evaluator=_Collect(), store=":memory:",
                   measure_latency=False).unwrapped
    rng, seen, nets = np.random.default_rng(seed), set(), []
    for episode in range(episodes):
        _, info = env.reset(seed=seed + episode)
        done = False
        while True:
            key = json.dumps(info["architecture"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                nets.append(info["architecture"])
            if done:
                break
            _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
    return nets, env


def evaluate_interleaved(nets: list[dict], evaluators: dict[str, Any], data: Any,
                         order: tuple[str, ...] | None = None,
                         on_net: Any = None) -> dict[str, list[dict[str, float]]]:
    """Each net evaluated by every evaluator in turn (interleaved per net, so machine noise hits
    every side alike), each from the same seed-0 initial weights. Per side, one row per net:
    ``cpu`` (this process's CPU seconds), ``wall``, ``accuracy`` (validation), ``test_accuracy``
    (when the evaluator reports it, else 0) and ``epochs`` run. ``on_net(i, arch, results)`` is
    called after each net."""
    order = tuple(order or evaluators)
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in order}
    for i, arch in enumerate(nets):
        results = {}
        for side in order:
            model = build_model(arch, data.input_shape, data.num_classes, seed=0)
            w0, c0 = time.perf_counter(), time.process_time()
            res = evaluators[side].evaluate(model.architecture, seed=0, model=model)
            results[side] = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0,
                             "accuracy": float(res.accuracy),
                             "test_accuracy": float(res.extra.get("test_accuracy", 0.0)),
                             "epochs": float(res.epochs)}
            rows[side].append(results[side])
        if on_net is not None:
            on_net(i, arch, results)
    return rows


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (np.argsort(np.argsort(x, kind="stable"), kind="stable") for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pattern", choices=("layer", "module"), default="layer")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets, env = visited_networks(args.pattern, args.episodes, args.seed)
    data = env.data
    config = env.components.train_config.replace(epochs=args.epochs)
    make = EVALUATORS.get
    evaluators = {"scratch": make("train")(data, config, report_test=True),
                  "epnas": make("epnas")(data, config, report_test=True),
                  "epnas-noshare": make("epnas")(data, config, share=False, report_test=True)}
    pred = evaluators["epnas"].config
    evaluators["scratch-short"] = make("train")(data, config.replace(epochs=pred.epochs),
                                                report_test=True)
    print(f"{len(nets)} distinct networks ({args.pattern} pattern, {data.name}, "
          f"{data.train_x.shape[0]} training samples, {args.epochs} epochs); scratch: batch "
          f"{config.batch_size} lr {config.lr:g}; epnas: batch {pred.batch_size} lr "
          f"{pred.lr:.3g} cosine, {pred.epochs} epochs, early stop patience "
          f"{pred.early_stop_patience}")
    rows = {s: [] for s in SIDES}
    print(f"{'net':>3} {'params':>8} " + " ".join(f"{s + ' s/acc':>19}" for s in SIDES))

    def show(i: int, arch: dict, results: dict[str, dict]) -> None:
        model = build_model(arch, data.input_shape, data.num_classes, seed=0)
        print(f"{i:>3} {sum(p.numel() for p in model.parameters()):>8} " + " ".join(
            f"{r['cpu']:>10.2f} {r['accuracy']:>8.3f}" for r in results.values()))

    for side, side_rows in evaluate_interleaved(nets, evaluators, data, SIDES, show).items():
        rows[side] = [(r["cpu"], r["wall"], r["accuracy"], r["test_accuracy"], r["epochs"])
                      for r in side_rows]
    print()
    base = statistics.mean(r[0] for r in rows["scratch"])
    for side in SIDES:
        cpu, wall, acc, test, epochs = (list(c) for c in zip(*rows[side], strict=True))
        print(f"{side:>13}: {statistics.mean(cpu):.2f} CPU s/net ({base / statistics.mean(cpu):.2f}x"
              f" scratch), {statistics.mean(wall):.2f} wall s/net, epochs run "
              f"{statistics.mean(epochs):.2f}; val acc mean {statistics.mean(acc):.3f} "
              f"max {max(acc):.3f}; test acc mean {statistics.mean(test):.3f}")
    scratch_acc = [r[2] for r in rows["scratch"]]
    for side in SIDES[1:]:
        print(f"Spearman rank correlation of val accuracy, {side} vs scratch: "
              f"{spearman([r[2] for r in rows[side]], scratch_acc):.3f}")


if __name__ == "__main__":
    main()
