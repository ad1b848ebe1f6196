"""Runs that survive kills, full disks and bad files.

- a training run SIGKILLed mid-epoch resumes to bit-identical final weights;
- a download SIGKILLed mid-transfer leaves nothing under the final name, and a rerun completes;
- a full disk or read-only run directory at checkpoint time is one line and exit 2, and the
  previous checkpoint stays intact and loadable;
- bad checkpoint files are refused by ``mnistkit evaluate`` with one line and exit 2, and
  nothing is ever unpickled.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import NOBODY, child_env, open_to_all, run_cli, unprivileged, wait_for
from synthetic import emnist_members, make_pattern_dataset, write_zip

from mnistkit.checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from mnistkit.data.spec import DIGITS
from mnistkit.errors import CheckpointError
from mnistkit.models import build_model

_REAL_REPLACE = os.replace
TRAIN = [
    "--model",
    "mlp",
    "--hidden",
    "16",
    "--batch-size",
    "16",
    "--device",
    "cpu",
    "--no-amp",
    "--log-every",
    "0",
    "-q",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_pattern_dataset(tmp_path_factory.mktemp("patterns"), n_train=480, n_test=100)


def spawn(args: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnistkit", *map(str, args)],
        env=child_env(**env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ----------------------------------------------------------------------------- kill -9 mid-epoch


@pytest.mark.timeout(120)
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(data, tmp_path):
    args = ["train", "--dataset", data, *TRAIN, "--epochs", "3", "--deterministic"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    reference = spawn([*args, "--out", clean])
    # 30 steps per epoch, each slowed by 0.05 s: epoch 2 lasts at least 1.5 s of wall time however busy the
    # machine, so a kill 0.2 s after epoch 1's line lands inside it
    victim = spawn([*args, "--out", killed], MNISTKIT_TEST_STEP_DELAY="0.05")
    metrics = killed / "metrics.jsonl"
    wait_for(
        lambda: (metrics.exists() and metrics.read_text().count("\n") >= 1) or victim.poll() is not None,
        90,
        "the first epoch",
    )
    time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert metrics.read_text().count("\n") == 1, "the kill did not land in epoch 2"
    assert not (killed / "model.safetensors").exists()
    assert load_tensors(killed / "last.safetensors")[1]["progress"]["epoch"] == 1

    out, err = spawn(["train", "--resume", killed, "-q"]).communicate(timeout=90)
    assert "Accuracy of the model" in out, err
    assert reference.wait(timeout=90) == 0, reference.stderr.read()
    resumed, uninterrupted = load_tensors(killed / "model.safetensors")[0], load_tensors(clean / "model.safetensors")[0]
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        assert torch.equal(resumed[k], uninterrupted[k]), k


# ----------------------------------------------------------------------------- kill -9 mid-download


class SlowHandler(BaseHTTPRequestHandler):
    """Serves ``gzip.zip`` in 32 KiB chunks, pausing between them while ``server.slow`` is set."""

    def do_GET(self):
        body = self.server.body
        if not self.path.endswith("/gzip.zip"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(0, len(body), 1 << 15):
                self.wfile.write(body[i : i + (1 << 15)])
                if self.server.slow:
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.mark.timeout(90)
def test_sigkill_mid_download_leaves_no_file_and_a_rerun_completes(tmp_path):
    body = write_zip(tmp_path / "src" / "gzip.zip", emnist_members(splits=("letters",)), padding=2 << 20).read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    httpd.body, httpd.slow = body, True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        env = {"MNISTKIT_MIRRORS": f"http://127.0.0.1:{httpd.server_address[1]}/", "MNISTKIT_DATA": ""}
        dest = tmp_path / "data"
        folder = dest / "EMNIST" / "raw"
        fetch = ["data", "fetch", "emnist-letters", "--data-dir", dest]
        proc = spawn(fetch, **env)
        parts = lambda: [p for p in folder.glob(".*.part") if p.stat().st_size > 0] if folder.exists() else []  # noqa: E731
        wait_for(lambda: parts() or proc.poll() is not None, 60, "the download to start")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        partial = parts()
        assert partial and partial[0].stat().st_size < len(body)  # it really was mid-transfer
        assert not (folder / "gzip.zip").exists()
        httpd.slow = False
        out, err = spawn(fetch, **env).communicate(timeout=60)
        assert "files are in" in out, err
        assert (folder / "gzip.zip").read_bytes() == body
    finally:
        httpd.shutdown()
        httpd.server_close()


# ----------------------------------------------------------------------------- full / read-only disk


def fail_on(monkeypatch, target: str, nth: int, err: int, via: str = "replace") -> None:
    """Make the ``nth`` atomic write of ``target`` fail with ``err`` (in os.replace or tempfile.mkstemp)."""
    real = {"replace": os.replace, "mkstemp": tempfile.mkstemp}[via]
    seen = [0]

    def replace(src, dst, *a, **k):
        if Path(dst).name == target:
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(err, os.strerror(err))
        return real(src, dst, *a, **k)

    def mkstemp(*a, prefix=None, **k):
        if prefix == f".{target}.":
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(err, os.strerror(err), k.get("dir"))
        return real(*a, prefix=prefix, **k)

    if via == "replace":
        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.timeout(60)
def test_full_disk_at_the_epoch_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fail_on(monkeypatch, "last.safetensors", 2, errno.ENOSPC)
    code, _, err = run_cli(["train", "--dataset", data, *TRAIN, "--epochs", "2", "--out", run], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in err and "previous file there is unchanged" in err
    assert load_tensors(run / "last.safetensors")[1]["progress"]["epoch"] == 1  # intact and loadable
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(os, "replace", _REAL_REPLACE)
    assert run_cli(["train", "--resume", run], capsys)[0] == 0  # space freed: finish it
    assert load_checkpoint(run / "model.safetensors").meta["metrics"]["epochs_run"] == 2


@pytest.mark.timeout(60)
def test_read_only_run_dir_at_the_final_checkpoint(data, tmp_path, monkeypatch, capsys):
    """A read-only file system (EROFS, which binds root too) is simulated at mkstemp."""
    run = tmp_path / "run"
    fail_on(monkeypatch, "model.safetensors", 1, errno.EROFS, via="mkstemp")
    code, _, err = run_cli(["train", "--dataset", data, *TRAIN, "--epochs", "1", "--out", run], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in err and "model.safetensors" in err
    assert load_tensors(run / "last.safetensors")[1]["progress"]["epoch"] == 1
    assert not (run / "model.safetensors").exists()
    code, _, err = run_cli(["evaluate", run], capsys)
    assert code == 2 and "without model.safetensors; is the run finished?" in err


@pytest.mark.timeout(60)
def test_chmod_read_only_run_dir(capsys):
    """A finished one-epoch run whose final checkpoint is gone: resuming only has to write it, into a
    folder its owner made read-only. Root ignores permissions (and CI runs as root), so there the run
    belongs to ``nobody`` and the resume runs as ``nobody``."""
    import mnistkit.training  # noqa: F401  (imported before dropping privileges)

    root = Path(tempfile.mkdtemp(prefix="mnistkit-ro-"))  # world-traversable, unlike pytest's tmp
    try:
        data, run = make_pattern_dataset(root / "data", n_train=480, n_test=100), root / "run"
        assert run_cli(["train", "--dataset", data, *TRAIN, "--epochs", "1", "--out", run], capsys)[0] == 0
        (run / "model.safetensors").unlink()
        open_to_all(root, owner=NOBODY if os.geteuid() == 0 else None)
        run.chmod(0o555)
        with unprivileged():
            code, _, err = run_cli(["train", "--resume", run], capsys)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Permission denied" in err and str(run) in err, err
        assert load_tensors(run / "last.safetensors")[1]["progress"]["epoch"] == 1
        assert not (run / "model.safetensors").exists()
    finally:
        shutil.rmtree(root)


# ----------------------------------------------------------------------------- bad checkpoint files

META = {"dataset": "mnist", "norm": {"mean": 0.5, "std": 0.5}, "class_names": list(DIGITS)}


def good_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, build_model("mlp", hidden=[8]), META)


def with_meta(path: Path, **changes) -> Path:
    """A checkpoint whose metadata is edited and whose digest is recomputed (so only the edit is wrong)."""
    tensors, meta = load_tensors(good_checkpoint(path.with_suffix(".src.safetensors")))
    meta.update(changes)
    meta.pop("format")
    return save_tensors(path, tensors, meta)


class Evil:
    """Unpickling this would create a marker file: proof that nothing is unpickled."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the phrase its refusal must contain)."""
    good = good_checkpoint(tmp / "good.safetensors").read_bytes()
    files: dict[str, tuple[bytes | Path, str]] = {
        "truncated half": (good[: len(good) // 2], "is corrupt (truncated)"),
        "truncated to 5 bytes": (good[:5], "file too short"),
        "empty": (b"", "file too short"),
        "flipped byte in the weights": (good[:-3] + bytes([good[-3] ^ 0x40]) + good[-2:], "digest does not match"),
        "flipped byte in the header": (good[:40] + bytes([good[40] ^ 0x01]) + good[41:], "checkpoint"),
        "text file": (b"hello, I am not a checkpoint\n" * 10, "not a safetensors checkpoint"),
    }
    out = {}
    for name, (blob, phrase) in files.items():
        p = tmp / f"{name.replace(' ', '_')}.safetensors"
        p.write_bytes(blob)
        out[name] = (p, phrase)
    out["another model's weights"] = (
        with_meta(tmp / "other.safetensors", model="logreg", model_options={}),
        "does not fit model 'logreg'",
    )
    out["unknown model"] = (with_meta(tmp / "unknown.safetensors", model="resnet-9000"), "unknown model 'resnet-9000'")
    out["absurd options"] = (
        with_meta(tmp / "absurd.safetensors", model_options={"hidden": [10**9]}),
        "hidden sizes must be positive whole numbers, at most 8,192",  # refused before any weight is made
    )
    out["negative width"] = (
        with_meta(tmp / "negative.safetensors", model_options={"hidden": [-5]}),
        "cannot be rebuilt",
    )
    out["malformed metadata"] = (
        with_meta(tmp / "malformed.safetensors", class_names="0123456789"),
        "bad metadata field 'class_names'",
    )
    out["missing metadata field"] = (_without(tmp / "nofield.safetensors", "class_names"), "lacks metadata field")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp / "plain.safetensors"))
    out["plain safetensors"] = (tmp / "plain.safetensors", "not an mnistkit checkpoint")
    torch.save(build_model("mlp", hidden=[8]).state_dict(), tmp / "zip-pickle.safetensors")
    out["torch.save renamed .safetensors"] = (tmp / "zip-pickle.safetensors", "pickle/torch.save file")
    torch.save(build_model("mlp", hidden=[8]).state_dict(), tmp / "model.pt")
    out[".pt file"] = (tmp / "model.pt", "never loads")
    Evil.marker = str(tmp / "UNPICKLED")
    (tmp / "evil.safetensors").write_bytes(pickle.dumps(Evil()))
    out["malicious pickle"] = (tmp / "evil.safetensors", "never loads")
    out["missing file"] = (tmp / "nope.safetensors", "checkpoint not found")
    (tmp / "unfinished").mkdir()
    out["run dir without model"] = (tmp / "unfinished", "is the run finished?")
    return out


