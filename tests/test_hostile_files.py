"""Hostile files and run folders: planted links and FIFOs, shared run folders, huge files, full disks.

Every writer of a run folder and of an output path goes through temp file + rename (a planted
link is replaced) or an ``O_NOFOLLOW`` open (the log, which grows); every reader of a run folder
takes regular files only, bounded. Each case runs the real CLI in a child process and checks the
contract of ``hostile_helpers.py``: exit 2 and one line (or the right answer), files outside the
command's own outputs byte-identical (a link's target included), and child peak RSS under 1 GB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import child_env
from hostile_helpers import META, RSS_LIMIT, TINY, assert_refused, fill, run_child, snapshot
from synthetic import make_pattern_dataset

from mnistkit.errors import ConfigError, DatasetNotFoundError
from mnistkit.fileio import NAME_MAX, atomic_write_bytes, write_new_file
from mnistkit.runs import RunDir

pytest.importorskip("matplotlib")
#: Most cases start the CLI in a child process (seconds each), so the module stays out of ``make test-fast``.
pytestmark = pytest.mark.slow

SECRET = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n"


@pytest.fixture(scope="module")
def finished_run(idx_data, tmp_path_factory) -> Path:
    """A finished run with plots, trained once in-process; tests copy it before planting anything."""
    from mnistkit.cli import main

    run = tmp_path_factory.mktemp("run") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", str(idx_data), *TINY, "--epochs", "1", "--out", str(run)])
    assert exc.value.code == 0
    assert (run / "plots" / "curves.png").is_file()
    return run


def _copy_run(run: Path, dest: Path) -> Path:
    """Every regular file of ``run`` (plots included) copied to ``dest``."""
    for p in run.rglob("*"):
        if p.is_file() and p.name != ".lock":
            (dest / p.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            (dest / p.relative_to(run)).write_bytes(p.read_bytes())
    return dest


def _user_files(tmp_path: Path) -> tuple[Path, Path]:
    """A user's own file and a secret, outside any run folder: they must never change or leak."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_bytes(b"the user's own notes\n")
    (home / "shadow").write_bytes(SECRET)
    return home / "notes.txt", home / "shadow"


def _sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that costs no disk (and is one long line of NULs)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _train(out: Path, *extra, epochs: int = 1) -> list:
    return ["train", *TINY, "--epochs", str(epochs), "--out", out, *extra]


# ----------------------------------------------------------------------------- row 1: report through links


@pytest.mark.timeout(120)
def test_report_refuses_a_linked_log_and_writes_nothing_through_a_linked_report(finished_run, tmp_path):
    notes, shadow = _user_files(tmp_path)
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "log.txt").unlink()
    (run / "log.txt").symlink_to(shadow)
    (run / "report.html").symlink_to(notes)
    before = snapshot(tmp_path / "home", run)
    child = run_child(["report", run], cwd=tmp_path, timeout=90)
    assert_refused(child, f"{run / 'log.txt'}: is a symbolic link", before)
    assert SECRET.decode().split(":")[0] + ":$6$" not in child.out + child.err
    assert os.readlink(run / "report.html") == str(notes)  # nothing was written


@pytest.mark.timeout(120)
def test_report_replaces_a_link_at_report_html(finished_run, tmp_path):
    notes, _shadow = _user_files(tmp_path)
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "report.html").symlink_to(notes)
    before = snapshot(tmp_path / "home")
    child = run_child(["report", run], cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    assert not (run / "report.html").is_symlink() and b"<html" in (run / "report.html").read_bytes()
    assert snapshot(tmp_path / "home") == before


@pytest.mark.timeout(120)
def test_report_refuses_a_plot_that_is_a_link(finished_run, tmp_path):
    _notes, shadow = _user_files(tmp_path)
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "plots" / "extra.png").symlink_to(shadow)
    before = snapshot(tmp_path / "home", run)
    child = run_child(["report", run], cwd=tmp_path, timeout=90)
    assert_refused(child, f"{run / 'plots' / 'extra.png'}: is a symbolic link", before)
    assert not (run / "report.html").exists()


