"""The run directory: the one place that names the files of a training run and reads and writes them.

A run directory (``mnistkit train --out DIR``, default ``runs/<name>``) holds::

    config.json          the resolved training config (rebuilds the run; --resume reads it)
    last.safetensors     the resumable training state, rewritten after every epoch
    metrics.jsonl        one JSON object per epoch (metrics.csv: the same rows as CSV)
    log.txt              the tutorial-style log
    model.safetensors    the finished model (its presence means "finished")
    eval.json            the test-set evaluation
    summary.json         one object describing the run
    plots/               curves, confusion matrix, mistakes, weights (with matplotlib)
    .lock                while a process writes the run: locked by it (``flock``), holding its PID

Every reader and writer in the package asks :class:`RunDir` for these paths, so a file name
lives here only. Writes are atomic (:func:`mnistkit.fileio.atomic_write_bytes`): a killed
run leaves the previous version of each file, never half of one, and a symlink or FIFO
planted under a file's name is replaced, never written through; the log, which grows, is
opened without following links (:func:`mnistkit.fileio.open_append`).

A run folder is read as untrusted input (``report``, ``--resume``, ``evaluate RUN``): its
files are read only when they are regular files, not links, and only up to a size cap;
of the log only the end is read (:data:`MAX_LOG_TAIL_BYTES`).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistkit.errors import CheckpointError, ConfigError, DataFormatError, MnistkitError
from mnistkit.fileio import (
    atomic_write_bytes,
    clean_stale_temporaries,
    read_bytes,
    read_tail,
    regular_file_size,
)

if TYPE_CHECKING:
    from mnistkit.config import TrainConfig

CHECKPOINT_FILE = "model.safetensors"
STATE_FILE = "last.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
METRICS_CSV_FILE = "metrics.csv"
LOG_FILE = "log.txt"
EVAL_FILE = "eval.json"
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
#: metrics.csv's columns, in order (metrics.jsonl rows may carry more keys)
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "elapsed")
#: Caps on what a reader takes from a run folder (bytes). A run's JSON files and metrics hold a few
#: KB per epoch or class; a plot is ~100 KB. Beyond these a file is refused, not read.
MAX_RUN_JSON_BYTES = 16 * 1024**2
MAX_METRICS_BYTES = 16 * 1024**2
MAX_PLOT_BYTES = 16 * 1024**2
#: All plots of a run together: a report inlines them (base64), so this bounds the page too.
MAX_PLOTS_TOTAL_BYTES = 64 * 1024**2
#: Of log.txt only the end is read: a report shows its last lines.
MAX_LOG_TAIL_BYTES = 1024**2


class RunDir:
    """The files of one run directory.

    >>> run = RunDir("runs/mnist-mlp")
    >>> run.checkpoint.name, run.state.name
    ('model.safetensors', 'last.safetensors')
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ names
    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_CSV_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def eval(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def plots(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    # ------------------------------------------------------------------ states of a run
    def is_finished(self) -> bool:
        """A finished run has its model; an interrupted one only its training state."""
        return self.checkpoint.exists()

    def is_interrupted(self) -> bool:
        return self.state.exists()

    def prepare(self, resuming: bool) -> RunLock:
        """Create and lock the directory; refuse to overwrite a finished or interrupted run unless resuming.

        The lock is taken before the checks, so two processes cannot both find the folder free.
        Temporaries of our atomic writes (``.NAME.*.tmp``) left by a killed run are deleted here.
        Returns the held lock: release it when the run's last file is written.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create run directory {self.path}: {exc.strerror or exc}") from None
        lock = RunLock.acquire(self)
        try:
            self._check_free(resuming)
        except BaseException:
            lock.release()
            raise
        clean_stale_temporaries(self.path)  # left by a kill -9 during an atomic write; we hold the lock
        return lock

    def _check_free(self, resuming: bool) -> None:
        if not resuming and self.is_finished():
            raise ConfigError(
                f"run directory {self.path} already holds a finished run; choose another --out "
                f"or continue it with --resume {self.path}"
            )
        if not resuming and self.is_interrupted():
            raise ConfigError(
                f"run directory {self.path} holds an interrupted run; continue it with --resume {self.path}"
            )

    # ------------------------------------------------------------------ readers and writers
    def write_config(self, config: dict) -> Path:
        return _write_json(self.config, config)

    def read_config(self, label: str) -> dict:
        """The saved config as a dict (bounded read; faults are one ConfigError starting with ``label``)."""
        from mnistkit.config import read_config_dict

        self.require_regular(self.config, ConfigError, "run's config")
        return read_config_dict(self.config, label)

    def require_regular(self, path: Path, error: type[MnistkitError], what: str) -> Path:
        """``path`` when it is a regular file and not a link (a run's file that another reader opens)."""
        regular_file_size(path, error, what, follow_symlinks=False)
        return path

    def has(self, path: Path) -> bool:
        """Whether the run holds an entry of this name, whatever it is (a planted link is an entry too)."""
        return os.path.lexists(path)

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.jsonl and metrics.csv atomically (small files; crash-safe)."""
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in rows).encode())
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.metrics_csv, buf.getvalue().encode())

    def read_metrics(self) -> list[dict]:
        """The epochs' rows from metrics.jsonl, or from metrics.csv when only that is there."""
        if not self.has(self.metrics) and self.has(self.metrics_csv):
            text = self._read_text(self.metrics_csv, MAX_METRICS_BYTES, "metrics file")
            return [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
        text = self._read_text(self.metrics, MAX_METRICS_BYTES, "metrics file")
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                why = "too deeply nested" if isinstance(exc, RecursionError) else exc.msg
                raise DataFormatError(f"{self.metrics}: line {number}: not valid JSON ({why})") from None
            if not isinstance(row, dict):
                raise DataFormatError(
                    f"{self.metrics}: line {number}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append(row)
        return rows

    def write_eval(self, evaluation: dict) -> Path:
        return _write_json(self.eval, evaluation)

    def read_eval(self) -> dict:
        return self._read_json(self.eval, "evaluation")

    def write_summary(self, summary: dict) -> Path:
        return _write_json(self.summary, summary)

    def read_summary(self) -> dict:
        return self._read_json(self.summary, "summary")

    def read_log_tail(self) -> tuple[str, bool]:
        """The end of log.txt (at most :data:`MAX_LOG_TAIL_BYTES`) and whether earlier lines were cut."""
        data, cut = read_tail(self.log, MAX_LOG_TAIL_BYTES, DataFormatError, "run's log")
        text = data.decode("utf-8", errors="replace")
        if cut and "\n" in text:  # the first line is a fragment (unless it is the only one: it is then clipped)
            text = text.partition("\n")[2]
        return text, cut

    def plot_files(self) -> list[Path]:
        """The entries of plots/ (empty without the folder); a link in place of the folder is refused."""
        if not self.has(self.plots):
            return []
        if not stat.S_ISDIR(os.lstat(self.plots).st_mode):
            raise DataFormatError(f"{self.plots}: is not a folder (a symbolic link or a file); plots/ must be a folder")
        return sorted(self.plots.iterdir())

    def read_plots(self, paths: list[Path]) -> dict[Path, bytes]:
        """The bytes of each plot (regular files only), each and all together bounded."""
        plots, total = {}, 0
        for path in paths:
            plots[path] = read_bytes(path, MAX_PLOT_BYTES, DataFormatError, "plot", follow_symlinks=False)
            total += len(plots[path])
            if total > MAX_PLOTS_TOTAL_BYTES:
                raise DataFormatError(
                    f"{self.plots}: its images hold over {MAX_PLOTS_TOTAL_BYTES:,} bytes together; "
                    "a report inlines them all, so move the extra ones elsewhere"
                )
        return plots

    def write_plot(self, name: str, data: bytes) -> Path:
        """Write ``plots/<name>``; a link in place of plots/ is refused (its target is not the run's)."""
        try:
            self.plots.mkdir(exist_ok=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.plots)) from None
        if not stat.S_ISDIR(os.lstat(self.plots).st_mode):
            raise ConfigError(f"{self.plots}: is not a folder (a symbolic link or a file); plots/ must be a folder")
        return atomic_write_bytes(self.plots / name, data)

    # ------------------------------------------------------------------ bounded reads
    def _read_text(self, path: Path, limit: int, what: str) -> str:
        raw = read_bytes(path, limit, DataFormatError, what, follow_symlinks=False)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    def _read_json(self, path: Path, what: str) -> dict:
        """A JSON object file of the run; a corrupt file is a :class:`DataFormatError` naming it."""
        try:
            value = json.loads(self._read_text(path, MAX_RUN_JSON_BYTES, f"run's {what}"))
        except (json.JSONDecodeError, RecursionError) as exc:
            why = "too deeply nested" if isinstance(exc, RecursionError) else exc
            raise DataFormatError(f"{path}: not valid JSON ({why})") from None
        if not isinstance(value, dict):
            raise DataFormatError(f"{path}: expected a JSON object, got {type(value).__name__}")
        return value


class RunLock:
    """An exclusive ``flock`` on a run's lock file, held while one process writes the run.

    The kernel drops the lock when its holder exits, however it exits, so a lock
    file left by a dead process is simply taken over. The file holds the holder's
    PID, for the message the next process gets, and is removed on release; a lock
    is only good while the file it was taken on is still the one under the name,
    so removing it cannot let two processes hold locks on two files.
    """

    def __init__(self, fd: int, path: Path):
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, run: RunDir) -> RunLock:
        """Lock ``run`` or raise a one-line :class:`ConfigError` naming the process that holds it."""
        for _attempt in range(MAX_LOCK_ATTEMPTS):
            fd = _open_lock_file(run)
            try:
                _flock_or_name_holder(fd, run)
                if _same_file(fd, run.lock_file):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # released and removed by its holder between our open and our lock: try again
        else:
            raise ConfigError(f"cannot lock run directory {run.path}: its {LOCK_FILE} keeps being replaced")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the PID is for messages only (a full disk is reported by the run's first real write)
        return cls(fd, run.lock_file)

    def release(self) -> None:
        """Remove the lock file (when it is still ours) and drop the lock."""
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


#: A lock file released and removed between our open and our flock is opened again, this many times at most.
MAX_LOCK_ATTEMPTS = 5


def _open_lock_file(run: RunDir) -> int:
    path = run.lock_file
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise ConfigError(f"cannot lock run directory {run.path}: {path.name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"cannot lock run directory {run.path}: {path.name} is not a regular file")
    return fd


def _flock_or_name_holder(fd: int, run: RunDir) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise ConfigError(f"cannot lock run directory {run.path}: {exc.strerror or exc}") from None
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        raise ConfigError(
            f"run directory {run.path} is in use by process {pid if pid.isdigit() else '(unknown)'} "
            "(another mnistkit train); wait for it to end, or choose another --out"
        ) from None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or a run directory's ``model.safetensors`` (every command accepts both)."""
    p = Path(path)
    if p.is_dir():
        run = RunDir(p)
        p = run.checkpoint
        if not run.has(p):
            raise CheckpointError(f"{path} is a directory without {p.name}; is the run finished?")
        run.require_regular(p, CheckpointError, "run's checkpoint")  # a file given by name may be a link
    return p


def default_run_dir(cfg: TrainConfig) -> RunDir:
    """``--out`` when given, else ``runs/<--name>``, else ``runs/<dataset>-<model>-<timestamp>``."""
    if cfg.out:
        return RunDir(cfg.out)
    name = cfg.name or f"{Path(cfg.dataset).stem}-{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}"
    return RunDir(Path("runs") / name)


def _write_json(path: Path, obj: Any) -> Path:
    return atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def _csv_value(text: str | None):
    """A metrics.csv cell as int, float or None (empty cells are missing values)."""
    if text is None or text == "" or text.lower() in {"none", "null", "nan"}:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
