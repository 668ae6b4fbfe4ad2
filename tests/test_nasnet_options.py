"""NASNet (lecture 003) options of the cell space: ScheduledDropPath for the final model ("each
path in the cell is dropped out with a probability that is linearly increased over the course of
training")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nas_gym
from nas_gym.arch.cell import Block, Cell, CellArchitecture
from nas_gym.data import DataConfig, load_data
from nas_gym.models.cell import CellModule, drop_path
from nas_gym.training import TrainConfig, train

CELL = Cell((Block(0, 1, "sep_conv_3x3", "identity"), Block(2, 1, "avg_pool_3x3", "max_pool_3x3")))


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(20_000, 2, 3, 3)
    out = drop_path(x, 0.3, gen)
    dropped = (out.flatten(1) == 0).all(1).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.02)
    kept = out[(out.flatten(1) != 0).any(1)]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.7))  # whole samples, rescaled
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)


def test_scheduled_drop_path_rises_linearly_over_training() -> None:
    data = load_data(DataConfig(name="synthetic", synthetic_samples=400), device="cpu")
    arch = CellArchitecture(normal=CELL, n_normal=1, channels=4)
    model = nas_gym.build_model(arch, data.input_shape, data.num_classes, seed=0)
    cells = [m for m in model.modules() if isinstance(m, CellModule)]
    seen: list[float] = []
    cells[0].register_forward_pre_hook(lambda m, _: seen.append(m.drop_path_prob))
    config = TrainConfig(epochs=3, batch_size=60, drop_path=0.4)
    run = train(model, data, config, seed=0)
    assert run.status == "ok" and len(seen) == run.steps == 12
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(0.4)
    assert np.allclose(np.diff(seen), 0.4 / (run.steps - 1))  # linear
    assert all(m.drop_path_prob == 0.0 and m.drop_path_gen is None for m in cells)
    assert cells[0].droppable == [True, False, True, True]  # identity paths are never dropped
    # off by default, and then absent from store keys (keys of earlier runs are unchanged)
    assert "drop_path" not in TrainConfig().fingerprint()
    assert config.fingerprint()["drop_path"] == 0.4
    with pytest.raises(ValueError, match="drop_path"):
        TrainConfig(drop_path=1.0).validate()


class BlockCounter:
    """A cheap evaluator: no training."""

    needs_model = False

    def fingerprint(self) -> dict:
        return {"evaluator": "block-counter-v1"}

    def evaluate(self, architecture, *, seed, model=None) -> dict:
        return {"accuracy": 0.1 * len(architecture.normal.blocks)}


def test_nasnet_combine_is_searched_per_block_add_or_concat() -> None:
    """NASNet Step 5: "Select a method to combine the outputs of Step 3 and 4 to create a new
    hidden state" - one more token per block in NASNet's space (0 = add, 1 = concat)."""
    import gymnasium as gym

    kw = {"evaluator": BlockCounter(), "store": ":memory:", "measure_latency": False,
          "min_blocks": 2, "max_blocks": 2}
    env = gym.make("CellNAS-v0", ops="nasnet", **kw).unwrapped
    assert env.combine == "search" and env.max_tokens == 1 + 5 * 2
    obs, info = env.reset(seed=0)
    types, tokens = [], [0, 1, 1, 9, 0, 0, 1, 2, 2, 1, 1]  # 2 blocks; block 0 adds, block 1 concats
    for a in tokens:
        types.append(info["token_type"])
        if info["token_type"] == "combine":
            assert np.flatnonzero(info["action_mask"]).tolist() == [0, 1]
        obs, reward, term, _, info = env.step(a)
    assert types == ["num_blocks"] + ["input", "input", "op", "op", "combine"] * 2 and term
    arch = nas_gym.architecture_from_dict(info["architecture"])
    assert [b.combine for b in arch.normal.blocks] == ["add", "concat"]
    assert info["architecture"]["normal"]["blocks"][0] == [1, 1, "conv_3x3", "identity"]
    assert nas_gym.architecture_from_dict(arch.to_dict()) == arch
    # the concat block's state is the 1x1 projection of [op1(x), op2(y)] on channels
    model = nas_gym.build_model(arch, (1, 8, 8), 10, seed=0).eval()
    cell = next(m for m in model.modules() if isinstance(m, CellModule))
    s = torch.randn(2, arch.channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p1 = cell.pre1(s)  # block 0: [1, 1] -> conv_3x3 + identity; block 1: [1, 2], concat
        h0 = cell.ops[0](p1) + cell.ops[1](p1)
        h1 = cell.concat["1"](torch.cat([cell.ops[2](p1), cell.ops[3](h0)], 1))
        assert torch.allclose(cell(s, s), cell.project(h1), atol=1e-6)
    assert gym.make("CellNAS-v0", **kw).unwrapped.max_tokens == 1 + 4 * 2  # ENAS: add only
    with pytest.raises(ValueError, match="combine"):
        gym.make("CellNAS-v0", ops="nasnet", combine="concat", evaluator="shared",
                 store=":memory:", measure_latency=False)
