"""Which solver a training run uses (`--solver`), and the config's rules for it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mnistkit.config import TrainConfig
from mnistkit.errors import ConfigError
from mnistkit.training import lbfgs_trainer as lbfgs
from mnistkit.training.callbacks import CallbackList
from mnistkit.training.runlog import RunLog
from mnistkit.training.state import TrainState


@pytest.mark.parametrize("model", ["logreg", "binary-logreg"])
def test_auto_fits_logistic_regression_by_lbfgs(model):
    assert lbfgs.wanted(TrainConfig(model=model)) and lbfgs.wanted(TrainConfig(model=model, solver="lbfgs"))


def test_auto_trains_other_models_and_asked_for_minibatches_with_minibatches():
    assert not lbfgs.wanted(TrainConfig(model="mlp"))
    assert not lbfgs.wanted(TrainConfig(model="logreg", solver="minibatch"))
    assert not lbfgs.wanted(TrainConfig(model="logreg", augment=True))  # only the epoch loop augments


def test_under_torchrun_the_epoch_loop_trains_and_the_log_says_so(capsys):
    calls = []
    session = SimpleNamespace(dist=object())  # a distributed context: torchrun
    callbacks = CallbackList(log=RunLog(None, echo=True, progress=False))
    lbfgs.train(TrainConfig(model="logreg"), session, TrainState(), callbacks, fallback=lambda *a: calls.append(a))
    assert len(calls) == 1 and "under torchrun" in capsys.readouterr().out


def test_config_refuses_lbfgs_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="unknown solver 'newton'; choose one of: auto, lbfgs, minibatch"):
        TrainConfig(solver="newton")
    with pytest.raises(ConfigError, match="--solver lbfgs fits logistic regression only .*model 'cnn' trains with"):
        TrainConfig(model="cnn", solver="lbfgs")
    with pytest.raises(ConfigError, match="--label-smoothing needs --solver minibatch"):
        TrainConfig(model="logreg", solver="lbfgs", label_smoothing=0.1)


def test_penalty_is_sklearns_c_1_unless_weight_decay_is_set():
    assert lbfgs.penalty_strength(TrainConfig(model="logreg"), 60_000) == pytest.approx(1 / 60_000)
    assert lbfgs.penalty_strength(TrainConfig(model="logreg", weight_decay=1e-3), 60_000) == 1e-3


@pytest.mark.parametrize("model", ["logreg", "binary-logreg"])
def test_lbfgs_train_scores_are_what_evaluation_says_of_the_training_split(model):
    """The L-BFGS run logs its training loss and accuracy by the rule evaluation uses (the same
    loss, predictions from the probabilities), on normalised inputs."""
    import torch

    from mnistkit.evaluation import evaluate
    from mnistkit.models import build_model
    from mnistkit.preprocess import Normalization, normalize

    torch.manual_seed(0)
    net = build_model(model).eval()
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 2 if model == "binary-logreg" else 10, (300,))
    norm = Normalization(0.1307, 0.3081)
    names = ["0", "1"] if model == "binary-logreg" else [str(i) for i in range(10)]
    want = evaluate(net, images, labels, norm, names, task=net.mnistkit_task)
    got = lbfgs._train_scores(net, normalize(images, norm).view(300, -1), labels, batch_size=128)
    assert got["train_loss"] == pytest.approx(want.loss, rel=1e-5)
    assert got["train_accuracy"] == pytest.approx(want.accuracy, abs=0.005)  # EvalResult rounds to 0.01
