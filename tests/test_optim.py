"""Optimiser parameter groups: weight decay on weight matrices only, and states that still resume."""

import pytest
import torch

from mnistkit.config import TrainConfig
from mnistkit.models import build_model
from mnistkit.runs import RunDir
from mnistkit.training.optim import make_optimizer, param_groups
from mnistkit.training.state import TrainState, load_state, save_state

CPU = torch.device("cpu")


def _names(model, group) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "adagrad"])
def test_weight_decay_only_on_weight_matrices_and_kernels(optimizer):
    model = build_model("cnn", widths=(4, 8))
    opt = make_optimizer(model.parameters(), TrainConfig(optimizer=optimizer, weight_decay=0.01), CPU)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert _names(model, decay) == {"features.0.0.weight", "features.1.0.weight", "head.2.weight"}
    assert _names(model, no_decay) == {  # BatchNorm scales and shifts, the head's bias
        "features.0.1.weight",
        "features.0.1.bias",
        "features.1.1.weight",
        "features.1.1.bias",
        "head.2.bias",
    }
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_no_weight_decay_is_one_group_and_empty_groups_are_dropped():
    model = build_model("mlp", hidden=[8])
    assert len(param_groups(model.parameters(), 0.0)) == 1  # states saved before the split still resume
    weights_only = [p for p in model.parameters() if p.ndim == 2]
    groups = param_groups(weights_only, 0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1


def test_a_two_group_state_saves_and_resumes(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(model="mlp", optimizer="adamw", weight_decay=0.05)
    model = build_model("mlp", hidden=[16])
    opt = make_optimizer(model.parameters(), cfg, CPU)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 784)).square().mean().backward()
        opt.step()
    save_state(RunDir(tmp_path), model, opt, None, TrainState(epoch=1, train_seconds=0.1))

    fresh = build_model("mlp", hidden=[16])
    fresh_opt = make_optimizer(fresh.parameters(), cfg, CPU)
    assert load_state(RunDir(tmp_path), fresh, fresh_opt, None).epoch == 1
    assert [g["weight_decay"] for g in fresh_opt.param_groups] == [0.05, 0.0]
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg_sq"], fresh_opt.state[q]["exp_avg_sq"])
