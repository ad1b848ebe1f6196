"""The one owner of a training epoch's batches: order, DDP shard, augmentation, generated
non-digits (``--negatives``), steps per epoch.

The dataset lives on the training device as one normalised tensor; a batch is an index slice
of a per-epoch permutation, so there is no DataLoader and no per-sample Python on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mnistkit.training.augment import Augmentation
from mnistkit.training.distributed import DistContext, steps_per_epoch
from mnistkit.training.negatives import Negatives


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG for one epoch's shuffling and augmentation: a pure function of (seed, epoch),
    which is what makes resuming at an epoch boundary bit-identical."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class EpochBatches:
    """Shuffled batches of ``x`` (normalised, on device) and ``y`` for each epoch.

    ``batch_size`` is the global batch; under DDP each rank takes its shard of every global batch
    (:meth:`DistContext.take_shard`). ``steps`` (batches per epoch, capped by ``step_limit``) is
    computed here once; the learning-rate schedule and the log lines read it.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        *,
        dist: DistContext | None = None,
        augment: Augmentation | None = None,
        fill: float = 0.0,  # a blank pixel after normalisation: what augmentation shifts in
        step_limit: int | None = None,
        negatives: Negatives | None = None,
    ):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.dist, self.augment, self.fill, self.negatives = dist, augment, fill, negatives
        steps = steps_per_epoch(len(x), batch_size, dist)
        self.steps = steps if step_limit is None else min(step_limit, steps)
        self.seen = min(len(x), self.steps * batch_size)  # samples per epoch, over all ranks

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's ``(images, labels)`` batches; also seeds the global RNG (dropout) for the epoch.
        With ``negatives``, each batch ends with its generated non-digits (label ``NEGATIVE``)."""
        gen = epoch_generator(self.seed, epoch)
        torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout and other global-RNG users
        perm = torch.randperm(len(self.x), generator=gen).to(self.x.device)
        bs = self.batch_size
        for step in range(self.steps):
            idx = perm[step * bs : (step + 1) * bs]
            if self.dist is not None:
                idx = self.dist.take_shard(idx)  # this rank's part of the global batch
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.augment is not None:
                xb = self.augment(xb, self.fill, gen)
            if self.negatives is not None:
                xb, yb = self.negatives(xb, yb, self.fill, gen, self.augment)
            yield xb, yb
