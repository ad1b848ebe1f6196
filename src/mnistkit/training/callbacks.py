"""Callbacks: what happens around the epoch loop without being written into it (skorch-style).

The loop calls ``on_train_begin(state)``, then per epoch ``on_epoch_begin(epoch, steps)``,
``on_batch_end(epoch, step, loss)`` after each optimiser step and ``on_epoch_end(state)`` once the
epoch is validated, then ``on_train_end(state)``; ``close()`` always runs, also after an error.
:func:`mnistkit.training.session.make_callbacks` assembles them in the order that matters:
early stopping decides (every rank agrees), the log says so, the state is saved, TensorBoard
and user hooks run last (a hook may end the run, and finds the epoch saved).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mnistkit.runs import RunDir
from mnistkit.training.distributed import DistContext
from mnistkit.training.runlog import RunLog
from mnistkit.training.state import TrainState, save_state


class StopTraining(Exception):
    """Raised by an epoch hook to end a run after this epoch, before the test evaluation.

    The epoch's state is already in ``last.safetensors``, so ``fit(resume=run_dir)`` can finish
    the run later (tuning scores the test set that way, for the best trial only).
    """


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        pass

    def on_batch_end(self, epoch: int, step: int, loss: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def close(self) -> None:
        pass


class CallbackList(Callback):
    """Calls its callbacks in order. Per-batch calls go only to those that override ``on_batch_end``
    (the hot path stays free of empty calls). ``log`` is the run's :class:`RunLog`."""

    def __init__(self, callbacks: Sequence[Callback] = (), log: RunLog | None = None):
        self.callbacks = list(callbacks)
        self.log = log if log is not None else RunLog(None, echo=False)
        self._per_batch = [c for c in self.callbacks if type(c).on_batch_end is not Callback.on_batch_end]

    def on_train_begin(self, state: TrainState) -> None:
        for c in self.callbacks:
            c.on_train_begin(state)

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        for c in self.callbacks:
            c.on_epoch_begin(epoch, steps)

    def on_batch_end(self, epoch: int, step: int, loss: torch.Tensor) -> None:
        for c in self._per_batch:
            c.on_batch_end(epoch, step, loss)

    def on_epoch_end(self, state: TrainState) -> None:
        for c in self.callbacks:
            c.on_epoch_end(state)

    def on_train_end(self, state: TrainState) -> None:
        for c in self.callbacks:
            c.on_train_end(state)

    def close(self) -> None:
        for c in self.callbacks:
            c.close()
        self.log.close()


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved for ``patience`` epochs (0: never), then
    restore the best epoch's weights. Under torchrun rank 0 decides, so no rank trains on alone."""

    def __init__(self, patience: int, epochs: int, model: torch.nn.Module, dist: DistContext | None = None):
        self.patience, self.epochs, self.model, self.dist = patience, epochs, model, dist

    def on_epoch_end(self, state: TrainState) -> None:
        stop = self._no_progress(state)
        if self.dist is not None:
            stop = self.dist.agree(stop)
        if stop:
            state.stop = True
            state.epoch = self.epochs  # nothing left to run: a resume goes straight to the test score

    def _no_progress(self, state: TrainState) -> bool:
        val_loss = state.last_row.get("val_loss")
        if not self.patience or val_loss is None:
            return False
        if state.best_val_loss is None or val_loss < state.best_val_loss:
            state.best_val_loss, state.bad_epochs = val_loss, 0
            state.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        state.bad_epochs += 1
        return state.bad_epochs >= self.patience

    def on_train_end(self, state: TrainState) -> None:
        if state.best_weights is not None:
            self.model.load_state_dict(state.best_weights)


class ProgressLog(Callback):
    """The words of a run: the tutorial's step lines, then per epoch the validation scores (with
    a split), and why and where early stopping ended the run."""

    def __init__(self, log: RunLog, epochs: int, log_every: int, run: RunDir | None = None):
        self.log, self.epochs, self.log_every, self.run = log, epochs, log_every, run
        self.steps = 0

    def on_train_begin(self, state: TrainState) -> None:
        if state.resumed:
            self.log.line(f"Resuming {self.run} after epoch {state.epoch}/{self.epochs}")

    def on_epoch_begin(self, epoch: int, steps: int) -> None:
        self.steps = steps
        self.log.start_epoch(epoch, self.epochs, steps)

    def on_batch_end(self, epoch: int, step: int, loss: torch.Tensor) -> None:
        if self.log_every and step % self.log_every == 0:  # the only host sync of the hot path
            self.log.line(f"Epoch [{epoch}/{self.epochs}], Step [{step}/{self.steps}], Loss: {loss.item():.4f}")
        if step % 50 == 0 or step == self.steps:
            self.log.advance(50 if step % 50 == 0 else step % 50)

    def on_epoch_end(self, state: TrainState) -> None:
        row = state.last_row
        if row.get("val_loss") is not None:
            self.log.line(
                f"Epoch [{row['epoch']}/{self.epochs}], Validation Loss: {row['val_loss']:.4f}, "
                f"Validation Accuracy: {row['val_accuracy']:.2f} %"
            )
        if state.stop and state.best_val_loss is not None:
            self.log.line(
                f"Early stopping after epoch {row['epoch']}: validation loss has not improved for "
                f"{state.bad_epochs} epochs; keeping the weights of epoch {state.best_epoch} "
                f"(validation loss {state.best_val_loss:.4f})"
            )


class Checkpointing(Callback):
    """After every epoch: rewrite metrics.jsonl / metrics.csv and the resumable state (main process only)."""

    def __init__(self, run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler):
        self.run, self.model, self.optimizer, self.scheduler = run, model, optimizer, scheduler

    def on_epoch_end(self, state: TrainState) -> None:
        self.run.write_metrics(state.metrics)
        save_state(self.run, self.model, self.optimizer, self.scheduler, state)


class TensorBoard(Callback):
    """One point per metric per epoch in ``log_dir`` (needs the ``tensorboard`` extra)."""

    def __init__(self, log_dir: str):
        from mnistkit.tb import TensorBoardLogger

        self.logger = TensorBoardLogger(log_dir)

    def on_epoch_end(self, state: TrainState) -> None:
        self.logger.log_epoch(state.last_row)

    def close(self) -> None:
        self.logger.close()


class EpochHooks(Callback):
    """``fit(hooks=...)``: objects with ``on_epoch_end(epoch, row)``, called once the epoch is saved;
    one may raise :class:`StopTraining` (or Optuna's ``TrialPruned``) to end the run there."""

    def __init__(self, hooks: Sequence):
        self.hooks = list(hooks)

    def on_epoch_end(self, state: TrainState) -> None:
        row = state.last_row
        for hook in self.hooks:
            hook.on_epoch_end(row["epoch"], row)
