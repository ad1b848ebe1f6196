"""A hostile-input corpus, generated here: every case must fail in one line, cheaply, and harm nothing.

The corpus: small files that would expand hugely (gzip bombs, also multi-member),
truncated, oversized and inconsistent IDX headers, hostile CSVs (header only, one
row, labels of 1e30 and 2e9), tampered checkpoints whose digest was recomputed (so
only the *meaning* is wrong), tampered run directories for ``--resume``, FIFOs and
devices given as files, an unreadable class folder, and full disks (a small tmpfs,
mounted when the machine allows it; skipped, saying so, where not).

Most cases call the library in-process (fast) and must raise the project's own
error (:class:`MnistkitError` subclasses). A representative subset runs the real CLI in a child process and asserts the
whole contract: exit code 2, exactly one line on stderr, no traceback, the files
that were there before byte-identical, and the child's peak RSS under 1 GB
(``os.wait4`` reports it, from a small parent process). Hypothesis drives the IDX and CSV parsers and the
checkpoint metadata with arbitrary input: only :class:`MnistkitError` may escape.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import child_env, unprivileged
from hostile_helpers import META, TINY, assert_refused, fill, retag, run_child, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistkit.checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from mnistkit.data import load_dataset
from mnistkit.data.custom import load_image_folder
from mnistkit.data.download import download_from_mirrors
from mnistkit.data.idx import encode_idx, read_idx
from mnistkit.data.kaggle import KAGGLE_PIXELS, read_kaggle_csv
from mnistkit.data.spec import DIGITS
from mnistkit.errors import CheckpointError, ConfigError, DataFormatError, DownloadError
from mnistkit.fileio import atomic_write_bytes, clean_stale_temporaries, current_umask, read_bytes
from mnistkit.models import build_model

PROPS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# ----------------------------------------------------------------------------- corpus builders


def gzip_bomb(header: bytes, zero_mib: int) -> bytes:
    """``header`` followed by ``zero_mib`` MiB of zeros, as a multi-member gzip of a few KB per 1 GiB:
    one compressed MiB of zeros repeated (a valid gzip file, which whole-file decompression expands)."""
    member = gzip.compress(b"\0" * 2**20, compresslevel=9, mtime=0)
    return gzip.compress(header, mtime=0) + member * zero_mib


def idx_header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


def csv_text(rows: list[list], label: bool = True) -> str:
    header = (["label"] if label else []) + list(KAGGLE_PIXELS)
    return "\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n"


def csv_row(label, pixel=0) -> list:
    return [label] + [pixel] * 784


def _nested(meta: dict, dotted: str, value) -> dict:
    """``meta`` with ``a.b.c`` set to ``value`` (a deep copy through JSON)."""
    meta = json.loads(json.dumps(meta))
    *path, last = dotted.split(".")
    target = meta
    for key in path:
        target = target[key]
    target[last] = value
    return meta


# ----------------------------------------------------------------------------- IDX files


def _idx_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    images = encode_idx(torch.zeros(10, 28, 28, dtype=torch.uint8))
    cases = {
        "bomb past the declared size": (gzip_bomb(idx_header(8, 10, 28, 28), 200), "payload is over 7840 bytes"),
        "honest header, bomb payload": (gzip_bomb(idx_header(8, 1_000_000, 28, 28), 800), "expands more than 100x"),
        "header beyond the cap": (gzip.compress(idx_header(8, 4_000_000, 28, 28)), "implausibly large"),
        "truncated header": (images[:6], "header declares 3 dimensions"),
        "truncated payload": (images[:-5], "payload is 7835 bytes"),
        "trailing bytes": (images + b"junk", "payload is over 7840 bytes"),
        "nine dimensions": (bytes([0, 0, 8, 9]) + b"\0" * 40, "9 dimensions"),
        "unknown dtype": (bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]), "unknown IDX dtype code"),
        "truncated gzip": (gzip.compress(images)[:-12], "gzip data is truncated or corrupt"),
        "named .gz, not gzip": (images, "not gzip-compressed"),
        "empty": (b"", "is empty"),
    }
    out = {}
    for i, (name, (blob, needle)) in enumerate(cases.items()):
        path = tmp / f"case{i}-idx3-ubyte{'.gz' if name == 'named .gz, not gzip' else ''}"
        path.write_bytes(blob)
        out[name] = (path, needle)
    return out


def test_idx_corpus_in_process(tmp_path):
    for name, (path, needle) in _idx_cases(tmp_path).items():
        with pytest.raises(DataFormatError) as exc:
            read_idx(path)
        assert str(path) in str(exc.value) and needle in str(exc.value), (name, str(exc.value))


def test_idx_bomb_through_the_cli_stays_small(idx_data, tmp_path):
    """2 GiB of zeros in a 2 MB file used to reach 4.3 GB RSS; now it stops at the declared size."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    for p in idx_data.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip_bomb(idx_header(8, 160, 28, 28), 2048))
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 4 * 2**20
    before = snapshot(folder)
    child = run_child(["train", "--dataset", folder, *TINY, "--out", tmp_path / "run"], cwd=tmp_path)
    assert_refused(child, "payload is over 125440 bytes", before)
    assert not (tmp_path / "run").exists()


