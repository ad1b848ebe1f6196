"""Batched inference on uint8 images: the path shared by evaluate, predict and serve."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mnistkit.losses import logits_to_probabilities
from mnistkit.precision import autocast
from mnistkit.preprocess import Normalization, fold_into_linear, normalize

#: Leave the batch's black pixels out of the first layer only when at least this fraction of the
#: inputs goes: the gathers cost ~0.23 ms a batch of 1,024, about 5 % of the full product.
MIN_SKIPPED_FRACTION = 0.05
#: ...and only for calls with at least this many images: folding the normalisation into the
#: weights costs ~0.7 ms per call (seed-mlp), five times a single image's whole forward.
SPARSE_MIN_IMAGES = 4096


@contextlib.contextmanager
def switched_mode(model: torch.nn.Module, training: bool) -> Iterator[torch.nn.Module]:
    """The one place that switches a model between train and eval mode (dropout, BatchNorm):
    ``training`` inside the block, the model's previous mode after it."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    norm: Normalization,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """Logits for uint8 images ``[N, 28, 28]``, computed in eval mode in batches; returned on the CPU.

    Normalisation happens per batch on ``device`` (the model's device by default), so a
    large test set never exists as a float copy on the host. ``bf16=True`` runs the model under
    bf16 autocast where the hardware has it (CUDA, CPUs with native bf16): about 1.6x the
    throughput on such a CPU, at the cost of a few flipped borderline predictions (measured:
    0-7 of MNIST's 10,000 test images), so exact fp32 is the default.

    Models whose first layer is a Linear on the flattened image (``split_input_layer``: the MLPs
    and linear models) take :class:`_SparsePixelForward` on the CPU for calls of
    :data:`SPARSE_MIN_IMAGES` or more: same logits to fp32 rounding, ~15 % more images/s.
    """
    if images.dim() == 2:
        images = images.unsqueeze(0)
    device = torch.device(device) if device is not None else _model_device(model)
    cast = autocast(device, bf16)
    with switched_mode(model, training=False):
        forward = _raw_pixel_forward(model, norm, images, device) or _normalised_forward(model, norm)
        with cast():
            outs = [
                forward(images[i : i + batch_size].to(device, non_blocking=True)).float().cpu()
                for i in range(0, len(images), batch_size)
            ]
    if not outs:
        return torch.empty(0)
    return torch.cat(outs)


class _SparsePixelForward:
    """A model's forward on raw uint8 pixels, for models whose first layer is a Linear on the
    flattened normalised image (the MLPs and linear models; they say so with ``split_input_layer``).

    Why: the normalisation is folded into that layer (:func:`mnistkit.preprocess.fold_into_linear`),
    so a black pixel is an exact 0 in its product, and the pixels that are black in the whole batch
    are left out of the product together with their weight rows. On MNIST at batch 1,024 about
    600 of the 784 pixels remain: 22 % less work in the layer that is 86 % of the seed-mlp's
    arithmetic, and no normalisation pass. The logits are the same up to fp32 rounding.
    """

    def __init__(self, linear: torch.nn.Linear, head, norm: Normalization):
        self.head = head
        weight, self.bias = fold_into_linear(linear.weight, linear.bias, norm)
        self.weight_t = weight.t().contiguous()  # [pixels, out]: kept pixels' rows are gathered per batch
        self.keep_limit = int((1.0 - MIN_SKIPPED_FRACTION) * self.weight_t.shape[0])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(len(images), -1)
        weight_t = self.weight_t
        kept = self.kept_pixels(x)
        if kept is not None:
            # gather, not index_select(1): over columns that one took 0.3-1.7 ms against a
            # steady 0.21 ms (batch 1,024, 610 of 784 pixels kept)
            x, weight_t = torch.gather(x, 1, kept.expand(len(x), -1)), weight_t.index_select(0, kept)
        return self.head(torch.addmm(self.bias, x.float(), weight_t))

    def kept_pixels(self, x: torch.Tensor) -> torch.Tensor | None:
        """Indices of the pixels not black in all of ``x`` ``[B, pixels]``; None when too few
        are black for skipping them to pay."""
        if not len(x):
            return None
        kept = x.amax(0).nonzero().squeeze(1)
        return kept if len(kept) <= self.keep_limit else None


def _normalised_forward(model: torch.nn.Module, norm: Normalization):
    """The plain path: normalise the uint8 batch, then the whole model."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return model(normalize(batch, norm))

    return forward


def _raw_pixel_forward(model, norm, images, device) -> _SparsePixelForward | None:
    """The sparse-pixel forward where it applies (CPU, fp32 first layer taking the whole flattened
    image, enough images to repay the fold), else None. On CUDA it would cost a host sync per
    batch for little gain."""
    split = getattr(model, "split_input_layer", None)
    if split is None or device.type != "cpu" or images.dtype != torch.uint8 or len(images) < SPARSE_MIN_IMAGES:
        return None
    linear, head = split()
    if (
        not isinstance(linear, torch.nn.Linear)
        or linear.weight.dtype != torch.float32
        or images.shape[1:].numel() != linear.in_features
    ):
        return None
    return _SparsePixelForward(linear, head, norm)


def class_probabilities(
    model: torch.nn.Module,
    images: torch.Tensor,
    norm: Normalization,
    task: str = "multiclass",
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    bf16: bool = False,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Class probabilities ``[N, C]`` (binary models give ``[N, 2]``: not-positive, positive).

    ``temperature`` divides the logits first (a checkpoint's calibration; 1.0 leaves them as they are).
    """
    logits = predict_logits(model, images, norm, batch_size, device, bf16)
    return logits_to_probabilities(logits / temperature if temperature != 1.0 else logits, task)


def checkpoint_proba(
    checkpoint,
    images: torch.Tensor,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """:func:`class_probabilities` with everything a :class:`~mnistkit.checkpoint.Checkpoint` knows: its model,
    normalisation, task and calibration temperature. Predict and serve call this.

    Probabilities that are not finite are refused here, once for every caller: a NaN is never
    an answer (finite weights can still overflow to infinite logits, and NaN is not JSON).
    """
    proba = class_probabilities(
        checkpoint.model, images, checkpoint.norm, checkpoint.task, batch_size, device, bf16, checkpoint.temperature
    )
    bad = int((~torch.isfinite(proba)).any(dim=-1).sum()) if proba.numel() else 0
    if bad:
        from mnistkit.errors import CheckpointError

        raise CheckpointError(
            f"checkpoint {checkpoint.path}: the model gives non-finite probabilities (NaN or infinity) for "
            f"{bad} of {len(proba)} inputs; its weights are broken, retrain or use another checkpoint"
        )
    return proba


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
