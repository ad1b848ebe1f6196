"""Secrets in a storage URL never leave it, and a malformed URL is one line (``mnistkit tune --storage``).

Through the real CLI in a subprocess: exit 2 and one line on stderr for a bad URL, no traceback,
and the password absent from stdout, stderr and every file the command wrote. The successful
run is against a real PostgreSQL server started by the test (``tests/pg_server.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from mnistkit.tuning.storage import mask_url

REPO = Path(__file__).resolve().parents[1]
SECRET = "S3cret-9f4e7a"


def run_tune(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``mnistkit tune ARGS`` in a subprocess whose working folder is ``cwd`` (so stray files land there)."""
    return subprocess.run(
        [sys.executable, "-m", "mnistkit", "tune", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def files_containing(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"postgresql://alice:{SECRET}@db/optuna", "postgresql://alice:***@db/optuna"),
        (f"postgresql://alice@db/optuna?password={SECRET}", "postgresql://alice@db/optuna?password=***"),
        (
            f"postgresql://alice@db/optuna?sslmode=require&sslpassword={SECRET}&passfile=/home/a/.pgpass",
            "postgresql://alice@db/optuna?sslmode=require&sslpassword=***&passfile=/home/a/.pgpass",
        ),
        (f"postgresql://alice@db/optuna?PASS%57ORD={SECRET}", "postgresql://alice@db/optuna?PASS%57ORD=***"),
        (f"mysql+pymysql://bob@db/optuna?passwd={SECRET}", "mysql+pymysql://bob@db/optuna?passwd=***"),
        # an '@' in an unencoded password: masked up to the last '@'
        (f"postgresql://alice:{SECRET}@x@db/optuna", "postgresql://alice:***@db/optuna"),
        (f"postgresql+psycopg://u:{SECRET}@[::1/db", "postgresql+psycopg://u:***@[::1/db"),
        ("postgresql://alice@db:5432/optuna?sslmode=require", "postgresql://alice@db:5432/optuna?sslmode=require"),
        ("runs/tune/study.journal", "runs/tune/study.journal"),
    ],
)
def test_every_form_of_password_is_masked(url, shown):
    assert mask_url(url) == shown


def test_passwords_quoted_in_messages_are_masked():
    message = f"connection to 'postgresql://a:{SECRET}@h/d' failed; host=h password={SECRET} passfile=/p"
    assert mask_url(message) == "connection to 'postgresql://a:***@h/d' failed; host=h password=*** passfile=/p"
    # a driver quoting the password out of its URL: masked because the URL is known
    url = f"postgresql://a@h/d?password={SECRET}"
    assert mask_url(f"bad value {SECRET!r} for host", url) == "bad value '***' for host"


def test_issue_row_17_malformed_ipv6_url_is_one_line(tmp_path):
    """Was ``internal error: ValueError: Invalid IPv6 URL``, exit 1."""
    result = run_tune(["--storage", f"postgresql+psycopg://u:{SECRET}@[::1/db", "--out", tmp_path / "out"], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "mnistkit: error: --storage postgresql+psycopg://u:***@[::1/db: malformed host: an IPv6 address needs "
        "both brackets (postgresql://USER@[::1]:5432/DATABASE)\n"
    )
    assert SECRET not in result.stdout and not files_containing(tmp_path, SECRET)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql+psycopg://u:p@[::1/db", "malformed host: an IPv6 address needs both brackets"),
        (f"postgresql://u:{SECRET}@host:port/db", "not a valid database URL"),
        (f"postgresql://u:{SECRET}@ho@st/db?password={SECRET}", "the host part holds an '@'"),
        (f"redis://u:{SECRET}@host/0", "unknown scheme 'redis'"),
    ],
)
def test_a_malformed_storage_url_is_one_line_without_its_password(url, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["tune", "--storage", url, "--trials", 1, "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("mnistkit: error: --storage ") and expected in err and "u:***@" in err
    assert SECRET not in out + err and not files_containing(tmp_path, SECRET)


def test_an_unreachable_server_does_not_print_the_password(tmp_path):
    url = f"postgresql://alice@127.0.0.1:1/optuna?password={SECRET}"
    result = run_tune(["--storage", url, "--trials", 1, "--out", tmp_path / "out"], tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "postgresql://alice@127.0.0.1:1/optuna?password=***: cannot connect" in result.stderr
    assert SECRET not in result.stdout + result.stderr and not files_containing(tmp_path, SECRET)


def test_help_sends_passwords_to_pgpassword_not_the_command_line(tmp_path):
    result = run_tune(["--help"], tmp_path)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0 and "PGPASSWORD" in text and "~/.pgpass" in text
    assert "USER:PASS@" not in text


@pytest.mark.slow
def test_a_password_in_the_url_is_in_no_output_of_a_real_study(synthetic_dataset, tmp_path):
    """Issue row 11: ``?password=`` was printed and saved in summary.json and report.html."""
    pytest.importorskip("optuna", reason="mnistkit tune needs optuna: pip install 'mnistkit[tune]'")
    pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg: pip install 'mnistkit[tune]'")
    from pg_server import PASSWORD, PASSWORD_ROLE, running_postgres

    space = tmp_path / "space.toml"
    space.write_text("lr = { low = 1e-3, high = 1e-2, log = true }\nhidden = { layers = [1, 1], width = [8, 16] }\n")
    with running_postgres() as pg:
        pg.create_database("secrets", owner=PASSWORD_ROLE)
        url = f"{pg.url('secrets', user=PASSWORD_ROLE)}?password={PASSWORD}"
        out = tmp_path / "out"
        args = ["--dataset", synthetic_dataset, "--model", "mlp", "--val-size", 100, "--space", space]
        args += ["--epochs", 1, "--trials", 2, "--storage", url, "--study", "s", "--out", out]
        result = run_tune(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "?password=***" in result.stdout and (out / "summary.json").is_file() and (out / "report.html").is_file()
    assert PASSWORD not in result.stdout + result.stderr
    assert not files_containing(tmp_path, PASSWORD)
