"""The one loss function used by training, evaluation and the estimators."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mnistkit.ctc import ctc_loss

#: The target of a generated non-digit (:mod:`mnistkit.training.negatives`): none of the classes.
NEGATIVE = -1


def classification_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    negative_weight: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy for ``task="multiclass"`` (logits ``[N, C]``, int targets ``[N]``),
    binary cross-entropy with logits for ``task="binary"`` (logits ``[N]``, 0/1 targets ``[N]``).

    ``task="sequence"``: CTC (:func:`mnistkit.ctc.ctc_loss`; logits ``[N, T, C + 1]``, padded
    targets ``[N, L]``). Label smoothing for the binary case pulls targets towards 0.5 by
    ``label_smoothing / 2``.
    With ``negative_weight`` > 0 (multiclass, mean only), rows whose target is :data:`NEGATIVE`
    are generated non-digits: see :func:`outlier_exposure_loss`.
    """
    if task == "sequence":
        return ctc_loss(logits, targets, reduction)
    if negative_weight:
        return outlier_exposure_loss(logits, targets, label_smoothing, negative_weight)
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


def outlier_exposure_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float, negative_weight: float
) -> torch.Tensor:
    """Outlier exposure (Hendrycks et al., ICLR 2019): the mean cross-entropy of the real rows, plus
    ``negative_weight`` times the mean cross-entropy of the :data:`NEGATIVE` rows to the uniform
    distribution over the classes, which teaches the model a low confidence on non-digits.

    Masks are weights, not boolean indexing, so a step has no host sync on an accelerator.
    """
    real = (targets != NEGATIVE).to(logits.dtype)
    ce = F.cross_entropy(logits, targets.clamp(min=0), label_smoothing=label_smoothing, reduction="none")
    to_uniform = -F.log_softmax(logits, dim=1).mean(dim=1)
    real_part = (ce * real).sum() / real.sum().clamp(min=1)
    negative_part = (to_uniform * (1 - real)).sum() / (1 - real).sum().clamp(min=1)
    return real_part + negative_weight * negative_part