def test_idx_label_of_two_billion_names_the_label(idx_data, tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    for p in idx_data.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    labels = torch.zeros(40, dtype=torch.int32)
    labels[7] = 2_000_000_000
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(labels)))
    with pytest.raises(DataFormatError, match="label 2000000000 is out of range; .* 0..999"):
        load_dataset(folder)


# ----------------------------------------------------------------------------- CSV files

CSV_CASES = {
    "header only": (lambda: csv_text([]), "no data rows after the header"),
    "one row": (lambda: csv_text([csv_row(3)]), "at least 2 are needed"),
    "label 1e30": (lambda: csv_text([csv_row(1), csv_row("1e30")]), "label 1e+30 in data row 2 is not a class index"),
    "label 2e9": (lambda: csv_text([csv_row(2_000_000_000), csv_row(1)]), "label 2e+09 in data row 1"),
    "negative label": (lambda: csv_text([csv_row(1), csv_row(-1)]), "label -1 in data row 2"),
    "NaN pixel": (lambda: csv_text([csv_row(1), csv_row(2, "nan")]), "pixel0 in data row 2 is nan"),
    "ragged row": (lambda: csv_text([csv_row(1), [1, 2, 3]]), "malformed CSV row"),
    "no pixel columns": (lambda: "label,a,b\n1,2,3\n", "header lacks 'pixel0'"),
    "not UTF-8": (lambda: "label\n\udcff", "not UTF-8"),
}


def _write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


@pytest.mark.parametrize("name", list(CSV_CASES))
def test_csv_corpus_in_process(name, tmp_path):
    make, needle = CSV_CASES[name]
    path = _write_csv(tmp_path / "train.csv", make())
    with pytest.raises(DataFormatError) as exc:
        load_dataset(path)
    assert needle in str(exc.value) and str(path) in str(exc.value), str(exc.value)


def test_csv_bomb_is_stopped_while_small(tmp_path):
    row = (",".join(["0"] * 785) + "\n").encode()
    member = gzip.compress(row * 700, compresslevel=9, mtime=0)  # ~1.1 MB of text each
    path = tmp_path / "train.csv.gz"
    path.write_bytes(gzip.compress(csv_text([]).encode(), mtime=0) + member * 300)  # ~330 MB of text
    with pytest.raises(DataFormatError, match="expands more than 100x|more than 268,435,456 bytes"):
        read_kaggle_csv(path)


def test_one_row_csv_through_the_cli_leaves_no_run_directory(tmp_path):
    make, needle = CSV_CASES["one row"]
    path = _write_csv(tmp_path / "train.csv", make())
    before = snapshot(tmp_path)
    child = run_child(["train", "--dataset", path, *TINY, "--out", tmp_path / "run"], cwd=tmp_path)
    assert_refused(child, needle, before)
    assert not (tmp_path / "run").exists(), "a half-made run directory was left"


# ----------------------------------------------------------------------------- FIFOs and devices


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)
    os.mkfifo(tmp_path / "model.safetensors")
    os.mkfifo(tmp_path / "images-idx3-ubyte")
    with pytest.raises(DataFormatError, match="is a FIFO"):
        load_dataset(fifo)
    with pytest.raises(DataFormatError, match="is a FIFO"):
        read_idx(tmp_path / "images-idx3-ubyte")
    with pytest.raises(CheckpointError, match="is a FIFO"):
        load_checkpoint(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="is a device or socket"):
        load_checkpoint("/dev/zero")
    with pytest.raises(DataFormatError, match="is a device"):
        read_idx("/dev/zero")


