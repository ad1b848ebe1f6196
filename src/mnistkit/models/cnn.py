"""A small convolutional network for 28x28 single-channel images."""

from __future__ import annotations

from torch import nn

from mnistkit.models import register_model


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (same padding) -> BatchNorm -> ReLU; keeps H and W."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Two stages of (conv, conv, 2x2 max-pool): 28 -> 14 -> 7, then a linear head.

    Shapes: ``[N, 1, 28, 28] -> [N, w1, 14, 14] -> [N, w2, 7, 7] -> [N, num_classes]``.
    """

    def __init__(self, widths=(32, 64), num_classes=10, dropout=0.25, in_channels=1):
        super().__init__()
        w1, w2 = (int(w) for w in widths)
        if w1 < 1 or w2 < 1:
            raise ValueError(f"widths must be positive, got {widths}")
        self.features = nn.Sequential(
            _conv_block(in_channels, w1), _conv_block(w1, w1), nn.MaxPool2d(2),
            _conv_block(w1, w2), _conv_block(w2, w2), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(w2 * 7 * 7, num_classes))

    def forward(self, x):
        if x.dim() == 2:  # [N, 784] -> [N, 1, 28, 28]
            x = x.view(-1, 1, 28, 28)
        elif x.dim() == 3:  # [N, 28, 28]
            x = x.unsqueeze(1)
        return self.head(self.features(x))


@register_model("cnn", "multiclass", "small CNN: 2x(conv-conv-pool) with BatchNorm, linear head")
def cnn(widths: tuple = (32, 64), dropout: float = 0.25, num_classes: int = 10) -> nn.Module:
    return SmallCNN(tuple(widths), num_classes, dropout)
