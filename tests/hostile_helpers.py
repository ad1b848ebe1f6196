"""The hostile-input corpus's shared contract and builders: a child ``mnistkit`` with its own peak RSS,
the one-line refusal it must give, snapshots of files that must stay byte-identical, re-signed
checkpoints, and a filled disk. Used by ``test_hostile*.py``; its fixtures are registered by ``conftest.py``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import child_env
from synthetic import make_pattern_dataset

from mnistkit.checkpoint import load_tensors, save_checkpoint, save_tensors
from mnistkit.data.spec import DIGITS
from mnistkit.models import build_model

#: Peak RSS a child may reach on any hostile input (bytes).
RSS_LIMIT = 1024**3
TINY = [
    "--model",
    "mlp",
    "--hidden",
    "16",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--no-amp",
    "--log-every",
    "0",
    "-q",
]
META = {"dataset": "test", "norm": {"mean": 0.5, "std": 0.5}, "class_names": list(DIGITS)}

# ----------------------------------------------------------------------------- the child-process contract


class Child:
    """What one ``mnistkit`` child did: exit code, output, and its peak resident memory."""

    def __init__(self, code: int, out: str, err: str, max_rss: int):
        self.code, self.out, self.err, self.max_rss = code, out, err, max_rss


#: A small parent for the CLI: Linux counts a parent's resident pages at fork into the child's peak
#: RSS, so a child forked straight from pytest (often 1 GB by now) would report pytest's size. This
#: few-MB interpreter forks the CLI instead, reaps it with wait4 and writes its true peak to argv[1].
_REAPER = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-m", "mnistkit", *sys.argv[2:]])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))  # Linux reports KiB
sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)
"""


def run_child(args, cwd: Path, timeout: float = 120, **env) -> Child:
    """Run ``python -m mnistkit ARGS`` under :data:`_REAPER`; return its outcome and its own peak RSS."""
    with tempfile.NamedTemporaryFile(prefix="mnistkit-rss-") as rss:
        proc = subprocess.run(
            [sys.executable, "-c", _REAPER, rss.name, *map(str, args)],
            cwd=cwd,
            env=child_env(**env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        peak = int(Path(rss.name).read_text() or 0)
    return Child(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"), peak)


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every regular file under ``folders`` with its bytes (FIFOs and devices are skipped)."""
    files = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and not p.is_symlink():
                files[p] = p.read_bytes()
    return files


def assert_refused(child: Child, needle: str, before: dict[Path, bytes] | None = None) -> None:
    """The one-line contract: exit 2, one ``mnistkit: error:`` line naming the fault, nothing harmed."""
    lines = child.err.splitlines()
    assert child.code == 2, (child.code, child.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("mnistkit: error: "), child.err[-2000:]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in child.err + child.out
    assert child.max_rss < RSS_LIMIT, f"peak RSS {child.max_rss / 2**20:.0f} MiB"
    for path, data in (before or {}).items():
        assert path.exists() and path.read_bytes() == data, f"{path} changed"


def retag(
    source: Path, dest: Path, meta_changes: dict | None = None, drop: tuple[str, ...] = (), tensor_edit=None
) -> Path:
    """A copy of a checkpoint or training state with edited metadata (and tensors) and a *recomputed*
    digest: integrity checks pass, so only validation by meaning can refuse it."""
    tensors, meta = load_tensors(source)
    meta.update(meta_changes or {})
    for key in drop:
        meta.pop(key, None)
    meta.pop("format")
    if tensor_edit is not None:
        tensor_edit(tensors)
    return save_tensors(dest, tensors, meta)


def fill(folder: Path) -> None:
    """Fill the disk to the last byte (unbuffered, so closing has nothing left to fail on)."""
    with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    """A valid small MLP checkpoint for the corpus to tamper with (copies only)."""
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors", build_model("mlp", hidden=[8]), META)


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory) -> Path:
    """A tiny learnable IDX dataset (160 train, 40 test) for runs the corpus starts."""
    return make_pattern_dataset(tmp_path_factory.mktemp("idx"), n_train=160, n_test=40)
