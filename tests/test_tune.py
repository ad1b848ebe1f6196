"""``mnistkit tune``: search spaces and their errors, a study end to end on synthetic data (outputs,
reproducing the best trial from best.json, resuming, Ctrl-C), pruning, and local workers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mnistkit.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="mnistkit tune needs optuna: pip install 'mnistkit[tune]'")

from helpers import run_cli  # noqa: E402

from mnistkit.tuning.space import default_space, parse_space, read_space_file  # noqa: E402

#: A tiny space: trials of a second or two on the synthetic data.
TINY_SPACE = """
lr = { low = 1e-3, high = 1e-2, log = true }
hidden = { layers = [1, 2], width = [8, 32] }
batch_size = { choices = [32, 64] }
epochs = 2
"""


@pytest.fixture
def tiny_space(tmp_path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(TINY_SPACE)
    return path


def tune_args(dataset, out, space, trials=3):
    return [
        "tune",
        "--dataset",
        dataset,
        "--model",
        "mlp",
        "--val-size",
        200,
        "--space",
        space,
        "--trials",
        trials,
        "--out",
        out,
        "--deterministic",
        "--sampler-seed",
        1,
        "--pruner",
        "none",
    ]


# ----------------------------------------------------------------------------- spaces


@pytest.mark.parametrize("model", ["logreg", "binary-logreg", "seed-mlp", "mlp", "cnn"])
def test_every_model_has_a_valid_default_space(model):
    params = {p.name: p for p in parse_space(default_space(model), model)}
    assert {"lr", "batch_size", "epochs", "weight_decay", "optimizer", "schedule", "label_smoothing"} <= set(params)
    if model in ("seed-mlp", "mlp"):
        assert params["hidden"].kind == "layers" and "activation" in params
    if model == "cnn":
        assert params["widths"].kind == "layers" and "dropout" in params


@pytest.mark.parametrize(
    "space, pattern",
    [
        (
            {"learning_rate": {"low": 1, "high": 2}},
            r"unknown option 'learning_rate' for model 'mlp'; tunable options are: epochs, batch_size, lr",
        ),
        ({"seed": 3}, r"unknown option 'seed'"),
        ({"dropout": {"low": 0.5, "high": 0.1}}, r"dropout: empty range: low 0.5 is above high 0.1"),
        ({"lr": {"low": "1e-3", "high": 0.1}}, r"lr: low must be a number, got '1e-3'"),
        ({"lr": {"low": 0, "high": 0.1, "log": True}}, r"lr: a log range needs low > 0"),
        ({"optimizer": {"choices": []}}, r"optimizer: choices must be a non-empty list"),
        ({"optimizer": {"choices": ["adam", "rmsprop"]}}, r"optimizer: unknown optimizer 'rmsprop'; choose one of"),
        ({"epochs": {"low": 1.5, "high": 3}}, r"epochs: must be whole numbers, got 1.5"),
        ({"activation": {"choices": ["relu", 3]}}, r"activation: wrong type int \(3\); expected str"),
        ({"hidden": {"layers": [0, 2], "width": [8, 16]}}, r"hidden.layers: must be >= 1, got 0"),
        ({"hidden": {"layers": [1, 2]}}, r"hidden: expected \{ layers = \[min, max\], width = \[min, max\] \}"),
        ({"lr": {"low": 1e-3, "high": 1e-2, "scale": "log"}}, r"lr: expected \{ low, high\[, log\]\[, step\] \}"),
    ],
)
def test_bad_spaces_are_named_on_one_line(space, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_space(space, "mlp")


def test_space_files_in_toml_yaml_and_json_mean_the_same(tmp_path):
    spaces = {
        "s.toml": 'lr = { low = 0.001, high = 0.01, log = true }\noptimizer = { choices = ["adam", "sgd"] }\n',
        "s.yaml": "lr: {low: 0.001, high: 0.01, log: true}\noptimizer: {choices: [adam, sgd]}\n",
        "s.json": '{"lr": {"low": 0.001, "high": 0.01, "log": true}, "optimizer": {"choices": ["adam", "sgd"]}}',
    }
    parsed = []
    for name, text in spaces.items():
        (tmp_path / name).write_text(text)
        parsed.append(parse_space(read_space_file(tmp_path / name), "mlp"))
    assert parsed[0] == parsed[1] == parsed[2]


def test_space_file_errors_on_the_cli(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = { low = 1e-3, high = \n")
    code, _, err = run_cli(["tune", "--model", "mlp", "--space", bad, "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"--space {bad}: not valid TOML" in err
    (tmp_path / "s.ini").write_text("x")
    code, _, err = run_cli(["tune", "--space", tmp_path / "s.ini", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "unknown format '.ini'; use one of .toml, .yaml, .yml, .json" in err
    code, _, err = run_cli(["tune", "--space", tmp_path / "none.json", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "none.json: no such file" in err


def test_storage_errors_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["tune", "--storage", "redis://localhost/0", "--out", tmp_path], capsys)
    assert code == 2 and "unknown scheme 'redis'" in err
    code, _, err = run_cli(["tune", "--storage", "postgresql://u:secret@127.0.0.1:1/db", "--out", tmp_path], capsys)
    assert code == 2 and "cannot connect" in err and "secret" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- a study end to end


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_tune_writes_everything_and_best_json_reproduces_the_best_trial(
    synthetic_dataset, tmp_path, tiny_space, capsys
):
    out = tmp_path / "study"
    code, stdout, err = run_cli(tune_args(synthetic_dataset, out, tiny_space) + ["--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["counts"] == {"COMPLETE": 3}
    for name in (
        "study.journal",
        "trials.csv",
        "best.json",
        "report.html",
        "summary.json",
        "best-run/model.safetensors",
        "best-run/report.html",
        "plots/history.png",
        "plots/slice.png",
        "plots/parallel.png",
        "plots/importances.png",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    best = summary["best"]
    assert best["val_accuracy"] == max(float(r["val_accuracy"]) for r in rows)
    # only the best trial was scored on the test set, and only its training state was kept
    best_dir = f"{best['number']:04d}"
    assert [p.parent.name for p in (out / "trials").glob("*/eval.json")] == [best_dir]
    assert [p.parent.name for p in (out / "trials").glob("*/last.safetensors")] == [best_dir]
    assert best["test_accuracy"] == json.loads((out / "best-run/summary.json").read_text())["test_accuracy"]
    html = (out / "report.html").read_text()
    assert "mnistkit tune: mnistkit" in html and html.count("<img") == 4 and "best.json" in html

    # best.json is a complete training config that reproduces the trial's weights exactly
    config = json.loads((out / "best.json").read_text())
    assert config["model"] == "mlp" and config["val_size"] == 200 and config["epochs"] == 2
    params = best["params"]
    assert config["model_options"]["hidden"] == [params[f"hidden_{i + 1}"] for i in range(params["hidden_layers"])]
    code, _, err = run_cli(["train", "--config", out / "best.json", "--out", tmp_path / "again", "--quiet"], capsys)
    assert code == 0, err
    a, b = _weights(out / "best-run/model.safetensors"), _weights(tmp_path / "again/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # rerunning resumes: asking for 4 trials runs one more, the first three are kept as they were
    code, stdout, err = run_cli(
        tune_args(synthetic_dataset, out, tiny_space, trials=4) + ["--json", "--no-plots"], capsys
    )
    assert code == 0, err
    again = json.loads(stdout.strip().splitlines()[-1])
    assert again["counts"] == {"COMPLETE": 4}
    assert list(csv.DictReader((out / "trials.csv").open()))[:3] == rows

    # a study remembers what it tunes: contradicting it is a one-line error
    code, _, err = run_cli(["tune", "--dataset", synthetic_dataset, "--model", "logreg", "--out", out], capsys)
    assert code == 2 and "study 'mnistkit' already tunes with model='mlp'" in err


def test_train_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "best.json"
    bad.write_text('{"model": "mlp", "learning_rate": 3}')
    code, _, err = run_cli(["train", "--config", bad], capsys)
    assert code == 2 and f"--config {bad}: unknown config keys: learning_rate" in err
    bad.write_text("[1, 2]")
    code, _, err = run_cli(["train", "--config", bad], capsys)
    assert code == 2 and "holds a JSON list, expected an object of training options" in err
    code, _, err = run_cli(["train", "--config", tmp_path / "missing.json"], capsys)
    assert code == 2 and "missing.json: no such training config" in err


def test_ctrl_c_saves_what_is_done_and_a_rerun_resumes(synthetic_dataset, tmp_path, tiny_space, capsys, monkeypatch):
    from mnistkit.tuning import study as study_module

    real = study_module.PruningHook.on_epoch_end

    def interrupt_in_trial_1(self, epoch, row):
        if self.trial.number == 1:
            raise KeyboardInterrupt
        return real(self, epoch, row)

    monkeypatch.setattr(study_module.PruningHook, "on_epoch_end", interrupt_in_trial_1)
    out = tmp_path / "study"
    code, stdout, err = run_cli(tune_args(synthetic_dataset, out, tiny_space, trials=2) + ["--no-plots"], capsys)
    assert code == 130 and "Interrupted: saving the trials done so far" in stdout
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL"]
    assert json.loads((out / "best.json").read_text())["model"] == "mlp"
    monkeypatch.setattr(study_module.PruningHook, "on_epoch_end", real)
    code, stdout, err = run_cli(
        tune_args(synthetic_dataset, out, tiny_space, trials=2) + ["--json", "--no-plots"], capsys
    )
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["counts"] == {"COMPLETE": 2, "FAIL": 1}


def test_pruned_trials_stop_early_and_keep_no_state(synthetic_dataset, tmp_path):
    """A pruner that prunes everything after the first epoch: trials end after one epoch, PRUNED."""
    from mnistkit.config import resolve_config
    from mnistkit.tuning.study import StudySettings, Worker, make_objective

    settings = StudySettings(
        resolve_config(dataset=str(synthetic_dataset), model="mlp", val_size=200, epochs=3),
        parse_space({"hidden": [16]}, "mlp"),
        trials=2,
    )
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=101.0))
    study.optimize(make_objective(settings, Worker(tmp_path)), n_trials=2)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in study.trials)
    assert not list(tmp_path.glob("trials/*/last.safetensors"))
    metrics = (tmp_path / "trials/0000/metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and json.loads(metrics[0])["val_accuracy"] is not None


def test_a_budget_too_short_for_one_trial_says_so_and_exits_2(
    synthetic_dataset, tmp_path, tiny_space, capsys, monkeypatch
):
    """The budget runs out after the first epoch of the first trial: the trial is named as cut by
    --timeout (not merely "pruned"), the end says what budget one trial needs, and the exit is 2."""
    from mnistkit.tuning import study as study_module

    calls = iter([60.0])  # time left when the trial starts; spent from then on
    monkeypatch.setattr(study_module.Worker, "time_left", lambda self: next(calls, -1.0))
    out = tmp_path / "study"
    args = tune_args(synthetic_dataset, out, tiny_space, trials=2) + ["--timeout", 60, "--no-plots"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2
    assert "trial 0 stopped by the --timeout budget after epoch 1 of 2 (" in stdout
    assert err.startswith("mnistkit: error: no trial completed: the --timeout 60 s budget ran out during trial 0")
    assert "one such trial needs about --timeout " in err and len(err.strip().splitlines()) == 1
    assert not (out / "best.json").exists()


def test_the_default_space_is_sized_to_the_budget(synthetic_dataset, tmp_path, capsys, monkeypatch):
    """With an epoch measured at 10 s, a 120 s budget leaves a trial 30 s: one epoch of 2 x 10 s (the
    margin), so the search runs one-epoch trials and completes them instead of cutting a 20-epoch one."""
    from mnistkit.tuning import budget

    monkeypatch.setattr(budget, "seconds_per_epoch", lambda base: 10.0)
    out = tmp_path / "study"
    args = ["tune", "--dataset", synthetic_dataset, "--model", "mlp", "--val-size", 200, "--trials", 1]
    code, stdout, err = run_cli(args + ["--timeout", 120, "--out", out, "--no-plots", "--sampler-seed", 1], capsys)
    assert code == 0, err
    assert (
        "Epochs searched: 1 to 1 (an epoch takes about 10.0 s here; a trial may use 25% of the 120 s budget)" in stdout
    )
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"]
    assert json.loads((out / "best.json").read_text())["epochs"] == 1


def test_epochs_for_budget_caps_only_what_does_not_fit():
    from mnistkit.tuning.budget import budget_needed, epochs_for_budget

    space = {"lr": {"low": 1e-3, "high": 1e-2}, "epochs": {"low": 5, "high": 20}}
    assert epochs_for_budget(space, epoch_seconds=1.0, timeout=600) == space  # 75 epochs would fit
    assert epochs_for_budget(space, epoch_seconds=1.0, timeout=80)["epochs"] == {"low": 5, "high": 10}
    assert epochs_for_budget(space, epoch_seconds=1.0, timeout=24)["epochs"] == {"low": 3, "high": 3}
    assert epochs_for_budget({"epochs": 4}, epoch_seconds=100.0, timeout=1) == {"epochs": 4}  # fixed: the user's
    assert budget_needed(epoch_seconds=38.0, epochs=15) == 720


def test_seconds_per_epoch_is_measured_on_this_machine(synthetic_dataset):
    from mnistkit.config import resolve_config
    from mnistkit.tuning.budget import seconds_per_epoch

    seconds = seconds_per_epoch(resolve_config(dataset=str(synthetic_dataset), model="mlp", val_size=200))
    assert 0 < seconds < 60


def test_local_workers_share_one_journal(synthetic_dataset, tmp_path, tiny_space, capsys):
    out = tmp_path / "study"
    code, stdout, err = run_cli(
        tune_args(synthetic_dataset, out, tiny_space, trials=4) + ["--workers", 2, "--json", "--no-plots"], capsys
    )
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["counts"] == {"COMPLETE": 4}
    workers = {r["user_attrs_worker"] for r in csv.DictReader((out / "trials.csv").open())}
    assert len(workers) == 2  # both processes ran trials
    assert (out / "best-run/model.safetensors").is_file()


def test_workers_checking_together_never_start_more_than_the_trials_asked(tmp_path, monkeypatch):
    """Three workers on one journal, each slowed between counting the trials and starting one (the
    window in which an unlocked pair both see 3 of 4 and both start): exactly 4 trials run."""
    import threading
    import time

    from mnistkit.config import resolve_config
    from mnistkit.tuning import study as study_module
    from mnistkit.tuning.storage import open_storage
    from mnistkit.tuning.study import StudySettings

    settings = StudySettings(resolve_config(model="mlp"), parse_space({"hidden": [16]}, "mlp"), trials=4)
    real_should_start = study_module.should_start

    def slow_should_start(study, target, worker):
        answer = real_should_start(study, target, worker)
        time.sleep(0.3)
        return answer

    def quick_objective(settings, worker):
        return lambda trial: trial.suggest_float("lr", 1e-3, 1e-2) and 90.0

    monkeypatch.setattr(study_module, "should_start", slow_should_start)
    monkeypatch.setattr(study_module, "make_objective", quick_objective)
    study_module.open_study(open_storage(None, tmp_path, 0), "race", 0, 4)

    def worker_thread(seed):
        study = study_module.open_study(open_storage(None, tmp_path, 0), "race", seed, 4)
        study_module.run_worker(study, settings, study_module.Worker(tmp_path, seed=seed))

    threads = [threading.Thread(target=worker_thread, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    final = study_module.open_study(open_storage(None, tmp_path, 0), "race", 0, 4)
    assert study_module.counts(final) == {"COMPLETE": 4}


def test_a_dead_local_workers_trial_is_failed_and_queued_again():
    """The journal has no heartbeat: the parent fails a killed child's running trial and queues a retry."""
    from mnistkit.tuning.study import fail_worker_trials

    study = optuna.create_study(direction="maximize")
    mine, other = study.ask(), study.ask()
    mine.suggest_float("lr", 1e-3, 1e-2)
    mine.set_user_attr("worker", "host:111")
    other.set_user_attr("worker", "host:222")
    assert fail_worker_trials(study, "host:111") == [mine.number]
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "FAIL", 1: "RUNNING", 2: "WAITING"}
    retry = study.trials[2]
    assert retry.params == study.trials[0].params and retry.system_attrs["failed_trial"] == 0


