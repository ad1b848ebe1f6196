"""Hostile files and run folders: planted links and FIFOs, shared run folders, huge files, full disks.

Every writer of a run folder and of an output path goes through temp file + rename (a planted
link is replaced) or an ``O_NOFOLLOW`` open (the log, which grows); every reader of a run folder
takes regular files only, bounded. Each case runs the real CLI in a child process and checks the
contract of :mod:`test_hostile`: exit 2 and one line (or the right answer), files outside the
command's own outputs byte-identical (a link's target included), and child peak RSS under 1 GB.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_hostile import RSS_LIMIT, TINY, _fill, assert_refused, idx_data, run_child, snapshot  # noqa: F401

from mnistkit.fileio import NAME_MAX, atomic_write_bytes

pytest.importorskip("matplotlib")

SECRET = b"root:$6$not-a-real-hash:19000:0:99999:7:::\n"


@pytest.fixture(scope="module")
def finished_run(idx_data, tmp_path_factory) -> Path:  # noqa: F811
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


# ----------------------------------------------------------------------------- row 17: long valid names


def test_an_atomic_write_takes_a_name_of_255_bytes(tmp_path):
    for name in ("r" * NAME_MAX, "é" * (NAME_MAX // 2)):  # ASCII, and two-byte UTF-8 cut mid-way by the temp name
        path = atomic_write_bytes(tmp_path / name, b"ok")
        assert path.read_bytes() == b"ok"
    assert len(list(tmp_path.iterdir())) == 2  # no temporaries left


@pytest.mark.timeout(120)
def test_export_to_a_255_character_name(tmp_path):
    from test_hostile import META

    from mnistkit.checkpoint import save_checkpoint
    from mnistkit.models import build_model

    ckpt = save_checkpoint(tmp_path / "m.safetensors", build_model("mlp", hidden=[8]), META)
    out = tmp_path / ("m" * (NAME_MAX - 3) + ".pt")
    child = run_child(["export", ckpt, "--format", "torchscript", "--out", out], cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    assert out.stat().st_size > 0 and sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.safetensors", out.name])
