"""``mnistkit tune`` workers started together on one PostgreSQL study (optuna/optuna#1092).

Four workers whose set-up is made to start at the same instant (``MNISTKIT_TEST_SETUP_GATE``: each
process, once imported, waits for the test to open the gate) against an empty database
and against one that already has Optuna's tables; a worker joining while another is mid-trial;
a worker whose options disagree with the study; and storage errors named by their cause. The
server is a real one started by the tests (``tests/pg_server.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="mnistkit tune needs optuna: pip install 'mnistkit[tune]'")
pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg: pip install 'mnistkit[tune]'")
from helpers import free_port, run_cli  # noqa: E402
from pg_server import PASSWORD, PASSWORD_ROLE, running_postgres  # noqa: E402

from mnistkit.tuning.storage import SETUP_GATE_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPACE = "lr = { low = 1e-3, high = 1e-2, log = true }\nhidden = { layers = [1, 1], width = [8, 16] }\nepochs = 1\n"
WORKERS = 4
TRIALS = 8


@pytest.fixture(scope="module")
def pg():
    with running_postgres() as server:
        yield server


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return path


def tune_options(dataset, space, url, study="race", trials=TRIALS) -> list:
    """The options every worker of these tests is started with: the same full command, as a job array would."""
    return [
        "--dataset",
        dataset,
        "--model",
        "mlp",
        "--val-size",
        100,
        "--space",
        space,
        "--trials",
        trials,
        "--pruner",
        "none",
        "--storage",
        url,
        "--study",
        study,
        "--no-plots",
    ]


def start_worker(args: list, out: Path, env: dict | None = None) -> subprocess.Popen:
    """``mnistkit tune ARGS --out OUT --json`` in its own process; stdout and stderr kept apart."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mnistkit", "tune", *map(str, args), "--out", str(out), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_together(args: list, tmp_path: Path) -> list[subprocess.Popen]:
    """:data:`WORKERS` workers launched within 100 ms; once all have imported, their set-up is
    released at one instant (each polls the gate file every 2 ms)."""
    gate = tmp_path / "gate"
    started = time.monotonic()
    procs = [start_worker(args, tmp_path / f"w{i}", {SETUP_GATE_ENV: str(gate)}) for i in range(WORKERS)]
    assert time.monotonic() - started < 0.1
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("gate.*"))) < WORKERS and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a worker exited before its set-up"
        time.sleep(0.01)
    gate.touch()
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        results.append((p.returncode, out, err))
    return results


def check_study(url: str, study: str, results, tmp_path: Path, workers: int = WORKERS) -> list:
    """Every worker exited 0; the study has its trials, from these workers, each number once; every
    worker's best.json is the database's best trial. Returns the study's trials."""
    for code, _, err in results:
        assert code == 0 and err == "", err
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    states = [t.state.name for t in trials]
    # workers that look at the count at once may each start the last trial: up to workers - 1 more
    assert TRIALS <= len(trials) < TRIALS + workers and set(states) == {"COMPLETE"}, states
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    best = max(trials, key=lambda t: (t.value, -t.number))
    for i, (_, out, _) in enumerate(results[:workers]):
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["counts"] == {"COMPLETE": len(trials)}
        assert summary["best"]["number"] == best.number and summary["best"]["val_accuracy"] == best.value
        assert json.loads((tmp_path / f"w{i}" / "best.json").read_text()) == best.user_attrs["config"]
    return trials


@pytest.mark.slow
@pytest.mark.parametrize("tables", ["empty database", "tables already made"])
def test_four_workers_started_together(pg, synthetic_dataset, space, tmp_path, tables):
    url = pg.create_database(f"race_{tables[0]}_{os.getpid()}")
    if tables == "tables already made":
        optuna.storages.RDBStorage(url).engine.dispose()
    procs = start_together(tune_options(synthetic_dataset, space, url), tmp_path)
    trials = check_study(url, "race", finish(procs), tmp_path)
    # every worker got to run trials or at least joined; the study was created once: one set of
    # stored settings, and the presets (none for this space) queued once
    pids = {str(p.pid) for p in procs}
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials} <= pids
    assert not [t for t in trials if "preset" in t.user_attrs]
    assert len(optuna.get_all_study_summaries(url)) == 1