@pytest.mark.timeout(120)
def test_fifo_through_the_cli(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    assert_refused(run_child(["evaluate", fifo, "--device", "cpu"], cwd=tmp_path, timeout=60), "is a FIFO")


def test_oversized_files_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: 3 GB that cost no disk
    with pytest.raises(CheckpointError, match="may be at most"):
        read_bytes(big, 1024**3, CheckpointError, "checkpoint")


# ----------------------------------------------------------------------------- unreadable class folder


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 40 * i + (cls == "b") * 100, dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    return root


def test_unreadable_class_folder_is_an_error_not_an_empty_class(tmp_path):
    pytest.importorskip("PIL")
    import mnistkit.preprocess.image  # noqa: F401  (imported before dropping privileges)

    root = Path(tempfile.mkdtemp(prefix="mnistkit-perm-"))  # world-traversable, unlike pytest's tmp
    try:
        os.chmod(root, 0o755)
        folder = _image_folder(root / "digits")
        for p in folder.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(folder / "b", 0)
        with unprivileged(), pytest.raises(DataFormatError, match=r"b: cannot list this folder \(Permission denied\)"):
            load_image_folder(folder)
    finally:
        os.chmod(root / "digits" / "b", 0o755)
        import shutil

        shutil.rmtree(root)


# ----------------------------------------------------------------------------- checkpoints by meaning

CHECKPOINT_CASES = {
    "5 class names for 10 outputs": ({"class_names": list("abcde")}, "names 5 classes but its model has 10 outputs"),
    "std 0": ({"norm": {"mean": 0.5, "std": 0}}, "bad metadata field 'norm'"),
    "std NaN": ({"norm": {"mean": 0.5, "std": math.nan}}, "bad metadata field 'norm'"),
    "mean infinite": ({"norm": {"mean": math.inf, "std": 1}}, "bad metadata field 'norm'"),
    "binary on a 10-way model": ({"task": "binary"}, "says task 'binary' but model 'mlp' is multiclass"),
    "versions a string": ({"versions": "x"}, "bad metadata field 'versions'"),
    "versions of numbers": ({"versions": {"torch": 2}}, "bad metadata field 'versions'"),
    "config a string": ({"config": "abc"}, "bad metadata field 'config'"),
    "temperature negative": ({"temperature": -1.0}, "bad metadata field 'temperature'"),
    "temperature a string": ({"temperature": "hot"}, "bad metadata field 'temperature'"),
    "temperature huge int": ({"temperature": 10**400}, "bad metadata field 'temperature'"),
    "card a list": ({"card": []}, "bad metadata field 'card'"),
    "3000 class names": ({"class_names": [str(i) for i in range(3000)]}, "bad metadata field 'class_names'"),
    "model options a list": ({"model_options": [1]}, "bad metadata field 'model_options'"),
}


def _nan_weights(tensors):
    tensors[sorted(tensors)[0]][0] = math.nan


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_tampered_checkpoint_metadata_is_refused(name, good_ckpt, tmp_path):
    changes, needle = CHECKPOINT_CASES[name]
    bad = retag(good_ckpt, tmp_path / "bad.safetensors", changes)
    load_tensors(bad)  # the digest matches: integrity alone would accept it
    with pytest.raises(CheckpointError, match="bad metadata field|does not fit|says task|names 5") as exc:
        load_checkpoint(bad)
    assert needle in str(exc.value) and str(bad) in str(exc.value)


def test_nan_weights_are_refused(good_ckpt, tmp_path):
    bad = retag(good_ckpt, tmp_path / "nan.safetensors", tensor_edit=_nan_weights)
    with pytest.raises(CheckpointError, match="non-finite values"):
        load_checkpoint(bad)


def test_binary_checkpoint_with_ten_names_is_refused(tmp_path):
    good = save_checkpoint(
        tmp_path / "b.safetensors", build_model("binary-logreg"), {**META, "class_names": ["not 3", "3"]}
    )
    load_checkpoint(good)
    with pytest.raises(CheckpointError, match="names 10 classes but its model has 1 output"):
        load_checkpoint(retag(good, tmp_path / "bad.safetensors", {"class_names": list(DIGITS)}))


def test_optional_fields_when_valid_are_accepted(good_ckpt, tmp_path):
    ok = retag(good_ckpt, tmp_path / "ok.safetensors", {"temperature": 1.5, "card": {"intended_use": "digits"}})
    assert load_checkpoint(ok).temperature == 1.5


@pytest.mark.timeout(120)
def test_tampered_checkpoints_through_the_cli(good_ckpt, tmp_path):
    bad = retag(good_ckpt, tmp_path / "names.safetensors", {"class_names": list("abcde")})
    before = snapshot(tmp_path)
    assert_refused(
        run_child(["evaluate", bad, "--device", "cpu"], cwd=tmp_path, timeout=60),
        "names 5 classes but its model has 10 outputs",
        before,
    )


# ----------------------------------------------------------------------------- --resume of a tampered run


@pytest.fixture(scope="module")
def finished_run(idx_data, tmp_path_factory) -> Path:
    from mnistkit.cli import main

    run = tmp_path_factory.mktemp("run") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", str(idx_data), *TINY, "--epochs", "1", "--out", str(run)])
    assert exc.value.code == 0
    return run


def _copy_run(run: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("config.json", "last.safetensors"):
        (dest / name).write_bytes((run / name).read_bytes())
    return dest


CONFIG_CASES = {
    "a list": (b"[]", "holds a JSON list"),
    "binary": (bytes(range(256)) * 4, "not valid JSON"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "too deeply nested"),
    "string seed": (None, "config key 'seed' is 'x'"),
    "unknown key": (None, "unknown config keys: bogus"),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_resume_with_a_bad_config_json(name, finished_run, tmp_path):
    from mnistkit.training.loop import fit

    run = _copy_run(finished_run, tmp_path / "run")
    blob, needle = CONFIG_CASES[name]
    if blob is None:
        saved = json.loads((run / "config.json").read_text())
        saved.update({"seed": "x"} if name == "string seed" else {"bogus": 1})
        blob = json.dumps(saved).encode()
    (run / "config.json").write_bytes(blob)
    with pytest.raises(ConfigError, match="--resume") as exc:
        fit(resume=run, echo=False, plots=False)
    assert needle in str(exc.value)


STATE_CASES = {
    "no optimizer": (dict(drop=("optimizer",)), "'optimizer' must be an object"),
    "no progress": (dict(drop=("progress",)), "'progress' is missing"),
    "string epoch": (dict(path="progress.epoch", value="1"), "progress.epoch must be a whole number"),
    "metrics not a list": (dict(path="progress.metrics", value={}), "progress.metrics must be a list"),
    "param groups a string": (dict(path="optimizer.param_groups", value="x"), "'param_groups' (a list)"),
    "two param groups": (
        dict(path="optimizer.param_groups", value=[{"params": [0]}, {"params": [1]}]),
        "must be 1 object(s)",
    ),
    "string lr": (dict(path="optimizer.param_groups.0.lr", value="fast"), "param_groups[0].lr is 'fast'"),
    "betas of one": (dict(path="optimizer.param_groups.0.betas", value=[0.9]), "param_groups[0].betas"),
    "state keys": (dict(path="optimizer.state", value={"x": 1}), "optimizer.state must map"),
    "scheduler a list": (dict(path="scheduler", value=[1]), "'scheduler' must be null or an object"),
}


def _edit_state(run: Path, drop=(), path=None, value=None) -> None:
    state = run / "last.safetensors"
    _, meta = load_tensors(state)
    if path is not None:
        *parents, last = path.split(".")
        target = meta
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value
    retag(state, state, {k: v for k, v in meta.items() if k != "format"}, drop=drop)


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_resume_with_tampered_state_metadata(name, finished_run, tmp_path):
    from mnistkit.training.loop import fit

    run = _copy_run(finished_run, tmp_path / "run")
    edit, needle = STATE_CASES[name]
    _edit_state(run, **edit)
    with pytest.raises(CheckpointError) as exc:
        fit(resume=run, echo=False, plots=False)
    assert needle in str(exc.value), str(exc.value)


@pytest.mark.timeout(120)
def test_resume_through_the_cli_is_one_line(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "config.json").write_bytes(b"[" * 100_000)
    before = snapshot(run)
    assert_refused(run_child(["train", "--resume", run], cwd=tmp_path, timeout=60), "config.json", before)


# ----------------------------------------------------------------------------- signals and debris


@pytest.mark.timeout(180)
def test_sigterm_is_one_line_exit_143_and_resume_cleans_stale_temporaries(idx_data, tmp_path):
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "mnistkit",
        "train",
        "--dataset",
        str(idx_data),
        *TINY,
        "--epochs",
        "3",
        "--out",
        str(run),
    ]
    victim = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=child_env(MNISTKIT_TEST_STEP_DELAY="0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not (run / "last.safetensors").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGTERM)
    _out, err = victim.communicate(timeout=60)
    want = f"mnistkit: terminated; continue it with: mnistkit train --resume {run}\n"
    assert victim.returncode == 143 and err == want, (victim.returncode, err)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    stale = run / ".last.safetensors.k1ll3d_9.tmp"  # what a kill -9 mid-write leaves
    stale.write_bytes(b"\0" * 1000)
    (run / "notes.tmp").write_text("the user's own file")  # not our naming: kept
    from mnistkit.training.loop import fit

    fit(resume=run, echo=False, plots=False)  # in-process: the CLI path was exercised above
    assert not stale.exists() and (run / "notes.tmp").exists() and (run / "model.safetensors").exists()


def test_clean_stale_temporaries_only_takes_our_naming(tmp_path):
    ours = [tmp_path / ".model.safetensors.ab_cd123.tmp", tmp_path / ".config.json.zzzzzzzz.tmp"]
    theirs = [tmp_path / "x.tmp", tmp_path / ".hidden.tmp", tmp_path / ".model.safetensors.short.tmp"]
    for p in ours + theirs:
        p.write_text("x")
    assert sorted(clean_stale_temporaries(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs)


# ----------------------------------------------------------------------------- modes of written files


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write_bytes(tmp_path / "f.json", b"{}")
        save_checkpoint(tmp_path / "m.safetensors", build_model("logreg"), META)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == mode


# ----------------------------------------------------------------------------- full disks (tmpfs)


@pytest.fixture
def tiny_disk():
    """A 256 KiB tmpfs, mounted for the test (root on Linux only); skipped, saying why, elsewhere."""
    folder = Path(tempfile.mkdtemp(prefix="mnistkit-full-"))
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True
        ).returncode
        != 0
    ):
        folder.rmdir()
        pytest.skip("mounting a small tmpfs needs root and mount permission; full-disk cases not run here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


@pytest.mark.timeout(120)
def test_torchscript_export_on_a_full_disk(good_ckpt, tiny_disk):
    fill(tiny_disk)
    out = tiny_disk / "model.pt"
    child = run_child(["export", good_ckpt, "--format", "torchscript", "--out", out], cwd=tiny_disk.parent, timeout=90)
    assert_refused(child, f"cannot write {out}: No space left on device")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"], "a temporary file was left"


@pytest.mark.timeout(120)
def test_full_disk_names_the_file(idx_data, tiny_disk):
    fill(tiny_disk)
    child = run_child(
        ["train", "--dataset", idx_data, *TINY, "--epochs", "1", "--out", tiny_disk / "run"],
        cwd=tiny_disk.parent,
        timeout=90,
    )
    assert_refused(child, f"{tiny_disk / 'run' / 'config.json'}: No space left on device")
    assert "error::" not in child.err
    assert not list((tiny_disk / "run").iterdir()), "debris in the run directory"


# ----------------------------------------------------------------------------- downloads


class _Hostile(BaseHTTPRequestHandler):
    """/flood streams zeros with no Content-Length, forever; /drip sends a byte every 0.2 s;
    /liar announces a huge Content-Length."""

    protocol_version = "HTTP/1.0"

    def do_GET(self):
        self.send_response(200)
        if self.path.startswith("/liar"):
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        try:
            for _ in range(100_000):
                if self.path.startswith("/drip"):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.2)
                else:
                    self.wfile.write(b"\0" * 65536)
        except OSError:
            pass  # the client hung up, as it should

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(60)
def test_download_stops_at_the_expected_size(hostile_server, tmp_path):
    with pytest.raises(DownloadError, match="sent more than the 1,048,576 bytes expected"):
        download_from_mirrors("f.gz", (hostile_server + "/flood",), tmp_path / "f.gz", lambda d: True, max_bytes=2**20)
    with pytest.raises(DownloadError, match="announces 1,000,000,000,000 bytes"):
        download_from_mirrors("f.gz", (hostile_server + "/liar",), tmp_path / "f.gz", lambda d: True, max_bytes=2**20)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_a_dripping_mirror_meets_the_overall_deadline(hostile_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTKIT_DOWNLOAD_TIMEOUT", "3")
    monkeypatch.setenv("MNISTKIT_DOWNLOAD_DEADLINE", "1.5")
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="not complete within the 1.5 s deadline"):
        download_from_mirrors("f.gz", (hostile_server + "/drip",), tmp_path / "f.gz", lambda d: True)
    assert time.monotonic() - t0 < 5
    assert list(tmp_path.iterdir()) == []


def test_expected_download_sizes_come_from_the_counts():
    from mnistkit.data import get_dataset_spec
    from mnistkit.data.files import max_download_bytes

    mnist = get_dataset_spec("mnist")
    real = {
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
    }
    for name, size in real.items():
        assert size < max_download_bytes(mnist, name) < 48_000_000


# ----------------------------------------------------------------------------- property-based


@PROPS
@given(st.binary(max_size=64), st.booleans(), st.integers(0, 4))
def test_idx_reader_raises_only_its_own_errors(blob, compress, header):
    headers = [b"", idx_header(8, 2, 28, 28), idx_header(0x0D, 3), idx_header(8, 2**31, 2**31)]
    headers.append(idx_header(8, len(blob)))  # the blob as a valid 1-D file: the success path is checked too
    prefix = headers[header]
    data = prefix + blob
    data = gzip.compress(data, mtime=0) if compress else data
    with tempfile.NamedTemporaryFile(suffix="-idx") as f:
        f.write(data)
        f.flush()
        try:
            tensor = read_idx(f.name)
        except DataFormatError:
            return
        assert encode_idx(tensor) == (gzip.decompress(data) if compress else data)  # exactly what the file says


_cell = st.one_of(st.integers(-5, 300), st.sampled_from(["", "nan", "1e30", "-inf", "x", "2.5", '"7"', " 3 "]))


@PROPS
@given(st.lists(st.lists(_cell, min_size=0, max_size=790), max_size=4), st.booleans(), st.booleans())
def test_csv_reader_raises_only_its_own_errors(rows, label, compress):
    text = csv_text(rows, label=label)
    data = gzip.compress(text.encode(), mtime=0) if compress else text.encode()
    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        f.write(data)
        f.flush()
        try:
            images, labels = read_kaggle_csv(f.name)
        except DataFormatError:
            return
        assert images.dtype == torch.uint8 and images.shape[1:] == (28, 28)
        assert labels is None or int(labels.max()) < 1000


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_FIELDS = [
    "model",
    "model_options",
    "task",
    "class_names",
    "norm",
    "versions",
    "config",
    "temperature",
    "card",
    "norm.std",
    "norm.mean",
]


@PROPS
@given(st.sampled_from(_FIELDS), _json)
def test_checkpoint_metadata_raises_only_checkpoint_errors(good_ckpt, field, value):
    tensors, meta = load_tensors(good_ckpt)
    meta.pop("format")
    meta = (
        _nested(meta, field, value)
        if "." in field and isinstance(meta.get(field.split(".")[0]), dict)
        else {**meta, field.split(".")[0]: value}
    )
    buffer = Path(tempfile.mkdtemp(prefix="mnistkit-meta-")) / "m.safetensors"
    try:
        save_tensors(buffer, tensors, meta)
    except (TypeError, ValueError):
        return  # not JSON-serialisable (e.g. NaN keys): no such file can exist
    try:
        ckpt = load_checkpoint(buffer)
    except CheckpointError:
        return
    finally:
        buffer.unlink(missing_ok=True)
        buffer.parent.rmdir()
    probabilities = torch.softmax(ckpt.model(torch.zeros(1, 1, 28, 28)) / ckpt.temperature, 1)
    assert torch.isfinite(probabilities).all() and len(ckpt.class_names) == probabilities.shape[1]
