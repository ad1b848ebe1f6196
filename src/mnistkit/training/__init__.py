"""Training: :func:`fit` (the Python twin of ``mnistkit train``) and its pieces."""

from mnistkit.training.loop import RunResult, fit, train_one_epoch, train_step, validate

__all__ = ["RunResult", "fit", "train_one_epoch", "train_step", "validate"]
