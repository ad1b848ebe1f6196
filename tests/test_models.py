"""Every registered model: shapes, finite outputs, gradients; registry errors."""

import pytest
import torch

from mnistkit.errors import ConfigError
from mnistkit.models import build_model, get_model_spec, list_models

DIGIT_MODELS = [m for m in list_models() if get_model_spec(m).task != "sequence"]
LINE_MODELS = [m for m in list_models() if get_model_spec(m).task == "sequence"]


def _input(name: str, n: int) -> torch.Tensor:
    """A batch each model reads: 28x28 digits, or 32 px tall line images for line models."""
    return torch.randn(n, 1, 32, 64) if name in LINE_MODELS else torch.randn(n, 1, 28, 28)


@pytest.mark.parametrize("name", DIGIT_MODELS)
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 28, 28), (5, 784)])
def test_every_model_output_shape_and_finite(name, shape):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(torch.randn(shape))
    expected = (5,) if get_model_spec(name).task == "binary" else (5, 10)
    assert out.shape == expected
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", LINE_MODELS)
@pytest.mark.parametrize("shape", [(5, 1, 32, 64), (5, 32, 64), (5, 32, 100)])
def test_every_line_model_gives_a_column_of_logits_per_four_pixels(name, shape):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(torch.randn(shape))
    assert out.shape == (5, shape[-1] // 4, 11)  # ten digits and CTC's blank, per column
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_every_model_gets_gradients_on_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(_input(name, 4))
    out.float().pow(2).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_seed_mlp_is_the_tutorials_network():
    m = build_model("seed-mlp")
    sizes = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert sizes == [
        ("linear1.weight", (512, 784)),
        ("linear1.bias", (512,)),
        ("linear2.weight", (128, 512)),
        ("linear2.bias", (128,)),
        ("linear3.weight", (10, 128)),
        ("linear3.bias", (10,)),
    ]
    x = torch.randn(3, 784)
    ref = m.linear3(torch.sigmoid(m.linear2(torch.sigmoid(m.linear1(x)))))
    torch.testing.assert_close(m(x), ref)


def test_seed_mlp_takes_more_layers_and_another_activation():
    m = build_model("seed-mlp", hidden=[256, 128, 64], activation="relu")
    names = [n for n, _ in m.named_parameters()]
    assert names == [f"linear{i}.{k}" for i in range(1, 5) for k in ("weight", "bias")]
    x = torch.randn(3, 784)
    ref = m.linear4(torch.relu(m.linear3(torch.relu(m.linear2(torch.relu(m.linear1(x)))))))
    torch.testing.assert_close(m(x), ref)
    first, rest = m.split_input_layer()
    torch.testing.assert_close(rest(first(x)), ref)


def test_seed_mlp_defaults_are_the_tutorials_and_same_init():
    """Default options give the same initial weights as before the options existed (same seed)."""
    torch.manual_seed(0)
    a = build_model("seed-mlp")
    torch.manual_seed(0)
    ref = [torch.nn.Linear(784, 512), torch.nn.Linear(512, 128), torch.nn.Linear(128, 10)]
    for i, lin in enumerate(ref, start=1):
        torch.testing.assert_close(getattr(a, f"linear{i}").weight, lin.weight)
    assert a.mnistkit_options == {"hidden": (512, 128), "activation": "sigmoid"}


@pytest.mark.parametrize(
    "options, pattern",
    [
        ({"dropout": 0.1}, r"model 'seed-mlp' has no option 'dropout'; its options are: hidden, activation"),
        ({"activation": "swish"}, r"activation 'swish' is not one of relu, gelu, sigmoid, tanh"),
        ({"hidden": [0]}, r"hidden sizes must be positive"),
    ],
)
def test_seed_mlp_bad_options_name_the_problem(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model("seed-mlp", **options)


def test_logreg_is_one_affine_map():
    m = build_model("logreg", in_features=4, num_classes=3)
    x = torch.randn(2, 4)
    torch.testing.assert_close(m(x), x @ m.linear.weight.T + m.linear.bias)


def test_mlp_options_shape_the_network():
    m = build_model("mlp", hidden=[64, 32, 16], activation="tanh", dropout=0.1, num_classes=4)
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [64, 32, 16, 4]
    assert any(isinstance(mod, torch.nn.Tanh) for mod in m.modules())
    assert m.mnistkit_options["hidden"] == [64, 32, 16]


def test_build_model_records_name_options_and_task():
    m = build_model("binary-logreg")
    assert (m.mnistkit_name, m.mnistkit_task, m.mnistkit_options) == ("binary-logreg", "binary", {"in_features": 784})


def test_unknown_model_names_the_choices():
    with pytest.raises(
        ConfigError, match=r"unknown model 'resnet'; choose one of: logreg, binary-logreg, seed-mlp, mlp, cnn"
    ):
        build_model("resnet")


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"model 'mlp' has no option 'depth'; its options are: hidden, activation"):
        build_model("mlp", depth=3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"activation": "swish"}, "activation 'swish' is not one of relu, gelu, sigmoid, tanh"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"hidden": [0]}, "hidden sizes must be positive"),
    ],
)
def test_bad_model_option_values(options, message):
    with pytest.raises(ConfigError, match=message):
        build_model("mlp", **options)


def test_cnn_pools_before_relu_with_identical_outputs_and_gradients():
    """The CNN stage pools before its ReLU: the same function and gradients as ReLU-then-pool."""
    from torch import nn

    torch.manual_seed(0)
    model = build_model("cnn").double().train()
    stage = model.features[0]
    reference = nn.Sequential(stage[0], stage[1], nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = stage(ours_in), reference(ref_in)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g = torch.randn_like(ours)
    ours.backward(g)
    ours_grads = [ours_in.grad] + [p.grad.clone() for p in stage.parameters()]
    stage.zero_grad()
    ref.backward(g)
    ref_grads = [ref_in.grad] + [p.grad for p in stage.parameters()]
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_mask_dropout_is_inverted_dropout():
    from mnistkit.models.layers import MaskDropout

    drop = MaskDropout(0.25)
    x = torch.ones(200, 1000)
    torch.manual_seed(0)
    y = drop.train()(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert abs(y.mean().item() - 1.0) < 0.02  # expectation preserved
    assert drop.eval()(x) is x
    assert MaskDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout"):
        MaskDropout(1.0)


def test_cli_activation_choices_are_the_models():
    from mnistkit.config import ACTIVATION_NAMES
    from mnistkit.models.mlp import ACTIVATIONS

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
