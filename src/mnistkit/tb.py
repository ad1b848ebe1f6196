"""Optional TensorBoard logging for ``mnistkit train --tensorboard DIR``.

TensorBoard is an extra (``mnistkit[tensorboard]``); it is imported only when
a logger is created, so training without it never pays for the import.
"""

from __future__ import annotations

import math
from pathlib import Path

from mnistkit.errors import ConfigError

#: metrics.jsonl column -> TensorBoard tag; grouped so loss and accuracy get one chart each.
SCALAR_TAGS: dict[str, str] = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/val",
    "lr": "lr",
    "seconds": "time/epoch_seconds",
}


class TensorBoardLogger:
    """Writes one point per epoch for each metric in a metrics row.

    >>> logger = TensorBoardLogger("runs/tb")          # doctest: +SKIP
    >>> logger.log_epoch({"epoch": 1, "train_loss": 0.4, "val_accuracy": 91.2})  # doctest: +SKIP
    >>> logger.close()                                 # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'mnistkit[tensorboard]'"
            ) from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, row: dict) -> None:
        """Add the row's known scalars at step ``row["epoch"]``; null values (no val split) are skipped."""
        step = int(row.get("epoch", 0))
        for key, tag in SCALAR_TAGS.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and not math.isnan(value):
                self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()  # so a live TensorBoard shows each epoch as it ends

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
