"""The ENAS / B-ENAS super-network and the ``"shared"`` evaluator (SPEC §5)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import nas_gym
from nas_gym.arch.cell import Block, Cell, CellArchitecture
from nas_gym.arch.macro import MacroArchitecture, MacroLayer
from nas_gym.costs import count_params
from nas_gym.data import load_data
from nas_gym.errors import ArchitectureError
from nas_gym.evaluators import EVALUATORS
from nas_gym.evaluators.shared import SharedEvaluator
from nas_gym.evaluators.supernet import build_supernet, check_memory
from nas_gym.evaluators.supernet_base import batch_stats_only
from nas_gym.evaluators.supernet_cell import CellSuperNet
from nas_gym.training import get_preset

SHAPE = (1, 8, 8)


def cell_arch(*blocks: tuple[int, int, str, str], reduction=None) -> CellArchitecture:
    red = None if reduction is None else Cell(tuple(Block(*b) for b in reduction))
    return CellArchitecture(normal=Cell(tuple(Block(*b) for b in blocks)), reduction=red)


A = cell_arch((0, 1, "sep_conv_3x3", "identity"), (2, 1, "avg_pool_3x3", "sep_conv_5x5"),
              (1, 1, "max_pool_3x3", "identity"))
B = cell_arch((0, 1, "sep_conv_3x3", "max_pool_3x3"), (0, 2, "sep_conv_3x3", "identity"))
MACRO = MacroArchitecture(layers=(MacroLayer(8, 3, 1, ()), MacroLayer(16, 5, 2, (0,)),
                                  MacroLayer(4, 1, 1, (0, 1)), MacroLayer(32, 7, 2, (1,))))


@pytest.fixture(scope="module")
def data():
    return load_data()


def evaluator(data, **kw) -> SharedEvaluator:
    return SharedEvaluator(data, get_preset("digits"), max_blocks=3, **kw)


def test_registered():
    assert "shared" in EVALUATORS


def test_children_sharing_an_op_read_the_same_tensor(data):
    ev = evaluator(data)
    net = ev.build(A)
    a, b = ev.child(A), ev.child(B)
    pa, pb = {id(p) for p in a.parameters()}, {id(p) for p in b.parameters()}
    # block 0, slot 0 is sep_conv_3x3 in both: at every cell position the very same Parameters
    for cell in net.cells:
        stride = 2 if cell.reduction else 1
        for p in cell.ops[f"b0_s0_sep_conv_3x3_x{stride}"].parameters():
            assert id(p) in pa and id(p) in pb
            assert any(p is q for q in a.parameters()) and any(p is q for q in b.parameters())
            assert p.data_ptr() in {q.data_ptr() for q in b.parameters()}
    # block 1, slot 0 differs (avg pool vs sep conv): B's sep conv there is not on A's path
    only_b = net.cells[0].ops["b1_s0_sep_conv_3x3_x1"]
    assert all(id(p) in pb and id(p) not in pa for p in only_b.parameters())
    # the stem and classifier are on every path
    assert all(id(p) in pa & pb for p in [*net.stem.parameters(), *net.classifier.parameters()])


def test_one_weight_per_op_whatever_the_stride():
    net = build_supernet(A, SHAPE, 10, batch_size=16, max_blocks=3)
    red = net.cells[1]
    assert red.reduction
    s1, s2 = red.ops["b1_s0_sep_conv_3x3_x1"], red.ops["b1_s0_sep_conv_3x3_x2"]
    assert s1[1].stride == (1, 1) and s2[1].stride == (2, 2)
    assert all(p is q for p, q in zip(s1.parameters(), s2.parameters(), strict=True))
    # identity at stride 2 is a factorized reduce with weights of its own
    assert list(red.ops["b1_s0_identity_x2"].parameters())
    assert not list(red.ops["b1_s0_identity_x1"].parameters())


def test_train_child_changes_only_its_path(data):
    ev = evaluator(data)
    ev.train_child(A, 2)  # A's weights now carry momentum buffers and moved
    before = {k: v.clone() for k, v in ev.supernet.state_dict().items()}
    path = {id(p) for p in ev.child(B).parameters()}
    run = ev.train_child(B, 1)
    assert run.status == "ok" and run.steps == 1
    changed = 0
    for name, p in ev.supernet.named_parameters():
        if id(p) in path:
            changed += not torch.equal(p, before[name])
        else:  # momentum and weight decay must not touch A's (or anyone's) weights
            assert torch.equal(p, before[name]), name
    assert changed > 0
    for name, buf in ev.supernet.named_buffers():  # no BN running statistics exist to drift
        assert torch.equal(buf, before[name]), name
    assert not list(ev.supernet.buffers())
    assert ev.state["steps"] == 3


@pytest.mark.parametrize("per_input", [False, True])
def test_child_equals_the_built_network(per_input):
    """A child on Omega computes what build_model's network computes with the same weights."""
    arch = cell_arch((0, 1, "sep_conv_3x3", "identity"), (2, 0, "avg_pool_3x3", "sep_conv_5x5"),
                     reduction=((1, 0, "identity", "max_pool_3x3"), (2, 2, "sep_conv_3x3",
                                                                     "identity")))
    net = build_supernet(arch, SHAPE, 10, batch_size=16, max_blocks=3, seed=1,
                         per_input=per_input)
    model = batch_stats_only(nas_gym.build_model(arch, SHAPE, 10))
    with torch.no_grad():
        model.stem.load_state_dict(net.stem.state_dict())
        model.classifier.load_state_dict(net.classifier.state_dict())
        for cm, cp in zip(model.cells, net.cells, strict=True):
            cm.pre0.load_state_dict(cp.pre0.state_dict())
            cm.pre1.load_state_dict(cp.pre1.state_dict())
            for k, op in enumerate(cp._used(cm.cell)):
                cm.ops[k].load_state_dict(op.state_dict())
            loose = cm.cell.loose_ends()
            cm.project[1].weight.copy_(torch.cat([cp.project[j] for j in loose], dim=1))
            cm.project[2].load_state_dict(cp.project_bn.state_dict())
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    child = net.child(arch)
    torch.testing.assert_close(child(x), model(x), atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in child.parameters()) == count_params(model)


