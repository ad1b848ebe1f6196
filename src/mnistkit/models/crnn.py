"""A small convolutional-recurrent line reader (CRNN, Shi et al. 2015) trained with CTC.

Input: line images ``[N, 1, 32, W]`` (or ``[N, 32, W]``), normalised; output: per-column logits
``[N, W / 4, classes + 1]``, the last class being CTC's blank. Convolutions see a few digits' worth
of context, a bidirectional GRU the whole line, so touching and overlapping digits are read
without being cut apart first.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistkit.models.registry import register_model

#: The widest conv block or GRU a line model may ask for (an untrusted checkpoint's options).
MAX_WIDTH = 512


def _block(c_in: int, c_out: int, pool: tuple[int, int]) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
    ]


class CRNN(nn.Module):
    """Four conv blocks (height 32 -> 2, width / 4), a BiGRU over the columns, a linear head."""

    #: Columns of output per column of input (the width is pooled twice by 2).
    STRIDE = 4

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 64, num_classes: int = 10):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.features = nn.Sequential(
            *_block(1, c1, (2, 2)), *_block(c1, c2, (2, 2)), *_block(c2, c3, (2, 1)), *_block(c3, c4, (2, 1))
        )
        self.project = nn.Linear(c4 * 2, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, num_classes + 1)
        self.num_classes = num_classes

    @property
    def blank(self) -> int:
        """The index of CTC's blank among the outputs (after the classes)."""
        return self.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        f = self.features(x)  # [N, C, 2, W/4]
        n, c, h, w = f.shape
        f = f.permute(0, 3, 1, 2).reshape(n, w, c * h)
        out, _ = self.rnn(torch.relu(self.project(f)))
        return self.head(out)  # [N, T, classes + 1]


@register_model(
    "crnn",
    task="sequence",
    description="line reader: 4 conv blocks + BiGRU, CTC over the digits of a line (32 px tall)",
    train_defaults={
        "dataset": "digit-lines",
        "norm": "dataset",
        "batch_size": 64,
        "lr": 3e-3,
        "optimizer": "adamw",
        "weight_decay": 1e-4,
        "schedule": "onecycle",
        "val_size": 2000,
    },
)
def crnn(channels: tuple[int, ...] = (16, 32, 64, 64), hidden: int = 64, num_classes: int = 10) -> nn.Module:
    """``channels``: the four conv blocks' widths; ``hidden``: the GRU's units per direction."""
    ok = (
        isinstance(channels, (list, tuple))
        and len(channels) == 4
        and all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_WIDTH for c in channels)
        and isinstance(hidden, int)
        and not isinstance(hidden, bool)
        and 1 <= hidden <= MAX_WIDTH
    )
    if not ok:
        raise ValueError(f"channels must be 4 whole numbers and hidden one, each 1 to {MAX_WIDTH}")
    return CRNN(tuple(channels), hidden, num_classes)
