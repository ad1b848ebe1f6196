"""CTC for sequence models (a line of digits in, the digits out): the loss, decoding and scoring.

Labels are ``[N, L]`` int64 rows padded with :data:`PAD`; a sequence model's logits are
``[N, T, C + 1]`` with CTC's blank last. Only torch: the loss, the training loop's accuracy and
evaluation all use this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Padding of a sequence label after its last symbol.
PAD = -1


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """CTC loss of logits ``[N, T, C + 1]`` (blank last) against padded targets ``[N, L]``.

    ``mean``: the mean over lines of each line's negative log-likelihood (not divided by its
    length: a long line has more chances to be wrong, and weighs more)."""
    blank = logits.shape[-1] - 1
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, N, C + 1]
    n, t = logits.shape[0], logits.shape[1]
    loss = F.ctc_loss(
        log_probs,
        targets.clamp(min=0),
        torch.full((n,), t, dtype=torch.long, device=logits.device),
        (targets != PAD).sum(1),
        blank=blank,
        reduction="none",
        zero_infinity=True,
    )
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def greedy_labels(logits: torch.Tensor) -> torch.Tensor:
    """Best-path decoding as a tensor: ``[N, T]`` int64, the symbols read left-aligned, then :data:`PAD`.

    The most likely class per column, repeats merged, blanks dropped, all on the logits' device
    (no host sync: the training loop counts exact readings with it every step).
    """
    n, t, c = logits.shape
    pred = logits.argmax(-1)
    prev = F.pad(pred, (1, 0), value=c - 1)[:, :-1]
    keep = (pred != c - 1) & (pred != prev)
    slot = torch.where(keep, keep.cumsum(1) - 1, torch.full_like(pred, t))
    out = torch.full((n, t + 1), PAD, dtype=torch.long, device=logits.device)
    out.scatter_(1, slot, torch.where(keep, pred, torch.full_like(pred, PAD)))
    return out[:, :t]


def exact_matches(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many rows are read exactly (a 0-d int64 tensor on the logits' device)."""
    read = greedy_labels(logits)
    length = targets.shape[1]
    if read.shape[1] < length:
        read = F.pad(read, (0, length - read.shape[1]), value=PAD)
    same = (read[:, :length] == targets).all(1)
    if read.shape[1] > length:
        same &= read[:, length] == PAD
    return same.sum()


@dataclass
class Decoded:
    """Readings of a batch: ``labels[i]`` the class indices read, ``confidence[i]`` the best path's
    probability, ``digit_probs[i]`` each symbol's highest probability among its columns."""

    labels: list[list[int]]
    confidence: list[float]
    digit_probs: list[list[float]]


def greedy_decode(logits: torch.Tensor, temperature: float = 1.0) -> Decoded:
    """:func:`greedy_labels` with confidences, as Python lists (for printing and serving).

    The confidence is the product of the chosen columns' probabilities (the best path's
    probability): a lower bound on the reading's probability that is cheap and well ordered,
    since a wrong reading rarely has a sure path.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    top, idx = probs.max(-1)  # [N, T]
    blank = logits.shape[-1] - 1
    confidence = top.clamp(min=1e-30).log().sum(1).exp()
    labels, digit_probs = [], []
    for row, p in zip(idx.tolist(), top.tolist()):
        out: list[int] = []
        ps: list[float] = []
        prev = blank
        for k, q in zip(row, p):
            if k != blank and k != prev:
                out.append(k)
                ps.append(q)
            elif k != blank and ps:
                ps[-1] = max(ps[-1], q)
            prev = k
        labels.append(out)
        digit_probs.append(ps)
    return Decoded(labels, confidence.tolist(), digit_probs)


def one_symbol_log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[N, C]``: the log-probability that each line of ``logits`` ``[N, T, C + 1]`` reads as the one
    symbol ``c``, summed over every CTC path that collapses to it (blanks, ``c`` repeated, blanks).

    A single digit read by a line model: unlike the best path, it counts every alignment, so a
    digit the reader spreads over a few columns keeps all its probability.
    """
    n, t, k = logits.shape
    c = k - 1
    log_probs = F.log_softmax(logits.float() / temperature, dim=-1)  # [N, T, C + 1]
    each = log_probs.repeat_interleave(c, dim=0).transpose(0, 1)  # [T, N * C, C + 1]
    symbols = torch.arange(c, device=logits.device).repeat(n).unsqueeze(1)  # [N * C, 1]
    nll = F.ctc_loss(
        each,
        symbols,
        torch.full((n * c,), t, dtype=torch.long, device=logits.device),
        torch.ones(n * c, dtype=torch.long, device=logits.device),
        blank=c,
        reduction="none",
        zero_infinity=False,
    )
    return (-nll).view(n, c)
