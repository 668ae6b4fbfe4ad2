"""The B-ENAS pipeline (experiments/benas.py; seed 000 Algorithms 1-4) on digits."""

from __future__ import annotations

import json

import pytest
from scipy.stats import spearmanr

import nas_gym
from nas_gym.costs import count_params
from nas_gym.experiments.benas import BenasSearch, select_cell
from nas_gym.experiments.benas_config import BenasConfig
from nas_gym.experiments.cli import main
from nas_gym.training import evaluate, get_preset, train

BUDGET = 60_000  # params of the searched (N = 1, 16 channels, 2 blocks) model: about half the cells
SPACE = {"dataset": "digits", "channels": 16, "min_blocks": 2, "max_blocks": 2}


def distinct_cells(search: BenasSearch, n: int, *, tries: int = 60) -> list[dict]:
    """``n`` different cells from the controller, each scored by Omega on the whole validation
    split (the Spearman test compares architectures, not repeats of one)."""
    cells, seen = [], set()
    for _ in range(tries):
        cell = search.sample_cells(1, val_batches=None)[0]
        key = json.dumps(cell["architecture"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            cells.append(cell)
        if len(cells) == n:
            break
    return cells


@pytest.fixture(scope="module")
def search():
    """The pipeline after its child-training phase: 1500 TrainChild mini-batches of 16, a fresh
    cell from the (initial, near-uniform) controller for each. Measured on seeds 0-3 (1200-1500
    steps): mean shared accuracy 0.48-0.67, Spearman +0.34..+0.84; with a controller that
    concentrates early (lr 1e-2) accuracy rises faster but the ranking turns to noise."""
    search = BenasSearch(BenasConfig(budget={"params": BUDGET}, batch_size=16, env_kwargs=SPACE,
                                     select_samples=10, final_epochs=0, seed=0))
    stats = search.train_child(1500)
    assert stats["child_steps"] == 1500
    return search


@pytest.mark.slow
def test_shared_accuracy_and_rank_correlation_with_scratch(search):
    cells = distinct_cells(search, 10)
    assert len(cells) == 10
    shared = [c["accuracy"] for c in cells]
    assert sum(shared) / len(shared) >= 0.5  # chance is 0.1
    scratch = []
    for c in cells:  # the same cells trained from scratch (2 epochs), validation accuracy
        model = nas_gym.build_model(c["architecture"], search.data.input_shape,
                                    search.data.num_classes, seed=0)
        train(model, search.data, get_preset("digits").replace(epochs=2), seed=0)
        scratch.append(evaluate(model, search.data.val_x, search.data.val_y)[0])
    rho = spearmanr(shared, scratch).correlation
    assert rho > 0, (shared, scratch)


def test_selected_cell_meets_the_params_budget(search):
    search.train_controller(10)  # a few B-ENAS reward steps (penalty on params)
    selected = search.select()
    assert selected["feasible"] and selected["metric"] == "params"
    assert selected["cost"] <= BUDGET
    model = nas_gym.build_model(selected["architecture"], search.data.input_shape,
                                search.data.num_classes)
    assert count_params(model) == selected["cost"] <= BUDGET
    assert selected["index"] == select_cell(selected["candidates"], "accuracy_x_cost")


def test_select_rules():
    cands = [{"accuracy": 0.9, "cost": 50, "feasible": True},
             {"accuracy": 0.8, "cost": 90, "feasible": True},
             {"accuracy": 0.95, "cost": 200, "feasible": False},
             {"accuracy": 0.5, "cost": 10, "feasible": True}]
    assert select_cell(cands, "accuracy_x_cost") == 1  # the paper: 72 > 45 > 5
    assert select_cell(cands, "accuracy_per_cost") == 3  # cheaper wins: 0.05 > 0.018
    assert select_cell(cands, "accuracy") == 0
    assert select_cell([{**c, "feasible": False} for c in cands]) is None


def test_train_seconds_is_a_cost_of_the_controller_reward():
    search = BenasSearch(BenasConfig(budget={"train_seconds": 1e-6}, batch_size=32,
                                     env_kwargs={"max_blocks": 2}, final_epochs=0))
    stats = search.train_controller(2)
    assert stats["controller_steps"] == 2 and stats["feasible_fraction"] == 0.0
    assert stats["mean_train_seconds"] > 1e-5
    assert stats["controller_reward"] == pytest.approx(stats["controller_accuracy"] - 0.1 * 10)


def test_cli_method_benas(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--method", "benas", "--benas-epochs", "1", "--child-steps", "3",
                 "--controller-steps", "2", "--benas-batch-size", "32", "--final-epochs", "1",
                 "--budget", "params=30000", "-E", "max_blocks=2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "B-ENAS" in printed and "test accuracy" in printed
    report = json.loads((out / "benas.json").read_text())
    assert report["history"][0]["child_steps"] == 3
    assert report["supernet"]["params"] > 0
    final = report["final"]
    assert final["architecture"]["n_normal"] == 3 and 0 <= final["test_accuracy"] <= 1
    assert final["costs"]["train_seconds"] > 0 and final["costs"]["params"] > 0


def test_cell_budget_derived_from_the_final_budget() -> None:
    """§4.1: "we have to estimate the U_c of the cell according to the U_c of the complete model":
    the derived cell budget x the N=3 / N=1 cost ratio = the final model's budget."""
    import numpy as np

    from nas_gym.arch.base import architecture_from_dict
    from nas_gym.experiments.benas_config import derive_budget

    cfg = BenasConfig(final_budget={"params": 150_000}, budget_samples=6, env_kwargs=SPACE,
                      epochs=1, child_steps=1, controller_steps=0, select_samples=1,
                      final_epochs=0)
    budget, how = derive_budget(cfg)
    ratio = how["ratio"]["params"]
    assert budget["params"] * ratio == pytest.approx(150_000)
    shape, classes = (1, 8, 8), 10
    archs = [architecture_from_dict(a) for a in how["samples"]]
    assert len(archs) == 6 and len({json.dumps(a.to_dict()) for a in archs}) > 1
    by_hand = [count_params(nas_gym.build_model(a.with_size(3), shape, classes))
               / count_params(nas_gym.build_model(a, shape, classes)) for a in archs]
    assert ratio == pytest.approx(float(np.median(by_hand))) and ratio > 1
    search = BenasSearch(cfg)  # the env's B-ENAS penalty uses the derived budget
    (constraint,) = search.env.unwrapped.reward_fn.constraints
    assert constraint.metric == "params" and constraint.upper == pytest.approx(budget["params"])
    assert cfg.final_architecture(archs[0]).n_normal == 3
    wide = BenasConfig(final_channels=32, env_kwargs=SPACE)
    assert wide.final_architecture(archs[0]).channels == 32
    with pytest.raises(ValueError, match="final_budget"):
        BenasConfig(final_budget={"train_seconds": 5}).validate()
    with pytest.raises(ValueError, match="final_channels"):
        BenasConfig(final_channels=0).validate()
