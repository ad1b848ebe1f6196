"""Training: :func:`fit` (the Python twin of ``mnistkit train``) and its pieces."""

from mnistkit.training.callbacks import Callback, StopTraining
from mnistkit.training.loop import RunResult, fit, run_epochs, train_one_epoch, train_step
from mnistkit.training.state import TrainState

__all__ = ["Callback", "RunResult", "StopTraining", "TrainState", "fit", "run_epochs", "train_one_epoch", "train_step"]