# ----------------------------------------------------------------------------- row 2: train through links and FIFOs


@pytest.mark.timeout(120)
def test_train_refuses_a_linked_log(idx_data, tmp_path):
    notes, _shadow = _user_files(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.txt").symlink_to(notes)
    before = snapshot(tmp_path / "home")
    child = run_child(_train(out, "--dataset", idx_data), cwd=tmp_path, timeout=90)
    assert_refused(child, f"{out / 'log.txt'}: is a symbolic link", before)


@pytest.mark.timeout(120)
def test_train_refuses_a_fifo_log_without_hanging(idx_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "log.txt")
    start = time.monotonic()
    child = run_child(_train(out, "--dataset", idx_data), cwd=tmp_path, timeout=60)
    assert_refused(child, f"{out / 'log.txt'}: is a FIFO")
    assert time.monotonic() - start < 60


@pytest.mark.timeout(120)
def test_train_replaces_a_linked_plot_and_leaves_its_target(idx_data, tmp_path):
    notes, _shadow = _user_files(tmp_path)
    out = tmp_path / "run"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "curves.png").symlink_to(notes)
    before = snapshot(tmp_path / "home")
    child = run_child(_train(out, "--dataset", idx_data), cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    assert snapshot(tmp_path / "home") == before
    curves = out / "plots" / "curves.png"
    assert not curves.is_symlink() and curves.read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(120)
def test_train_refuses_a_plots_folder_that_is_a_link(idx_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    (elsewhere / "curves.png").write_bytes(b"a user's picture")
    (out / "plots").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    child = run_child(_train(out, "--dataset", idx_data), cwd=tmp_path, timeout=90)
    assert_refused(child, f"{out / 'plots'}: is not a folder", before)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["curves.png"]


# ----------------------------------------------------------------------------- row 3: --save-input into the inputs


@pytest.mark.timeout(120)
def test_save_input_into_the_input_folder_keeps_every_input(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "b~2.png").symlink_to(tmp_path / "dangling")  # a name taken by a link: never written through
    before = snapshot(photos)
    child = run_child(["predict", photos / "a.png", photos / "b.png", "--save-input", photos], cwd=tmp_path)
    assert child.code == 0, child.err
    after = snapshot(photos)
    assert all(after[p] == data for p, data in before.items()), "an input was overwritten"
    made = sorted(p.name for p in after if p not in before)
    assert made == ["a~2.png", "b~3.png"]
    assert not (tmp_path / "dangling").exists()
    assert Image.open(photos / "a~2.png").size == (28, 28)


def test_write_new_file_never_replaces(tmp_path):
    (tmp_path / "x.png").write_bytes(b"input")
    assert write_new_file(tmp_path, "x", ".png", b"one").name == "x~2.png"
    assert write_new_file(tmp_path, "x", ".png", b"two").name == "x~3.png"
    assert (tmp_path / "x.png").read_bytes() == b"input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x~2.png", "x~3.png"]  # no temporaries


def test_write_new_file_without_hard_links_still_never_replaces(tmp_path, monkeypatch):
    import errno

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "x.png").write_bytes(b"input")
    assert write_new_file(tmp_path, "x", ".png", b"one").read_bytes() == b"one"
    assert (tmp_path / "x.png").read_bytes() == b"input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x~2.png"]


# ----------------------------------------------------------------------------- row 4: one writer per run folder


def test_a_held_run_folder_is_refused_naming_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    lock = run.prepare(resuming=False)
    try:
        with pytest.raises(ConfigError, match=rf"in use by process {os.getpid()} "):
            run.prepare(resuming=False)  # flock is per open file: a second open conflicts even here
    finally:
        lock.release()
    run.prepare(resuming=False).release()  # released: free again


