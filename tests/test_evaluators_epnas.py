"""EPNAS §4 "Training details": "With performance prediction (p.p.), we increase LR to 0.5 and BZ
to 1024, and do early stop at 10 epochs" of the 20-epoch cosine schedule with warm restarts
(T0 = 10, Tmul = 2)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.data import DataConfig, load_data
from nas_gym.evaluators.epnas import EpnasEvaluator, prediction_config
from nas_gym.training import get_preset, make_scheduler


def test_epnas_config_on_cifar10_predicts_with_lr_05_batch_1024_for_10_epochs() -> None:
    full = get_preset("epnas")
    assert (full.epochs, full.batch_size, full.lr, full.lr_min) == (20, 128, 0.05, 0.001)
    assert (full.schedule, full.restart_epochs, full.restart_mult) == ("cosine_restarts", 10, 2)
    cfg = prediction_config(full, 45_000)  # CIFAR-10's 45k training images
    assert (cfg.batch_size, cfg.epochs, cfg.early_stop_patience) == (1024, 10, None)
    assert cfg.lr == pytest.approx(0.5)
    assert (cfg.schedule, cfg.restart_epochs, cfg.restart_mult) == ("cosine_restarts", 10, 2)
    preset = get_preset("epnas_prediction")
    assert cfg.replace(lr=preset.lr) == preset  # the preset is exactly this schedule
    # the 10 epochs are one full SGDR period: 0.5 at the start, half way at epoch 5, ~l_min at 10
    steps = 44  # 45_000 // 1024
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, steps)
    lrs = []
    for _ in range(cfg.epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5)
    assert lrs[5 * steps] == pytest.approx((0.5 + 0.001) / 2)
    assert lrs[-1] < 0.002


def test_prediction_really_trains_10_epochs_at_batch_1024_and_lr_05() -> None:
    """A real run: 2048 synthetic training images, so batch 1024 keeps 2 steps per epoch."""
    data = load_data(DataConfig(name="synthetic", synthetic_samples=3414), device="cpu")
    assert data.train_x.shape[0] >= 2048
    ev = EpnasEvaluator(data, get_preset("epnas"), share=False, min_steps_per_epoch=2)
    arch = MacroArchitecture(layers=(MacroLayer(4, 3, 1, ()),), head="gap")
    result = ev.evaluate(arch, seed=0)
    assert result.status == "ok" and result.epochs == 10
    assert result.extra["batch_size"] == 1024 and result.extra["lr"] == pytest.approx(0.5)


def test_epnas_prediction_preset_with_epnas_evaluator_is_not_scaled_twice() -> None:
    env = gym.make("ProgressiveNAS-v0", training="epnas_prediction", evaluator="epnas",
                   store=":memory:", measure_latency=False).unwrapped
    assert env.components.evaluator.config == get_preset("epnas_prediction")
    env.close()
    env = gym.make("ProgressiveNAS-v0", training="epnas", evaluator="epnas", store=":memory:",
                   measure_latency=False, evaluator_kwargs={"min_steps_per_epoch": 1}).unwrapped
    cfg = env.components.evaluator.config  # derived from the full schedule: digits caps the batch
    assert cfg.epochs == 10 and cfg.batch_size == min(1024, env.data.train_x.shape[0])
    env.close()
