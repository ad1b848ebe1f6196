"""Two ``mnistkit tune`` workers on one study in a real PostgreSQL server; one is SIGKILLed mid-trial.

The server is started by the test (``tests/pg_server.py``); it skips, saying why, where the
server binaries are missing (``make system-deps`` installs them on Debian as root).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="mnistkit tune needs optuna: pip install 'mnistkit[tune]'")
pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg: pip install 'mnistkit[tune]'")
from pg_server import running_postgres  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPACE = "lr = { low = 1e-3, high = 1e-2, log = true }\nhidden = { layers = [1, 2], width = [8, 32] }\nepochs = 12\n"


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL server on 127.0.0.1 with an empty database; yields its URL, then stops it."""
    with running_postgres() as server:
        yield server.url()


def _worker(args: list, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "tune", *map(str, args)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_one_killed_mid_trial(postgres_url, synthetic_dataset, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    common = ["--storage", postgres_url, "--study", "pg", "--heartbeat", 1, "--no-plots"]
    a = _worker(
        [
            "--dataset",
            synthetic_dataset,
            "--model",
            "mlp",
            "--val-size",
            200,
            "--space",
            space,
            "--trials",
            6,
            "--pruner",
            "none",
            "--out",
            tmp_path / "a",
            "--quiet",
            *common,
        ],
        tmp_path / "a.log",
    )
    storage = optuna.storages.RDBStorage(postgres_url)

    def study():
        try:
            return optuna.load_study(study_name="pg", storage=storage)
        except KeyError:
            return None

    _wait_for(lambda: study() is not None and study().user_attrs.get("mnistkit_settings"), 60, "the study")
    # the second worker joins with only the storage and the study: the settings come from the database
    b = _worker(["--out", tmp_path / "b", "--json", *common], tmp_path / "b.log")
    try:
        victim = _wait_for(
            lambda: [
                t
                for t in study().get_trials(states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker", "").endswith(f":{a.pid}") and t.intermediate_values
            ],
            60,  # training, past its first epoch
            "a running trial of worker A",
        )[0]
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        assert b.wait(timeout=120) == 0, (tmp_path / "b.log").read_text()
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()

    trials = study().get_trials()
    by_state: dict[str, list] = {}
    for t in trials:
        by_state.setdefault(t.state.name, []).append(t)
    # the killed trial was failed (its heartbeat stopped) and run again with the same parameters
    assert [t.number for t in by_state["FAIL"]] == [victim.number]
    failed = by_state["FAIL"][0]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == failed.params
    # every requested trial ran exactly once or was retried; nothing else is left over
    assert len(by_state["COMPLETE"]) == 6 and set(by_state) == {"COMPLETE", "FAIL"}
    workers = {t.user_attrs["worker"] for t in by_state["COMPLETE"]}
    assert any(w.endswith(f":{b.pid}") for w in workers)
    # best.json is the best trial in the database, and that trial was scored on the test set
    summary = json.loads((tmp_path / "b.log").read_text().strip().splitlines()[-1])
    best = max(by_state["COMPLETE"], key=lambda t: (t.value, -t.number))
    assert summary["best"]["number"] == best.number and summary["best"]["val_accuracy"] == best.value
    assert json.loads((tmp_path / "b" / "best.json").read_text()) == best.user_attrs["config"]
    assert (tmp_path / "b" / "best-run" / "model.safetensors").is_file()
