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
    scale, shift = pixel_affine(norm)
    return x.mul_(scale).sub_(shift)


def pixel_affine(norm: Normalization) -> tuple[float, float]:
    """``(scale, shift)`` such that a normalised pixel is ``raw * scale - shift`` for raw in [0, 255]."""
    return 1.0 / (PIXEL_MAX * norm.std), norm.mean / norm.std


def fold_into_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, norm: Normalization
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of a linear layer that takes *raw* pixels (0..255, flattened) and gives
    what ``weight``/``bias`` give on ``normalize``-d ones: ``W' = W * scale``, ``b' = b - shift * W 1``.

    Why: on raw pixels a black pixel is an exact 0, so inference can skip the pixels that are
    black in a whole batch (about a fifth of MNIST's 784 in a batch of 1,024), and the
    normalisation pass over the batch disappears. Same function up to fp32 rounding.
    """
    scale, shift = pixel_affine(norm)
    w = weight.detach().float()
    b = bias.detach().float() if bias is not None else torch.zeros(w.shape[0], device=w.device)
    return w * scale, b - shift * w.sum(1)
