"""Multi-layer perceptrons, including the tutorial's network under an honest name."""

from __future__ import annotations

from torch import nn

from mnistkit.models import register_model
from mnistkit.models.layers import MaskDropout

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """``in -> [Linear, act, dropout] * len(hidden) -> Linear(num_classes)``; flattens its input."""

    def __init__(self, in_features=784, hidden=(512, 128), num_classes=10, activation="relu", dropout=0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive, got {hidden}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(MaskDropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))

    def split_input_layer(self):
        """``(first Linear, the rest)``: see :func:`mnistkit.inference.predict_logits`."""
        return self.net[0], self.net[1:]


class SeedMLP(nn.Module):
    """The tutorial's ``LogisticRegression`` exactly: 784-512-128-10 with sigmoid hidden layers.

    Layer names match the tutorial (``linear1..3``) so its state dicts load as is.
    """

    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(784, 512)
        self.linear2 = nn.Linear(512, 128)
        self.linear3 = nn.Linear(128, 10)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self._head(self.linear1(x.flatten(1)))

    def _head(self, h):
        return self.linear3(self.sigmoid(self.linear2(self.sigmoid(h))))

    def split_input_layer(self):
        """``(linear1, the rest)``: see :func:`mnistkit.inference.predict_logits`."""
        return self.linear1, self._head


@register_model("seed-mlp", "multiclass", "the tutorial's network: 784-512-128-10, sigmoid hidden layers")
def seed_mlp() -> nn.Module:
    return SeedMLP()


@register_model("mlp", "multiclass", "MLP with configurable hidden sizes, activation and dropout")
def mlp(
    hidden: tuple = (512, 128),
    activation: str = "relu",
    dropout: float = 0.0,
    in_features: int = 784,
    num_classes: int = 10,
) -> nn.Module:
    return MLP(in_features, tuple(hidden), num_classes, activation, dropout)
