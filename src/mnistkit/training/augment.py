"""Cheap on-device augmentation for whole batches (no per-sample Python, no PIL).

What real handwriting varies in, and how each is drawn per image of a batch ``[B, 1, H, W]``
(normalised pixels; ``fill`` is the normalised background value):

- position: integer shifts (:func:`random_shift`, exact, no resampling);
- slant and size: a small rotation and scaling (:func:`random_affine_grids`);
- wobble: an elastic distortion, a smoothed random displacement field (Simard et al., 2003)
  (:func:`elastic_displacement`);
- pen width: a blend toward the 3x3 dilation or erosion of the ink (:func:`random_thickness`).

The geometric parts become one sampling grid and one ``grid_sample`` call. Every random draw
comes from the caller's ``generator`` (the epoch's), so a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """The settings of one training run's augmentation; units in the comments.

    Built from the config with :meth:`from_config` (``TrainConfig`` owns the defaults and their
    validation); only the shift is on when the other strengths are 0, which is the original
    ``--augment`` (+-2 px shifts).
    """

    shift: int = 2  # max |offset| in pixels, per axis
    rotate: float = 0.0  # max |angle| in degrees
    scale: float = 0.0  # max relative size change: size factor in [1 - scale, 1 + scale]
    elastic: float = 0.0  # Simard's alpha: displacement scale in pixels before smoothing
    elastic_sigma: float = 4.0  # smoothing of the displacement field, Gaussian std in pixels
    thickness: float = 0.0  # max blend toward the 3x3 dilation (thicker) or erosion (thinner), 0..1

    @classmethod
    def from_config(cls, cfg) -> Augmentation | None:
        """The augmentation a :class:`~mnistkit.config.TrainConfig` asks for; None when ``augment`` is off."""
        if not cfg.augment:
            return None
        return cls(
            shift=cfg.aug_shift,
            rotate=cfg.aug_rotate,
            scale=cfg.aug_scale,
            elastic=cfg.aug_elastic,
            elastic_sigma=cfg.aug_elastic_sigma,
            thickness=cfg.aug_thickness,
        )

    @property
    def warps(self) -> bool:
        """Whether a resampling warp (rotation, scaling or elastic) is needed at all."""
        return bool(self.rotate or self.scale or self.elastic)

    def __call__(self, x: torch.Tensor, fill: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch ``x [B, 1, H, W]``; shift, then warp, then stroke thickness."""
        if self.shift:
            x = random_shift(x, self.shift, fill, generator)
        if self.warps:
            grid = random_affine_grids(len(x), x.shape[-2:], self.rotate, self.scale, generator).to(x.device)
            if self.elastic:
                grid = grid + elastic_displacement(
                    len(x), x.shape[-2:], self.elastic, self.elastic_sigma, generator
                ).to(x.device)
            x = warp(x, grid, fill)
        if self.thickness:
            x = random_thickness(x, self.thickness, generator)
        return x


