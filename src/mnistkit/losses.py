"""The one loss function used by training, evaluation and the estimators."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, task: str, label_smoothing: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy for ``task="multiclass"`` (logits ``[N, C]``, int targets ``[N]``),
    binary cross-entropy with logits for ``task="binary"`` (logits ``[N]``, 0/1 targets ``[N]``).

    Label smoothing for the binary case pulls targets towards 0.5 by ``label_smoothing / 2``.
    """
    if task == "binary":
        t = targets.to(logits.dtype)
        if label_smoothing:
            t = t * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits, t, reduction=reduction)
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)


def logits_to_probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Class probabilities ``[N, C]`` from logits (binary: ``[1 - p, p]``)."""
    if task == "binary":
        p = torch.sigmoid(logits.float())
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)
