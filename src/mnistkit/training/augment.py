"""Cheap on-device augmentation for whole batches (no per-sample Python)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, max_shift: int, fill: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of ``x [B, 1, H, W]`` by its own random integer offset in
    ``[-max_shift, max_shift]`` pixels, filling uncovered pixels with ``fill`` (the background)."""
    b, c, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), value=fill).view(b, c, (h + 2 * p) * (w + 2 * p))
    shifts = torch.randint(0, 2 * p + 1, (b, 2), generator=generator).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + shifts[:, 0].view(b, 1, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w) + shifts[:, 1].view(b, 1, 1)
    idx = (ys * (w + 2 * p) + xs).view(b, 1, h * w).expand(b, c, h * w)
    return padded.gather(2, idx).view(b, c, h, w)