def random_shift(
    x: torch.Tensor, max_shift: int, fill: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image of ``x [B, 1, H, W]`` by its own random integer offset in
    ``[-max_shift, max_shift]`` pixels, filling uncovered pixels with ``fill`` (the background)."""
    # drawn as start positions in the padded image, as before shift_by existed: same batches, same runs
    offsets = max_shift - torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator)
    return shift_by(x, offsets, max_shift, fill)


def shift_by(x: torch.Tensor, offsets: torch.Tensor, max_shift: int, fill: float) -> torch.Tensor:
    """Translate image i of ``x [B, C, H, W]`` down by ``offsets[i, 0]`` and right by ``offsets[i, 1]``
    pixels (each within ``[-max_shift, max_shift]``), filling with ``fill``: one pad and one gather."""
    b, c, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), value=fill).view(b, c, (h + 2 * p) * (w + 2 * p))
    starts = (p - offsets).to(x.device)  # where each output's top-left pixel reads in the padded image
    ys = torch.arange(h, device=x.device).view(1, h, 1) + starts[:, 0].view(b, 1, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w) + starts[:, 1].view(b, 1, 1)
    idx = (ys * (w + 2 * p) + xs).view(b, 1, h * w).expand(b, c, h * w)
    return padded.gather(2, idx).view(b, c, h, w)


def random_affine_grids(
    batch: int,
    size: torch.Size | tuple[int, int],
    max_degrees: float,
    max_scale: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`affine_grids` for a uniform angle in ``[-max_degrees, max_degrees]`` and a uniform size
    factor in ``[1 - max_scale, 1 + max_scale]`` per image."""
    degrees = (torch.rand(batch, generator=generator) * 2 - 1) * max_degrees
    factor = 1 + (torch.rand(batch, generator=generator) * 2 - 1) * max_scale
    return affine_grids(degrees, factor, size)


def affine_grids(degrees: torch.Tensor, factor: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Sampling grids ``[B, H, W, 2]`` (``grid_sample``'s normalised coordinates) that rotate image i
    about its centre by ``degrees[i]`` (counter-clockwise as displayed) and scale it by ``factor[i]``
    (> 1: the digit grows)."""
    angle = torch.deg2rad(degrees.float())
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor  # output -> input: rotate back, shrink
    theta = torch.zeros(len(degrees), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    h, w = size
    return F.affine_grid(theta, [len(degrees), 1, h, w], align_corners=False)


def elastic_displacement(
    batch: int, size: torch.Size | tuple[int, int], alpha: float, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """An elastic displacement ``[B, H, W, 2]`` in ``grid_sample`` units: uniform noise in [-1, 1]
    per pixel and axis, smoothed by a Gaussian of std ``sigma`` pixels, scaled by ``alpha`` pixels
    (Simard et al.'s recipe; on 28x28 digits alpha 34, sigma 4 moves pixels by about 1-2 px)."""
    h, w = size
    noise = torch.rand(batch * 2, h, w, generator=generator) * 2 - 1
    smooth = gaussian_blur(noise, sigma).view(batch, 2, h, w)
    # pixels -> normalised coordinates: the image spans 2 units over w (x) and h (y) pixels
    units = torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
    return (smooth * alpha * units).permute(0, 2, 3, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``x [N, H, W]`` (std ``sigma`` pixels, zero padding) as two small matrix
    products, ``G_h @ x @ G_w^T``: on 28x28 images ~50x faster on the CPU than 1-D convolutions
    with a 25-tap kernel (measured, one thread)."""
    h, w = x.shape[-2:]
    return gaussian_matrix(h, sigma, x) @ x @ gaussian_matrix(w, sigma, x).T


def gaussian_matrix(n: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """``[n, n]``: row i holds the Gaussian weights (std ``sigma``) of every pixel for output pixel i,
    normalised as if the signal continued with zeros beyond the edge."""
    pos = torch.arange(n, dtype=like.dtype, device=like.device)
    k = torch.exp(-0.5 * ((pos.view(-1, 1) - pos.view(1, -1)) / sigma) ** 2)
    return k / (k.sum(1, keepdim=True).max())  # one normaliser: the centre row's full kernel sum


def warp(x: torch.Tensor, grid: torch.Tensor, fill: float) -> torch.Tensor:
    """Resample ``x [B, 1, H, W]`` at ``grid [B, H, W, 2]`` (bilinear); outside the image is background."""
    # grid_sample pads with zeros, so sample the offset from the background and add it back
    out = F.grid_sample(x - fill, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def random_thickness(x: torch.Tensor, max_blend: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Thicken or thin each image's strokes: blend toward its 3x3 dilation (a uniform strength in
    ``(0, max_blend]``) or its 3x3 erosion (``[-max_blend, 0)``). Ink is bright on a dark background
    after normalisation, so dilation is a max-pool and erosion a min-pool."""
    t = ((torch.rand(len(x), generator=generator) * 2 - 1) * max_blend).to(x.device).view(-1, 1, 1, 1)
    target = torch.where(t > 0, _max3x3(x), -_max3x3(-x))
    return x + t.abs() * (target - x)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max filter of ``x [B, C, H, W]`` (edges: the pixels inside), as two separable passes of
    shifted maxima; ``max_pool2d(x, 3, stride=1, padding=1)`` is the same values but ~30x slower on
    the CPU (measured, batch 128, one thread)."""

    def along(t, dim):
        n = t.shape[dim]
        out = t.clone()
        out.narrow(dim, 1, n - 1).copy_(torch.maximum(t.narrow(dim, 1, n - 1), t.narrow(dim, 0, n - 1)))
        out.narrow(dim, 0, n - 1).copy_(torch.maximum(out.narrow(dim, 0, n - 1), t.narrow(dim, 1, n - 1)))
        return out

    return along(along(x, -1), -2)