@pytest.mark.slow
def test_a_worker_joins_while_another_is_mid_trial(pg, synthetic_dataset, space, tmp_path):
    url = pg.create_database("midtrial")
    options = tune_options(synthetic_dataset, space, url, study="mid")
    slow = {"MNISTKIT_TEST_STEP_DELAY": "0.05"}  # about a second per trial: time to join mid-trial
    first = start_worker(options, tmp_path / "w0", slow)
    storage = optuna.storages.RDBStorage(url)
    deadline = time.monotonic() + 120
    while True:
        try:
            running = optuna.load_study(study_name="mid", storage=storage).get_trials(
                states=(optuna.trial.TrialState.RUNNING,)
            )
        except KeyError:  # the study is not made yet
            running = []
        if running or first.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert running, "the first worker never ran a trial"
    second = start_worker(options, tmp_path / "w1", slow)
    # the same study with an option that disagrees: one line naming it, nothing run
    clash = start_worker([*options, "--weight-decay", 0.5], tmp_path / "clash")
    code, _, err = finish([clash])[0]
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "study 'mid' already tunes with weight_decay=0.0" in err
    trials = check_study(url, "mid", finish([first, second]), tmp_path, workers=2)
    assert any(t.user_attrs["worker"].endswith(f":{second.pid}") for t in trials)
    storage.engine.dispose()


# ----------------------------------------------------------------------------- errors by cause


def _tune_error(url: str, tmp_path: Path, capsys) -> str:
    code, out, err = run_cli(["tune", "--storage", url, "--out", tmp_path / "o", "--trials", 1], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert PASSWORD not in out + err
    return err


def test_storage_errors_name_their_cause(pg, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    pg.sql("CREATE ROLE bob LOGIN")  # may connect, but not create tables in a database it does not own
    err = _tune_error(pg.url(user=PASSWORD_ROLE, password="wrong-" + PASSWORD), tmp_path, capsys)
    assert f"authentication failed for {PASSWORD_ROLE}" in err and "cannot connect" not in err
    assert f"{PASSWORD_ROLE}:***@" in err and "PGPASSWORD" in err
    err = _tune_error(pg.url(user=PASSWORD_ROLE), tmp_path, capsys)  # no password at all
    assert f"authentication failed for {PASSWORD_ROLE}" in err
    err = _tune_error(pg.url("nosuch"), tmp_path, capsys)
    assert "database 'nosuch' does not exist on the server" in err and "createdb nosuch" in err
    err = _tune_error(pg.url(user="bob"), tmp_path, capsys)
    assert "permission denied: bob may not create or change Optuna's tables in 'optuna'" in err
    closed = pg.url().replace(f":{pg.port}/", f":{free_port()}/")
    err = _tune_error(closed, tmp_path, capsys)
    assert "cannot connect to the database server" in err


@pytest.mark.slow
def test_pgpassword_gives_the_password(pg, synthetic_dataset, space, tmp_path, capsys, monkeypatch):
    """The documented way: the URL has no password, PGPASSWORD has it; nothing written shows it."""
    pg.create_database("alice_db", owner=PASSWORD_ROLE)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    url = pg.url("alice_db", user=PASSWORD_ROLE)
    args = ["tune", *tune_options(synthetic_dataset, space, url, trials=1), "--out", tmp_path / "o"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"in {url}:" in out


def test_tables_of_another_optuna_version_are_named(pg, tmp_path, capsys):
    url = pg.create_database("old_tables")
    optuna.storages.RDBStorage(url).engine.dispose()
    pg.sql("UPDATE alembic_version SET version_num = 'v1.2.0.a'", database="old_tables")
    err = _tune_error(url, tmp_path, capsys)
    assert "the tables were made by another Optuna version" in err and "optuna storage upgrade" in err


class _UniqueViolation(Exception):
    sqlstate = "23505"  # what psycopg reports when two first runs create the same type or row


def test_set_up_is_retried_after_a_concurrent_duplicate(tmp_path, monkeypatch):
    """Where the lock is not enough (an older worker beside new ones), a duplicate error is retried."""
    from sqlalchemy.exc import IntegrityError

    from mnistkit.errors import ConfigError
    from mnistkit.tuning import storage

    monkeypatch.setattr(storage.random, "uniform", lambda a, b: 0.0)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    calls = []

    def set_up(fail_times):
        def run():
            calls.append(1)
            if len(calls) <= fail_times:
                raise IntegrityError("INSERT INTO version_info", {}, _UniqueViolation("duplicate key value"))
            return "joined"

        return run

    assert storage.set_up_storage(url, tmp_path, set_up(2)) == "joined" and len(calls) == 3
    calls.clear()
    with pytest.raises(ConfigError, match=r"another worker kept creating the same tables .*; start this worker again"):
        storage.set_up_storage(url, tmp_path, set_up(99))
    assert len(calls) == storage.SETUP_ATTEMPTS
