"""Child training: repeatable on CPU, faults become statuses, never exceptions."""

from __future__ import annotations

import pytest
import torch

from nas_gym import build_model
from nas_gym.arch.cell import Block, Cell, CellArchitecture
from nas_gym.data import load_data
from nas_gym.errors import ConfigError
from nas_gym.training import PRESETS, TrainConfig, evaluate, get_preset, train

ARCH = CellArchitecture(Cell((Block(0, 1, "sep_conv_3x3", "identity"),
                              Block(2, 0, "max_pool_3x3", "avg_pool_3x3"))), channels=8)


@pytest.fixture(scope="module")
def digits():
    return load_data(name="digits")


def _model(data, seed=0):
    return build_model(ARCH, data.input_shape, data.num_classes, seed=seed)


def test_training_is_bit_for_bit_repeatable_on_cpu(digits) -> None:
    cfg = TrainConfig(epochs=1)
    states = []
    for _ in range(2):
        m = _model(digits)
        result = train(m, digits, cfg, seed=3)
        assert result.status == "ok" and result.steps == digits.train_x.shape[0] // 64
        states.append(m.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    other = _model(digits)
    train(other, digits, cfg, seed=4)
    assert any(not torch.equal(states[0][k], other.state_dict()[k]) for k in states[0])


def test_training_learns(digits) -> None:
    m = _model(digits)
    before, _ = evaluate(m, digits.val_x, digits.val_y)
    train(m, digits, TrainConfig(epochs=3), seed=0)
    after, loss = evaluate(m, digits.val_x, digits.val_y)
    assert after > max(0.5, before + 0.2) and loss < 2.3


def test_huge_learning_rate_diverges(digits) -> None:
    m = _model(digits)
    result = train(m, digits, TrainConfig(epochs=2, lr=1e12, grad_clip=None), seed=0)
    assert result.status == "diverged"
    assert "loss" in result.message


def test_injected_oom_is_caught(digits) -> None:
    m = _model(digits)
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    m.register_forward_hook(hook)
    result = train(m, digits, TrainConfig(epochs=1), seed=0)
    assert result.status == "oom" and result.steps == 2
    assert "out of memory" in result.message


def test_time_limit_gives_timeout(digits) -> None:
    result = train(_model(digits), digits, TrainConfig(epochs=50), seed=0, time_limit=0.05)
    assert result.status == "timeout" and result.epochs < 50


def test_other_errors_are_not_swallowed(digits) -> None:
    m = _model(digits)
    m.register_forward_hook(lambda *_: (_ for _ in ()).throw(KeyError("bug")))
    with pytest.raises(KeyError):
        train(m, digits, TrainConfig(epochs=1), seed=0)


def test_presets_are_valid_and_bad_config_is_named() -> None:
    for name, cfg in PRESETS.items():
        assert cfg.validate() is cfg, name
    assert get_preset("eas").batch_size == 64 and get_preset("eas").lr == 0.02
    with pytest.raises(ConfigError, match="training"):
        get_preset("fast")
    with pytest.raises(ConfigError, match="epochs=0"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="rmsprop").validate()


def test_narrow_separable_cells_train_without_heap_corruption(digits) -> None:
    """Regression: with channels_last on CPU, oneDNN's backward of these 4-channel depthwise convs
    corrupted the heap (torch 2.14.1); training keeps the contiguous layout on CPU."""
    arch = {"kind": "cell", "channels": 4, "normal": {"blocks": [
        [1, 1, "sep_conv_3x3", "sep_conv_3x3"], [0, 0, "identity", "identity"],
        [3, 2, "max_pool_3x3", "sep_conv_5x5"]]}}
    model = build_model(arch, digits.input_shape, digits.num_classes)
    assert train(model, digits, TrainConfig(epochs=1), seed=0).status == "ok"