def test_progress_counts_trials_and_shows_the_best(capsys):
    from mnistkit.tuning.progress import TuneProgress

    study = optuna.create_study(direction="maximize")
    for value, state in ((97.0, "COMPLETE"), (98.5, "COMPLETE"), (None, "PRUNED"), (None, "FAIL")):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                value=value,
                params={},
                distributions={},
                intermediate_values={1: 90.0} if state == "PRUNED" else None,
            )
        )
    progress = TuneProgress(study, target=6, timeout=None, workers=2, live=False, echo=False)
    snap = progress.snapshot()
    assert snap["counts"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}
    assert snap["best"].value == 98.5 and snap["best"].number == 1
    with TuneProgress(study, target=6, timeout=None, workers=2, live=True, interval=60):
        pass  # the live panel, as a terminal shows it when the workers are done
    text = capsys.readouterr().out
    assert "3/6 done: 2 complete, 1 pruned, 1 failed" in text and "98.50 % validation accuracy (trial 1)" in text


def test_a_new_study_starts_from_the_presets_its_space_can_express():
    from mnistkit.config import PRESETS, resolve_config
    from mnistkit.tuning.space import preset_points

    params = parse_space(default_space("mlp"), "mlp")
    points = preset_points(params, resolve_config(model="mlp", norm="dataset", val_size=10000))
    best = PRESETS["best-mlp"]
    assert list(points) == ["best-mlp"]  # "fast" trains 2 epochs, outside the space's 5-20
    hidden, options = best["model_options"]["hidden"], best["model_options"]
    assert points["best-mlp"]["hidden_layers"] == len(hidden) and points["best-mlp"]["hidden_1"] == hidden[0]
    assert points["best-mlp"]["lr"] == best["lr"] and points["best-mlp"]["dropout"] == options["dropout"]
    # the preset normalises with the dataset's statistics: with the tutorial's norm it does not apply
    assert preset_points(params, resolve_config(model="mlp", val_size=10000)) == {}
    narrow = parse_space({"lr": {"low": 1e-4, "high": 1e-3}}, "mlp")
    assert preset_points(narrow, resolve_config(model="mlp", norm="dataset", val_size=10000)) == {}
