"""A small convolutional network for 28x28 single-channel images."""

from __future__ import annotations

import torch
from torch import nn

from mnistkit.models.layers import MaskDropout
from mnistkit.models.registry import check_layers, register_model


def _conv_block(c_in: int, c_out: int, kernel: int = 3, same: bool = True) -> nn.Sequential:
    """``kernel`` x ``kernel`` conv (same or valid padding) -> BatchNorm -> 2x2 max-pool -> ReLU.

    Max-pooling and ReLU commute (``max(relu(x)) == relu(max(x))``, gradients included), so
    pooling first computes the same function with the ReLU on a quarter of the values (ReLU
    forward and backward were 2.3 ms of a 32 ms CPU training step, profiled at batch 128).
    The layer indices of the parameters are unchanged, so older checkpoints load as they are.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2 if same else 0, bias=False),
        nn.BatchNorm2d(c_out),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """One (conv, BN, ReLU, pool) stage per entry of ``widths``, then a linear head.

    Shapes with the default ``widths=(32, 64, 128)``:
    ``[N, 1, 28, 28] -> [N, 32, 14, 14] -> [N, 64, 7, 7] -> [N, 128, 3, 3] -> [N, num_classes]``.
    One conv per stage, pooling early: a third of the FLOPs of two convs per stage at 28x28,
    for the same accuracy with augmentation (bench/ measures it).

    ``kernel`` (3 or 5) is the convolutions' size, ``padding`` ``"same"`` or ``"valid"`` (valid
    5x5 convs shrink 28 -> 24 -> (pool) 12 -> 8 -> 4: a cheaper second stage); ``head_hidden`` > 0 puts a hidden ReLU layer of
    that width in the head (``Flatten, Linear, ReLU, dropout, Linear``), as the small two-stage
    CNNs that reach 99 % in one epoch have. The defaults build the network older checkpoints hold.
    """

    def __init__(
        self, widths=(32, 64, 128), num_classes=10, dropout=0.25, in_channels=1, kernel=3, head_hidden=0, padding="same"
    ):
        super().__init__()
        widths = check_layers("widths", widths)
        if kernel not in (3, 5):
            raise ValueError(f"kernel must be 3 or 5, got {kernel!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if isinstance(head_hidden, bool) or not isinstance(head_hidden, int) or head_hidden < 0:
            raise ValueError(f"head_hidden must be a whole number >= 0, got {head_hidden!r}")
        stages, c, side = [], in_channels, 28
        for w in widths:
            side = side if padding == "same" else side - (kernel - 1)
            if side < 2:
                raise ValueError(f"{len(widths)} valid {kernel}x{kernel} stages shrink a 28x28 image to nothing")
            stages.append(_conv_block(c, w, kernel, padding == "same"))
            c, side = w, side // 2
        self.features = nn.Sequential(*stages)
        flat = c * side * side
        if head_hidden:
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(flat, head_hidden),
                nn.ReLU(inplace=True),
                MaskDropout(dropout),
                nn.Linear(head_hidden, num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Flatten(), MaskDropout(dropout), nn.Linear(flat, num_classes))
        # NHWC weights and inputs: oneDNN's channels-last convolutions run ~2-3x faster on CPU than
        # NCHW with per-call reorders (measured); checkpoints store them contiguous as usual.
        self.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.head(self.features(_as_nhwc_batch(x)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature maps averaged over space: ``[N, widths[-1]]`` (128 by default).

        What the network "sees" in an input, independent of where it is: the first bundled novelty
        model (:mod:`mnistkit.novelty`, feature ``"embed"``) was fitted on these; new ones use
        :meth:`stage_features`, which ends with this vector. The pooled vector, not the head's
        flattened 3x3 maps, because it is 9x smaller and separated non-digits as well
        (bench/photos.py). Takes the same inputs as :meth:`forward`; adds no parameters.
        """
        return self.features(_as_nhwc_batch(x)).mean(dim=(2, 3))

    def stage_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every stage's feature maps averaged over space, concatenated: ``[N, sum(widths)]``.

        Early stages see strokes, the last one digit parts; a letter or a scribble can look
        like a digit to the last stage alone while its strokes are unlike a digit's (the
        layer ensemble of Lee et al. 2018). One Gaussian over all stages flagged more
        non-digits than the last stage (:meth:`embed`) alone, with thresholds set the same way:
        Fashion-MNIST 79 % against 70 %, letters 53 % against 46 %, scribbles 73 % against 59 %,
        at 2.1 and 1.9 % of photographed digits (bench/novelty_features.py, development sets).
        Adds no parameters.
        """
        z, pooled = _as_nhwc_batch(x), []
        for stage in self.features:
            z = stage(z)
            pooled.append(z.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


def _as_nhwc_batch(x: torch.Tensor) -> torch.Tensor:
    """``[N, 784]``, ``[N, 28, 28]`` or ``[N, 1, 28, 28]`` -> channels-last ``[N, 1, 28, 28]`` (matches the weights: no reorders)."""
    if x.dim() == 2:  # [N, 784] -> [N, 1, 28, 28]
        x = x.view(-1, 1, 28, 28)
    elif x.dim() == 3:  # [N, 28, 28]
        x = x.unsqueeze(1)
    return x.contiguous(memory_format=torch.channels_last)


@register_model("cnn", "multiclass", "small CNN: (conv-BN-pool-ReLU) per width, linear head")
def cnn(
    widths: tuple = (32, 64, 128),
    dropout: float = 0.25,
    num_classes: int = 10,
    kernel: int = 3,
    head_hidden: int = 0,
    padding: str = "same",
) -> nn.Module:
    return SmallCNN(tuple(widths), num_classes, dropout, kernel=kernel, head_hidden=head_hidden, padding=padding)
