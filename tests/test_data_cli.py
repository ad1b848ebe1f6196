"""``mnistkit data list|fetch|info``: output, and errors as one stderr line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnistkit.cli import main
from mnistkit.data import write_idx
from mnistkit.data.dataset_registry import IDX_FILES

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNISTKIT_DATA", raising=False)
    monkeypatch.setenv("MNISTKIT_MIRRORS", "http://127.0.0.1:9/")  # discard port: refused, never the internet
    monkeypatch.setenv("MNISTKIT_DOWNLOAD_TIMEOUT", "3")
    return tmp_path


def fake_mnist(root: Path) -> Path:
    folder = root / "MNIST" / "raw"
    write_idx(folder / IDX_FILES[0], torch.zeros(3, 28, 28, dtype=torch.uint8))
    write_idx(folder / IDX_FILES[1], torch.zeros(3, dtype=torch.uint8))
    write_idx(folder / IDX_FILES[2], torch.zeros(2, 28, 28, dtype=torch.uint8))
    write_idx(folder / IDX_FILES[3], torch.zeros(2, dtype=torch.uint8))
    return folder


def test_list(env, capsys):
    folder = fake_mnist(env / "mine")
    code, out, err = run(["data", "list", "--data-dir", str(env / "mine")], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "classes", "train/test"]
    mnist = next(line for line in lines if line.startswith("mnist "))
    assert "60000/10000" in mnist and mnist.endswith(str(folder))
    assert next(line for line in lines if line.startswith("kmnist")).endswith(" no")


def test_info_json_and_text(env, capsys):
    folder = fake_mnist(env / "mine")
    code, out, _ = run(["data", "info", "mnist", "--data-dir", str(env / "mine"), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["found"] and info["location"] == str(folder)
    assert info["files"][IDX_FILES[0]]["md5"] == "mismatch"
    code, out, _ = run(["data", "info", "kmnist"], capsys)
    assert code == 0 and "not found; searched:" in out and "mnistkit data fetch kmnist" in out
    assert "o, ki, su, tsu" in out


def test_info_on_own_idx_folder(env, capsys):
    folder = fake_mnist(env / "mine")
    code, out, _ = run(["data", "info", str(folder), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["sizes"] == {"train": 3, "test": 2} and info["location"] == str(folder)
    code, out, _ = run(["data", "fetch", str(folder)], capsys)
    assert code == 0 and str(folder) in out


def test_fetch_found_locally(env, capsys):
    folder = fake_mnist(env / "mine")
    code, out, _ = run(["data", "fetch", "mnist", "--data-dir", str(env / "mine")], capsys)
    assert code == 0 and out.strip() == f"mnist: files are in {folder}"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["data", "info", "foo"], "unknown dataset 'foo'; choose one of: mnist, fashion-mnist"),
        (["data", "fetch", "nope"], "unknown dataset 'nope'"),
        (["data", "fetch", "kmnist"], "dataset 'kmnist' not found; looked in:"),
    ],
)
def test_errors_are_one_line_exit_2(env, capsys, argv, needle):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("mnistkit: error: ") and needle in err


def test_fetch_offline_names_mirror_and_fix(env, capsys):
    code, _, err = run(["data", "fetch", "kmnist", "--data-dir", str(env / "d")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz: unreachable" in err
    assert f"{env / 'd'}/KMNIST/raw" in err


def test_entry_point_subprocess(env):
    exe = Path(sys.executable).with_name("mnistkit")
    done = subprocess.run([str(exe), "data", "info", "foo"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown dataset 'foo'" in done.stderr
