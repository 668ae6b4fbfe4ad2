"""The CUDA paths of child training (``@pytest.mark.gpu``: skipped without a CUDA device): bf16
autocast, data resident on the device, channels_last, and a real child trained there."""

from __future__ import annotations

import pytest
import torch

import nas_gym
from nas_gym.arch.cell import Block, Cell, CellArchitecture
from nas_gym.data import load_data
from nas_gym.training import TrainConfig, autocast_for, device_layout, evaluate, train

pytestmark = pytest.mark.gpu

CELL = CellArchitecture(normal=Cell((Block(0, 1, "sep_conv_3x3", "max_pool_3x3"),
                                                Block(2, 1, "sep_conv_5x5", "identity"))),
                        n_normal=1, channels=8)


def test_cuda_child_trains_on_resident_data_in_bf16_and_channels_last() -> None:
    device = torch.device("cuda")
    data = load_data(name="synthetic", device=device, synthetic_shape=(3, 32, 32))
    assert data.train_x.device.type == "cuda" and data.val_x.device.type == "cuda"
    model = nas_gym.build_model(CELL, data.input_shape, data.num_classes)
    result = train(model, data, TrainConfig(epochs=2, batch_size=128, lr=0.05), seed=0)
    assert result.status == "ok", result.message
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    assert convs and all(m.weight.device.type == "cuda" for m in convs)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    x = device_layout(data.val_x[:64])
    assert x.is_contiguous(memory_format=torch.channels_last)
    with autocast_for(device):
        assert model.eval()(x).dtype == torch.bfloat16
    acc, loss = evaluate(model, data.val_x, data.val_y)
    assert acc > 1.5 / data.num_classes and loss == loss  # learned something, finite


def test_shared_weight_steps_run_on_cuda() -> None:
    import gymnasium as gym

    env = gym.make("CellNAS-v0", evaluator="shared", device="cuda", dataset="synthetic",
                   store=":memory:", max_blocks=2, channels=8)
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(0)
    assert info["status"] == "ok" and 0 <= info["accuracy"] <= 1
