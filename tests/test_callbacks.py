"""The training callbacks: the validation and early-stopping lines a new user reads, the best weights
early stopping keeps, the state they share, and fault injection staying off the normal path."""

import re

import pytest
import torch

from mnistkit.training import Callback, StopTraining, TrainState, fit
from mnistkit.training.callbacks import CallbackList, EarlyStopping, ProgressLog
from mnistkit.training.faults import faults_from_env
from mnistkit.training.runlog import RunLog

STEP_LINE = re.compile(r"^Epoch \[\d+/\d+\], Step \[\d+/\d+\], Loss: \d+\.\d{4}$")
VAL_LINE = re.compile(r"^Epoch \[(\d+)/(\d+)\], Validation Loss: (\d+\.\d{4}), Validation Accuracy: (\d+\.\d\d) %$")
STOP_LINE = re.compile(
    r"^Early stopping after epoch (\d+): validation loss has not improved for (\d+) epochs; "
    r"keeping the weights of epoch (\d+) \(validation loss (\d+\.\d{4})\)$"
)


def _fit(dataset, out, **kw):
    return fit(dataset=str(dataset), out=str(out), plots=False, **kw)


def test_validation_line_follows_each_epochs_step_lines(synthetic_dataset, tmp_path, capsys):
    r = _fit(
        synthetic_dataset,
        tmp_path / "v",
        model="logreg",
        solver="minibatch",
        epochs=2,
        val_size=100,
        batch_size=50,
        log_every=5,
    )
    out = capsys.readouterr().out.splitlines()
    val_lines = [i for i, line in enumerate(out) if VAL_LINE.match(line)]
    assert len(val_lines) == 2
    for epoch, i in enumerate(val_lines, start=1):
        assert STEP_LINE.match(out[i - 1]) and out[i - 1].startswith(f"Epoch [{epoch}/2], Step [10/10]")
        _, _, loss, acc = VAL_LINE.match(out[i]).groups()
        row = r.metrics[epoch - 1]
        assert float(loss) == pytest.approx(row["val_loss"], abs=5e-5)
        assert float(acc) == pytest.approx(row["val_accuracy"], abs=5e-3)
    assert re.match(r"^Accuracy of the model on the 200 test images: \d+\.\d\d %$", out[-1])


def test_no_validation_line_without_a_split(synthetic_dataset, tmp_path, capsys):
    _fit(synthetic_dataset, tmp_path / "n", model="logreg", solver="minibatch", epochs=1, batch_size=50, log_every=5)
    assert not any("Validation" in line for line in capsys.readouterr().out.splitlines())


def test_early_stopping_says_which_epochs_weights_it_kept_and_keeps_them(early_stopped_run):
    r = early_stopped_run
    log = (r.run_dir / "log.txt").read_text().splitlines()
    stops = [STOP_LINE.match(line) for line in log if STOP_LINE.match(line)]
    assert len(stops) == 1
    stopped, patience, kept, kept_loss = stops[0].groups()
    best = min(r.metrics, key=lambda row: row["val_loss"])
    assert int(stopped) == r.metrics[-1]["epoch"] == len(r.metrics) < 40
    assert int(patience) == 2 and int(kept) == best["epoch"] == len(r.metrics) - 2
    assert float(kept_loss) == pytest.approx(best["val_loss"], abs=5e-5)
    # the checkpoint holds the kept epoch's weights: it scores the validation split at that epoch's loss
    from mnistkit.api import evaluate_checkpoint

    val = evaluate_checkpoint(r.checkpoint, split="val", device="cpu")
    assert val.loss == pytest.approx(best["val_loss"], abs=1e-5)


def test_early_stopping_callback_tracks_best_and_restores_it():
    model = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2, epochs=10, model=model)
    state = TrainState()
    weights = {}
    for epoch, loss in enumerate([0.5, 0.4, 0.45, 0.41], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        weights[epoch] = model.weight.clone()
        state.metrics.append({"epoch": epoch, "val_loss": loss})
        state.epoch = epoch
        stopper.on_epoch_end(state)
    assert state.stop and state.epoch == 10  # a resumed run has nothing left to train
    assert (state.best_val_loss, state.best_epoch, state.bad_epochs) == (0.4, 2, 2)
    stopper.on_train_end(state)
    assert torch.equal(model.weight, weights[2])


def test_progress_log_lines(tmp_path):
    log = RunLog(tmp_path / "log.txt", echo=False)
    progress = ProgressLog(log, epochs=3, log_every=2)
    state = TrainState(metrics=[{"epoch": 1, "val_loss": 0.123456, "val_accuracy": 96.5}], epoch=1)
    progress.on_epoch_begin(1, 4)
    for step in range(1, 5):
        progress.on_batch_end(1, step, torch.tensor(0.25))
    progress.on_epoch_end(state)
    log.close()
    assert (tmp_path / "log.txt").read_text().splitlines() == [
        "Epoch [1/3], Step [2/4], Loss: 0.2500",
        "Epoch [1/3], Step [4/4], Loss: 0.2500",
        "Epoch [1/3], Validation Loss: 0.1235, Validation Accuracy: 96.50 %",
    ]


def test_user_hooks_see_each_saved_epoch_and_may_stop_the_run(synthetic_dataset, tmp_path):
    seen = []

    class Hook:
        def on_epoch_end(self, epoch, row):
            seen.append((epoch, (tmp_path / "h" / "last.safetensors").exists(), row["epoch"]))
            if epoch == 2:
                raise StopTraining

    with pytest.raises(StopTraining):
        _fit(
            synthetic_dataset,
            tmp_path / "h",
            model="logreg",
            solver="minibatch",
            epochs=5,
            batch_size=100,
            echo=False,
            hooks=[Hook()],
        )
    assert seen == [(1, True, 1), (2, True, 2)]
    assert not (tmp_path / "h" / "model.safetensors").exists()


def test_callback_list_calls_only_overridden_batch_hooks(monkeypatch):
    """The per-batch hot path skips callbacks that keep :class:`Callback`'s empty ``on_batch_end``."""
    calls = []

    class Counting(Callback):
        def on_batch_end(self, epoch, step, loss):
            calls.append(("counting", step))

    def base_hook(self, epoch, step, loss):  # stands in for the empty base method, and says when it runs
        calls.append((type(self).__name__, step))

    monkeypatch.setattr(Callback, "on_batch_end", base_hook)
    callbacks = CallbackList([Callback(), Counting()])
    callbacks.on_batch_end(1, 1, torch.tensor(0.0))
    callbacks.on_batch_end(1, 2, torch.tensor(0.0))
    assert calls == [("counting", 1), ("counting", 2)]


def test_fault_injection_is_off_without_its_variables(monkeypatch):
    for name in ("MNISTKIT_TEST_STEP_DELAY", "MNISTKIT_TEST_DIE_AT_STEP", "MNISTKIT_TEST_DIE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert faults_from_env(None) == []
    monkeypatch.setenv("MNISTKIT_TEST_STEP_DELAY", "0.01")
    (fault,) = faults_from_env(None)
    assert fault.delay == 0.01 and fault.rank == 0
