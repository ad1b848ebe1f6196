"""One ``train_step`` against a step written out by hand in plain PyTorch (as micrograd checks its
engine against PyTorch): the same loss, the same gradients, the same parameters after the update."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from mnistkit.models import build_model
from mnistkit.training.loop import train_step
from mnistkit.training.session import training_loss

#: eps well above float rounding of tiny gradients, where Adam's first step (about lr * sign(g)) would magnify it
LR, WEIGHT_DECAY, EPS = 0.05, 0.01, 1e-3


def reference_loss(logits: torch.Tensor, y: torch.Tensor, task: str, smoothing: float) -> torch.Tensor:
    """Cross-entropy (with label smoothing) and binary cross-entropy, from their formulas."""
    if task == "binary":
        t = y.float() * (1 - smoothing) + 0.5 * smoothing
        # log(1 + e^x) - t x, written to stay finite for large |x|
        return (logits.clamp(min=0) - logits * t + torch.log1p(torch.exp(-logits.abs()))).mean()
    logp = logits - logits.logsumexp(dim=1, keepdim=True)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    uniform = -logp.mean(dim=1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def reference_update(params: list[torch.Tensor], optimizer: str) -> None:
    """The first step of SGD with weight decay, or of Adam (bias-corrected moments are g and g^2)."""
    with torch.no_grad():
        for p in params:
            g = p.grad
            if optimizer == "sgd":
                p -= LR * (g + WEIGHT_DECAY * p)
            else:
                p -= LR * g / (g.abs() + EPS)


def make_optimizer(params, optimizer: str) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=LR, weight_decay=WEIGHT_DECAY)
    return torch.optim.Adam(params, lr=LR, eps=EPS)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(
    "model_name, options, task, smoothing",
    [
        ("mlp", {"hidden": [32, 16], "dropout": 0.3}, "multiclass", 0.1),
        ("cnn", {"widths": [4, 8]}, "multiclass", 0.0),
        ("binary-logreg", {}, "binary", 0.2),
    ],
)
def test_train_step_matches_a_hand_written_step(model_name, options, task, smoothing, optimizer):
    torch.manual_seed(0)
    model = build_model(model_name, **options).train()
    reference = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # stale gradients from an earlier step: train_step must clear them
    x = torch.randn(16, 1, 28, 28)
    y = torch.randint(0, 2 if task == "binary" else 10, (16,))

    torch.manual_seed(1)  # the same dropout masks in both forward passes
    loss, logits = train_step(
        model,
        make_optimizer(model.parameters(), optimizer),
        x,
        y,
        training_loss(task, smoothing),
        contextlib.nullcontext,
    )
    torch.manual_seed(1)
    ref_logits = reference(x)
    ref_loss = reference_loss(ref_logits, y, task, smoothing)
    reference.zero_grad()
    ref_loss.backward()

    assert torch.allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-6, abs=1e-7)
    for (name, p), r in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None and torch.allclose(p.grad, r.grad, rtol=1e-4, atol=1e-6), name
    reference_update(list(reference.parameters()), optimizer)
    for (name, p), r in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, r, rtol=1e-5, atol=1e-6 if optimizer == "sgd" else 1e-4), name  # steps ~lr
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before)), "a parameter did not move"