@pytest.mark.timeout(240)
def test_a_second_train_or_resume_on_a_running_folder_is_refused(idx_data, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(  # slowed down (0.3 s a step, 50 epochs) so that it outlives both attempts
        [sys.executable, "-m", "mnistkit", *map(str, _train(out, "--dataset", idx_data, epochs=50))],
        cwd=tmp_path,
        env=child_env(MNISTKIT_TEST_STEP_DELAY="0.3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while not (out / "last.safetensors").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        before = {out / "config.json": (out / "config.json").read_bytes()}
        holder = f"in use by process {first.pid} "
        assert_refused(run_child(_train(out, "--dataset", idx_data), cwd=tmp_path, timeout=90), holder, before)
        assert_refused(run_child(["train", "--resume", out], cwd=tmp_path, timeout=90), holder, before)
        assert first.poll() is None, "the first run ended before the others were refused; slow it down"
        first.send_signal(signal.SIGTERM)
        _out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, err.decode(errors="replace")[-2000:]
    assert json.loads((out / "config.json").read_text())["epochs"] == 50


@pytest.mark.timeout(120)
def test_a_stale_lock_of_a_dead_process_is_taken_over(idx_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid}\n")
    child = run_child(_train(out, "--dataset", idx_data), cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    assert (out / "model.safetensors").is_file() and not (out / ".lock").exists()  # removed on release


# ----------------------------------------------------------------------------- row 10: huge files in a run folder


@pytest.mark.timeout(120)
def test_report_on_a_2gb_sparse_log_stays_small(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    _sparse(run / "log.txt", 2 * 1024**3)
    child = run_child(["report", run], cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    assert child.max_rss < RSS_LIMIT, f"peak RSS {child.max_rss / 2**20:.0f} MiB"
    page = (run / "report.html").read_bytes()
    assert len(page) < 2 * 1024**2 and b"Showing the end of a long log" in page and b"more characters]" in page


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "eval.json", "plots/curves.png"])
def test_report_refuses_a_huge_run_file_before_reading_it(name, finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    _sparse(run / name, 2 * 1024**3)
    child = run_child(["report", run], cwd=tmp_path, timeout=90)
    assert_refused(child, f"{run / name}: is 2,147,483,648 bytes")
    assert not (run / "report.html").exists()


def test_metrics_rows_must_be_objects(finished_run, tmp_path):
    from mnistkit.errors import DataFormatError
    from mnistkit.report import load_run

    run = _copy_run(finished_run, tmp_path / "run")
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(DataFormatError, match=r"metrics.jsonl: line 2: expected a JSON object, got list"):
        load_run(run)


def test_plots_are_bounded_together(finished_run, tmp_path):
    from mnistkit.errors import DataFormatError
    from mnistkit.report import load_run
    from mnistkit.runs import MAX_PLOT_BYTES, MAX_PLOTS_TOTAL_BYTES

    run = _copy_run(finished_run, tmp_path / "run")
    for i in range(MAX_PLOTS_TOTAL_BYTES // MAX_PLOT_BYTES + 1):
        _sparse(run / "plots" / f"extra{i}.png", MAX_PLOT_BYTES)
    with pytest.raises(DataFormatError, match=r"images hold over 67,108,864 bytes together"):
        load_run(run)


@pytest.mark.timeout(120)
def test_evaluate_refuses_a_run_whose_model_is_a_link(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").symlink_to(finished_run / "model.safetensors")
    child = run_child(["evaluate", run], cwd=tmp_path, timeout=90)
    assert_refused(child, f"{run / 'model.safetensors'}: is a symbolic link")


@pytest.mark.timeout(120)
def test_resume_refuses_a_state_that_is_a_link(finished_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((finished_run / "config.json").read_bytes())
    (run / "last.safetensors").symlink_to(finished_run / "last.safetensors")
    child = run_child(["train", "--resume", run], cwd=tmp_path, timeout=90)
    assert_refused(child, f"{run / 'last.safetensors'}: is a symbolic link")


# ----------------------------------------------------------------------------- row 15: a full disk under plots/


@pytest.fixture
def full_plots_folder(tmp_path):
    """``run/plots`` as a 256 KiB tmpfs, filled to the last byte (root on Linux only)."""
    plots = tmp_path / "run" / "plots"
    plots.mkdir(parents=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(plots)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root and mount permission; full-disk cases not run here")
    try:
        fill(plots)
        yield plots
    finally:
        subprocess.run(["umount", str(plots)], check=False)


@pytest.mark.timeout(120)
def test_full_disk_while_plots_are_written_names_the_plot_and_leaves_no_partial(idx_data, full_plots_folder):
    run = full_plots_folder.parent
    child = run_child(_train(run, "--dataset", idx_data), cwd=run.parent, timeout=90)
    assert_refused(child, f"{full_plots_folder / 'curves.png'}: No space left on device")
    assert sorted(p.name for p in full_plots_folder.iterdir()) == ["filler"], "a partial plot was left"


# ----------------------------------------------------------------------------- row 16: a checkpoint's data_dir


def _checkpoint_naming(data_dir: Path, tmp_path: Path, monkeypatch) -> Path:
    """A valid checkpoint whose stored config sets ``data_dir``; the environment offers no MNIST and no mirror."""
    from mnistkit.checkpoint import save_checkpoint
    from mnistkit.config import TrainConfig
    from mnistkit.models import build_model

    config = TrainConfig(dataset="mnist", data_dir=str(data_dir), model="mlp", model_options={"hidden": [8]})
    meta = {**META, "config": config.to_dict()}
    ckpt = save_checkpoint(tmp_path / "m.safetensors", build_model("mlp", hidden=[8]), meta)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("MNISTKIT_DATA", str(empty))
    monkeypatch.setenv("MNISTKIT_CACHE_DIR", str(empty / "cache"))
    monkeypatch.setenv("MNISTKIT_MIRRORS", "http://127.0.0.1:9/")
    return ckpt


def test_a_checkpoints_data_dir_is_never_searched(tmp_path, monkeypatch):
    from mnistkit.api import evaluate_checkpoint

    planted = tmp_path / "planted"
    make_pattern_dataset(planted / "MNIST" / "raw", n_train=20, n_test=10)  # MNIST's names, other data
    before = snapshot(planted)
    ckpt = _checkpoint_naming(planted, tmp_path, monkeypatch)
    with pytest.raises(DatasetNotFoundError):
        evaluate_checkpoint(ckpt, download=False, device="cpu")
    assert snapshot(planted) == before


def test_nothing_is_created_or_downloaded_where_a_checkpoint_says(tmp_path, monkeypatch):
    from mnistkit.api import evaluate_checkpoint
    from mnistkit.errors import MnistkitError

    planted = tmp_path / "planted"
    ckpt = _checkpoint_naming(planted, tmp_path, monkeypatch)
    with pytest.raises(MnistkitError):
        evaluate_checkpoint(ckpt, download=True, device="cpu")
    assert not planted.exists(), "a folder was created where the checkpoint said"


# ----------------------------------------------------------------------------- row 17: long valid names


def test_an_atomic_write_takes_a_name_of_255_bytes(tmp_path):
    for name in ("r" * NAME_MAX, "é" * (NAME_MAX // 2)):  # ASCII, and two-byte UTF-8 cut mid-way by the temp name
        path = atomic_write_bytes(tmp_path / name, b"ok")
        assert path.read_bytes() == b"ok"
    assert len(list(tmp_path.iterdir())) == 2  # no temporaries left


@pytest.mark.timeout(120)
def test_export_to_a_255_character_name(tmp_path):
    from mnistkit.checkpoint import save_checkpoint
    from mnistkit.models import build_model

    ckpt = save_checkpoint(tmp_path / "m.safetensors", build_model("mlp", hidden=[8]), META)
    out = tmp_path / ("m" * (NAME_MAX - 3) + ".pt")
    child = run_child(["export", ckpt, "--format", "torchscript", "--out", out], cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    assert out.stat().st_size > 0 and sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.safetensors", out.name])
