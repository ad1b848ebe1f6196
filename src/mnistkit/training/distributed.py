"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

``torchrun --nproc-per-node N -m mnistkit train ...`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`init_distributed` reads them, joins the
process group (gloo on CPU, NCCL on CUDA) and returns a :class:`DistContext`
(``None`` in a plain single process, so the single-process path is unchanged).

Data: every rank holds the whole (small) dataset in memory and computes the
same per-epoch permutation from ``epoch_generator(seed, epoch)``; from each
*global* batch of ``--batch-size`` indices, rank ``r`` takes ``batch[r::world]``.
Per-rank batches may differ in size by one (a global batch that is not a
multiple of the world size, or the epoch's short last batch), so a plain DDP
average of per-rank mean gradients would weight samples unequally. A DDP
communication hook therefore scales each rank's gradient by
``local_size * world / global_size`` before the average: the result is exactly
the global batch's mean gradient, so a learning-rate recipe means the same at
any world size.

Only rank 0 writes files and prints; a dead peer ends the job through
torchrun's agent or, failing that, the process-group timeout
(``MNISTKIT_DIST_TIMEOUT`` seconds, default 300) instead of a hang. That timeout
bounds the collectives of training, where the ranks move in step. At the end the
other ranks wait for rank 0 to score and write the run, which is work rather than a
stalled peer (seconds to minutes on a busy machine), so that wait uses its own group
with :data:`FINISH_TIMEOUT_S`. A collective that fails is one line per rank naming
the phase (:class:`DistributedError`), and the group is destroyed in ``finally``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from mnistkit.environ import seconds_from_env
from mnistkit.errors import ConfigError, MnistkitError

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

DEFAULT_TIMEOUT_S = 300.0
#: How long the other ranks wait for rank 0 to score and write the finished run (seconds). Only a
#: backstop: torchrun's agent stops them as soon as rank 0 dies.
FINISH_TIMEOUT_S = 3600.0
#: Environment variables torchrun sets for every worker.
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class DistributedError(MnistkitError, RuntimeError):
    """A collective failed: a peer died, or stalled past the timeout. Names the rank and the phase."""


@contextlib.contextmanager
def collective(rank: int, phase: str) -> Iterator[None]:
    """Turn a failed collective into one :class:`DistributedError` line naming this rank and ``phase``."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed's DistBackendError and gloo/NCCL errors
        if isinstance(exc, MnistkitError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DistributedError(
            f"rank {rank}: {phase} failed: {first} (a peer died, or stalled longer than its timeout; "
            f"MNISTKIT_DIST_TIMEOUT is {dist_timeout().total_seconds():g} s)"
        ) from exc


@dataclass
class DistContext:
    """This process's place in the job, plus the per-step gradient scale the DDP hook applies."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    owns_group: bool = False  # we created the process group, so we destroy it
    grad_scale: float = field(default=1.0)
    #: The group the end-of-run wait uses (timeout :data:`FINISH_TIMEOUT_S`); None: the default group.
    finish_group: ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take_shard(self, global_idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of one global batch (``global_idx[rank::world]``); sets the gradient scale.

        Every rank gets at least one sample as long as the global batch has ``world`` or more.
        """
        local = global_idx[self.rank :: self.world]
        self.grad_scale = len(local) * self.world / max(len(global_idx), 1)
        return local

    def sum_across_ranks(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """All-reduce (sum) scalar tensors, e.g. per-rank loss sums and correct counts."""
        import torch.distributed as dist

        flat = torch.stack([v.detach().to(torch.float64).reshape(()) for v in values]).to(self.comm_device)
        with collective(self.rank, "summing the epoch's metrics across ranks"):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return [flat[i].to(v.device, v.dtype) for i, v in enumerate(values)]

    def agree(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every rank (so e.g. early stopping cannot split the job)."""
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.comm_device)
        with collective(self.rank, "taking rank 0's decision (early stopping)"):
            dist.broadcast(t, src=0)
        return bool(t.item())

    def barrier(self) -> None:
        """Wait until every rank gets here: at the end of a run, until rank 0 has written it
        (:attr:`finish_group`, so the wait is not cut short by the training timeout)."""
        import torch.distributed as dist

        with collective(self.rank, "waiting for rank 0 to finish the run"):
            if self.backend == "nccl":
                dist.barrier(group=self.finish_group, device_ids=[self.device.index or 0])
            else:
                dist.barrier(group=self.finish_group)

    @property
    def comm_device(self) -> torch.device:
        """Where collective tensors must live: the GPU for NCCL, the CPU for gloo."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set a world size above one."""
    return _env_int("WORLD_SIZE", 1) > 1


def dist_timeout() -> datetime.timedelta:
    """The process-group timeout from ``MNISTKIT_DIST_TIMEOUT`` (seconds, default 300)."""
    return datetime.timedelta(seconds=seconds_from_env("MNISTKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def init_distributed(device: torch.device) -> tuple[DistContext | None, torch.device]:
    """Join the torchrun job if there is one; return ``(context or None, this rank's device)``.

    CUDA devices use NCCL and the GPU ``LOCAL_RANK``; everything else uses gloo on the CPU
    (an MPS device is not supported by either backend, so it is refused with a clear error).
    """
    if not launched_by_torchrun():
        return None, device
    import torch.distributed as dist

    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is set but {', '.join(missing)} are not; start distributed "
            "training with torchrun (e.g. torchrun --nproc-per-node 2 -m mnistkit train ...)"
        )
    rank, world, local_rank = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                "use --nproc-per-node <= the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"distributed training supports cpu (gloo) and cuda (nccl), not {device.type}; pass --device cpu"
        )
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=dist_timeout(), rank=rank, world_size=world)
    with collective(rank, "joining the end-of-run group"):
        finish = dist.new_group(backend=backend, timeout=finish_timeout())
    return DistContext(rank, world, local_rank, device, backend, owns_group=owns, finish_group=finish), device


def finish_timeout() -> datetime.timedelta:
    """How long the end-of-run wait may take: :data:`FINISH_TIMEOUT_S`, or the training timeout if longer."""
    return max(dist_timeout(), datetime.timedelta(seconds=FINISH_TIMEOUT_S))


def check_batch_size(batch_size: int, ctx: DistContext | None) -> None:
    """Every rank needs at least one sample of each full global batch."""
    if ctx is not None and batch_size < ctx.world:
        raise ConfigError(
            f"--batch-size {batch_size} is smaller than the world size {ctx.world}: every "
            f"rank needs a sample of each global batch; use --batch-size >= {ctx.world}"
        )


def steps_per_epoch(n: int, batch_size: int, ctx: DistContext | None) -> int:
    """Global batches per epoch; under DDP a short last batch with fewer samples than ranks is
    dropped (a rank with no sample would have no gradient to contribute)."""
    steps = -(-n // batch_size)
    if ctx is not None and n % batch_size and n % batch_size < ctx.world:
        steps -= 1
    return steps


def wrap_model(model: torch.nn.Module, ctx: DistContext | None) -> torch.nn.Module:
    """DDP-wrap ``model`` (already on ``ctx.device``) with the exact-global-mean gradient hook."""
    if ctx is None:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.backend == "nccl" else None
    ddp = DDP(model, device_ids=ids)
    ddp.register_comm_hook(ctx, _scaled_allreduce_hook)
    return ddp


def _scaled_allreduce_hook(ctx: DistContext, bucket):
    """Scale this rank's gradients by ``local * world / global`` then average: the global-batch mean."""
    import torch.distributed as dist

    buf = bucket.buffer()
    buf.mul_(ctx.grad_scale / ctx.world)
    return dist.all_reduce(buf, async_op=True).get_future().then(lambda fut: fut.value()[0])


def shutdown(ctx: DistContext | None) -> None:
    """Leave the process group we joined (idempotent); called in ``finally`` at the end of every
    distributed run, after the end-of-run barrier (or a failure that ends the run anyway)."""
    if ctx is None or not ctx.owns_group:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()  # every group, the end-of-run group included
    ctx.finish_group = None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number (it is set by torchrun)") from None
