"""Pixel normalisation: done exactly once, here, for every path into a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

#: Pixel values are stored as uint8 in [0, 255]; models see (x / 255 - mean) / std.
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class Normalization:
    """Mean and standard deviation on the [0, 1] pixel scale."""

    mean: float
    std: float

    def to_dict(self) -> dict:
        return asdict(self)


#: The tutorial's ``Normalize((0.5,), (0.5,))``: maps [0, 1] to [-1, 1] (applied once, not twice).
TUTORIAL_NORM = Normalization(0.5, 0.5)


def normalize(images: torch.Tensor, norm: Normalization, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images ``[N, 28, 28]`` (or ``[28, 28]``) -> float ``[N, 1, 28, 28]`` normalised with ``norm``.

    Works on whatever device ``images`` is on, so training can normalise the whole
    dataset on the GPU in one call.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels, got {images.dtype}")
    if images.dim() == 2:
        images = images.unsqueeze(0)
    x = images.to(dtype).unsqueeze(1)
    scale = 1.0 / (PIXEL_MAX * norm.std)
    return x.mul_(scale).sub_(norm.mean / norm.std)