def _without(path: Path, field: str) -> Path:
    tensors, meta = load_tensors(good_checkpoint(path.with_suffix(".src.safetensors")))
    meta.pop(field)
    meta.pop("format")
    return save_tensors(path, tensors, meta)


@pytest.mark.timeout(60)
def test_every_bad_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    cases = bad_files(tmp_path)
    for name, (path, phrase) in cases.items():
        code, out, err = run_cli(["evaluate", path, "--device", "cpu"], capsys)
        assert code == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mnistkit: error: "), (name, err)
        assert phrase in lines[0], (name, lines[0])
        assert out == "", name
    assert not (tmp_path / "UNPICKLED").exists()


@pytest.mark.timeout(60)
def test_malicious_pickle_through_the_real_cli(tmp_path):
    Evil.marker = str(tmp_path / "UNPICKLED")
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps(Evil()))
    out, err = spawn(["evaluate", evil]).communicate(timeout=60)
    assert err.strip().count("\n") == 0 and "never loads" in err and out == ""
    assert not (tmp_path / "UNPICKLED").exists()


def test_loader_raises_checkpoint_error_not_anything_else(tmp_path):
    with pytest.raises(CheckpointError, match="unknown model 'resnet-9000'"):
        load_checkpoint(with_meta(tmp_path / "u.safetensors", model="resnet-9000"))