def test_macro_child_equals_the_built_network():
    net = build_supernet(MACRO, SHAPE, 10, batch_size=16, seed=0)
    model = batch_stats_only(nas_gym.build_model(MACRO, SHAPE, 10))
    layers, head = net._keys(MACRO)
    with torch.no_grad():
        for lm, (_, bn, convs) in zip(model.layers, layers, strict=True):
            lm.conv.weight.copy_(torch.cat([net.convs[k] for k in convs], dim=1))
            lm.bn.load_state_dict(net.bns[bn].state_dict())
        model.head[-1].weight.copy_(torch.cat([net.flat[k] for k in head], dim=1))
        model.head[-1].bias.copy_(net.flat_bias)
    x = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    child = net.child(MACRO)
    torch.testing.assert_close(child(x), model(x), atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in child.parameters()) == count_params(model)


def test_macro_train_step_isolation(data):
    ev = SharedEvaluator(data, get_preset("digits"), max_layers=4)
    other = MacroArchitecture(layers=(MacroLayer(4, 1, 1, ()), MacroLayer(8, 3, 1, (0,))),
                              head="gap")
    ev.train_child(MACRO, 1)
    before = {k: v.clone() for k, v in ev.supernet.state_dict().items()}
    path = {id(p) for p in ev.child(other).parameters()}
    ev.train_child(other, 1)
    for name, p in ev.supernet.named_parameters():
        assert (id(p) in path) or torch.equal(p, before[name]), name


def test_outside_the_space_is_refused(data):
    ev = evaluator(data)
    ev.build(A)
    with pytest.raises(ArchitectureError, match="max_blocks"):
        ev.child(cell_arch(*[(0, 1, "identity", "identity")] * 4))
    with pytest.raises(ArchitectureError, match="ops"):
        ev.child(cell_arch((0, 1, "conv_3x3", "identity")))
    with pytest.raises(ArchitectureError, match="channels"):
        ev.child(A.with_size(1, channels=16))


def test_memory_is_reported_and_warned():
    with torch.device("meta"):
        meta = CellSuperNet(SHAPE, 10, max_blocks=3)
    net = build_supernet(A, SHAPE, 10, batch_size=64, max_blocks=3)
    assert net.num_params == meta.num_params == sum(p.numel() for p in net.parameters())
    assert net.memory_bytes > 4 * net.num_params
    with pytest.warns(ResourceWarning, match="MiB"):
        assert not check_memory(10**12, torch.device("cpu"), available=10**6)
    assert check_memory(10, torch.device("cpu"), available=10**6)


def test_env_evaluations_are_never_served_from_the_store():
    env = gym.make("CellNAS-v0", evaluator="shared", store=":memory:", measure_latency=False,
                   max_blocks=3, evaluator_kwargs={"max_blocks": 3})
    base = env.unwrapped
    first = base.evaluate_architecture(A)
    second = base.evaluate_architecture(A)
    assert not first["cache_hit"] and not second["cache_hit"]
    assert first["store_key"] != second["store_key"]
    assert len(base.store) == 2  # each evaluation is still recorded
    ev = base.components.evaluator
    assert ev.state["evaluations"] == 2 and ev.supernet_params > 0
    assert 0.0 <= second["accuracy"] <= 1.0 and second["costs"]["train_seconds"] > 0
    # two envs: two super-networks, two identities
    other = gym.make("CellNAS-v0", evaluator="shared", store=":memory:", measure_latency=False,
                     max_blocks=3, evaluator_kwargs={"max_blocks": 3})
    assert other.unwrapped.components.evaluator.fingerprint()["supernet"]["id"] != \
        ev.fingerprint()["supernet"]["id"]


def test_train_seconds_budget_penalises_on_both_evaluators():
    """B-ENAS Table 5: the measured training time is a cost the penalty can use."""
    for evaluator_name in ("shared", "train"):
        env = gym.make("CellNAS-v0", evaluator=evaluator_name, store=":memory:",
                       measure_latency=False, max_blocks=3, epochs=1, train_size=128,
                       budget={"train_seconds": 1e-6},
                       evaluator_kwargs={"max_blocks": 3} if evaluator_name == "shared" else {})
        info = env.unwrapped.evaluate_architecture(A)
        assert info["costs"]["train_seconds"] > 1e-5
        assert info["penalty"] == pytest.approx(0.1 * 10.0)  # capped: c >= 10 U
        assert info["reward_parts"]["penalty/train_seconds"] == pytest.approx(10.0)
