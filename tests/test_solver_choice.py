"""Which solver a training run uses (`--solver`), and the config's rules for it."""

from __future__ import annotations

import pytest

from mnistkit.config import TrainConfig
from mnistkit.errors import ConfigError
from mnistkit.training import lbfgs
from mnistkit.training.reporting import RunLog


def _chosen(capsys, distributed: bool = False, **kw) -> tuple[bool, str]:
    result = lbfgs.chosen(TrainConfig(**kw), distributed, RunLog(None, echo=True, progress=False))
    return result, capsys.readouterr().out


@pytest.mark.parametrize("model", ["logreg", "binary-logreg"])
def test_auto_fits_logistic_regression_by_lbfgs(capsys, model):
    assert _chosen(capsys, model=model) == (True, "")
    assert _chosen(capsys, model=model, solver="lbfgs") == (True, "")


def test_auto_trains_other_models_and_asked_for_minibatches_with_minibatches(capsys):
    assert _chosen(capsys, model="mlp") == (False, "")
    assert _chosen(capsys, model="logreg", solver="minibatch") == (False, "")


def test_torchrun_and_minibatch_only_options_fall_back_to_minibatches_and_say_so(capsys):
    chosen, out = _chosen(capsys, distributed=True, model="logreg", solver="lbfgs")
    assert not chosen and "under torchrun" in out
    chosen, out = _chosen(capsys, model="logreg", augment=True)
    assert not chosen and "Solver: minibatches (--augment needs them)" in out


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
