"""Fault injection for the tests of interrupted and crashed runs; never active in normal use.

Registered by :func:`mnistkit.training.callbacks.default_callbacks` only when one of these
environment variables is set (the tests set them on the ``mnistkit train`` processes they start):

``MNISTKIT_TEST_STEP_DELAY``
    seconds to sleep after every optimiser step, so a test can kill a run mid-epoch;
``MNISTKIT_TEST_DIE_AT_STEP=N``
    rank ``MNISTKIT_TEST_DIE_RANK`` (default 1) exits abruptly after step N, as a crashed peer would.
"""

from __future__ import annotations

import os
import time

import torch

from mnistkit.training.callbacks import Callback
from mnistkit.training.distributed import DistContext


class FaultInjection(Callback):
    """Sleeps after every step and/or kills this process after step ``die_at`` on rank ``die_rank``."""

    def __init__(self, delay: float, die_at: int, die_rank: int, rank: int):
        self.delay, self.die_at, self.die_rank, self.rank = delay, die_at, die_rank, rank
        self.steps = 0  # optimiser steps taken by this process

    def on_batch_end(self, epoch: int, step: int, loss: torch.Tensor) -> None:
        self.steps += 1
        if self.delay:
            time.sleep(self.delay)
        if self.die_at and self.rank == self.die_rank and self.steps >= self.die_at:
            os._exit(1)


def faults_from_env(dist: DistContext | None) -> list[FaultInjection]:
    """A :class:`FaultInjection` when the test variables ask for one, else nothing."""
    delay = float(os.environ.get("MNISTKIT_TEST_STEP_DELAY") or 0)
    die_at = int(os.environ.get("MNISTKIT_TEST_DIE_AT_STEP") or 0)
    die_rank = int(os.environ.get("MNISTKIT_TEST_DIE_RANK") or 1)
    if not delay and not die_at:
        return []
    return [FaultInjection(delay, die_at, die_rank, dist.rank if dist is not None else 0)]
