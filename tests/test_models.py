"""Every registered model: shapes, finite outputs, gradients; registry errors."""

import pytest
import torch

from mnistkit.errors import ConfigError
from mnistkit.models import build_model, get_model_spec, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 28, 28), (5, 784)])
def test_every_model_output_shape_and_finite(name, shape):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(torch.randn(shape))
    expected = (5,) if get_model_spec(name).task == "binary" else (5, 10)
    assert out.shape == expected
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_every_model_gets_gradients_on_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(torch.randn(4, 1, 28, 28))
    out.float().pow(2).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_seed_mlp_is_the_tutorials_network():
    m = build_model("seed-mlp")
    sizes = [(n, tuple(p.shape)) for n, p in m.named_parameters()]
    assert sizes == [("linear1.weight", (512, 784)), ("linear1.bias", (512,)), ("linear2.weight", (128, 512)),
                     ("linear2.bias", (128,)), ("linear3.weight", (10, 128)), ("linear3.bias", (10,))]
    x = torch.randn(3, 784)
    ref = m.linear3(torch.sigmoid(m.linear2(torch.sigmoid(m.linear1(x)))))
    torch.testing.assert_close(m(x), ref)


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
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'; choose one of: logreg, binary-logreg, seed-mlp, mlp, cnn"):
        build_model("resnet")


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"model 'mlp' has no option 'depth'; its options are: hidden, activation"):
        build_model("mlp", depth=3)


@pytest.mark.parametrize("options, message", [
    ({"activation": "swish"}, "activation 'swish' is not one of relu, gelu, sigmoid, tanh"),
    ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ({"hidden": [0]}, "hidden sizes must be positive"),
])
def test_bad_model_option_values(options, message):
    with pytest.raises(ConfigError, match=message):
        build_model("mlp", **options)
