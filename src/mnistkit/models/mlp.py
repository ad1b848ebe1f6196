"""Multi-layer perceptrons, including the tutorial's network under an honest name."""

from __future__ import annotations

import torch
from torch import nn

from mnistkit.models.layers import MaskDropout
from mnistkit.models.registry import check_layers, register_model

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """``in -> [Linear, act, dropout] * len(hidden) -> Linear(num_classes)``; flattens its input.

    The dropout paper's regularisers (Srivastava et al., JMLR 2014, 98.94-99.05 % on MNIST):
    ``input_dropout`` drops pixels before the first layer; ``max_norm`` > 0 caps the L2 norm of
    every unit's incoming weights at that value, applied to the hidden layers' weights before
    each training forward pass and when the model is put in eval mode (so the weights it is
    evaluated and saved with satisfy the cap). The input dropout sits outside ``net``, so the
    layer indices, and older checkpoints, are unchanged.
    """

    def __init__(
        self,
        in_features=784,
        hidden=(512, 128),
        num_classes=10,
        activation="relu",
        dropout=0.0,
        input_dropout=0.0,
        max_norm=0.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        if not (isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool) and 0 <= max_norm < 1e6):
            raise ValueError(f"max_norm must be a number >= 0 (0 = off), got {max_norm!r}")
        self.max_norm = float(max_norm)
        self.input_dropout = MaskDropout(input_dropout) if input_dropout > 0 else None
        hidden = check_layers("hidden", hidden)
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
        x = x.flatten(1)
        if self.training:
            self.apply_max_norm()
            if self.input_dropout is not None:
                x = self.input_dropout(x)
        return self.net(x)

    def train(self, mode: bool = True):
        if not mode:
            self.apply_max_norm()  # the last optimiser step's weights, capped before evaluation
        return super().train(mode)

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Project each hidden unit's incoming weight vector onto the ball of radius ``max_norm``."""
        if self.max_norm > 0:
            for layer in list(self.net)[:-1]:
                if isinstance(layer, nn.Linear):
                    layer.weight.renorm_(2, 0, self.max_norm)

    def split_input_layer(self):
        """``(first Linear, the rest)``: see :func:`mnistkit.inference.predict_logits`."""
        return self.net[0], self.net[1:]


class SeedMLP(nn.Module):
    """The tutorial's ``LogisticRegression``: 784-512-128-10 with sigmoid hidden layers by default.

    ``hidden`` and ``activation`` reshape it (the tutorial's closing exercise: "add more hidden
    layers"); the layers stay named ``linear1..linear{len(hidden)+1}`` as in the tutorial, so its
    state dicts, and every checkpoint saved before these options existed, load as they are.
    No dropout: this is the tutorial's plain network, ``mlp`` is the general one.
    """

    def __init__(self, hidden=(512, 128), activation="sigmoid"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        widths = [784, *check_layers("hidden", hidden), 10]
        self.n_layers = len(widths) - 1
        for i in range(self.n_layers):
            setattr(self, f"linear{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        # the tutorial's attribute name, whatever the activation (it holds no parameters)
        self.sigmoid = ACTIVATIONS[activation]()

    def forward(self, x):
        return self._head(self.linear1(x.flatten(1)))

    def _head(self, h):
        for i in range(2, self.n_layers + 1):
            h = getattr(self, f"linear{i}")(self.sigmoid(h))
        return h

    def split_input_layer(self):
        """``(linear1, the rest)``: see :func:`mnistkit.inference.predict_logits`."""
        return self.linear1, self._head


@register_model(
    "seed-mlp",
    "multiclass",
    "the tutorial's network: 784-512-128-10, sigmoid hidden layers (--hidden and --activation reshape it)",
)
def seed_mlp(hidden: tuple = (512, 128), activation: str = "sigmoid") -> nn.Module:
    return SeedMLP(tuple(hidden), activation)


@register_model("mlp", "multiclass", "MLP with configurable hidden sizes, activation and dropout")
def mlp(
    hidden: tuple = (512, 128),
    activation: str = "relu",
    dropout: float = 0.0,
    in_features: int = 784,
    num_classes: int = 10,
    input_dropout: float = 0.0,
    max_norm: float = 0.0,
) -> nn.Module:
    return MLP(in_features, tuple(hidden), num_classes, activation, dropout, input_dropout, max_norm)
