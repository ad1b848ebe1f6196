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

Every reader and writer in the package asks :class:`RunDir` for these paths, so a file name
lives here only. Writes are atomic (:func:`mnistkit.fileio.atomic_write_bytes`): a killed
run leaves the previous version of each file, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistkit.errors import CheckpointError, ConfigError
from mnistkit.fileio import atomic_write_bytes, clean_stale_temporaries

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
#: metrics.csv's columns, in order (metrics.jsonl rows may carry more keys)
METRIC_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "elapsed")


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

    # ------------------------------------------------------------------ states of a run
    def is_finished(self) -> bool:
        """A finished run has its model; an interrupted one only its training state."""
        return self.checkpoint.exists()

    def is_interrupted(self) -> bool:
        return self.state.exists()

    def prepare(self, resuming: bool) -> RunDir:
        """Create the directory; refuse to overwrite a finished or interrupted run unless resuming.

        Temporaries of our atomic writes (``.NAME.*.tmp``) left by a killed run are deleted here.
        """
        if not resuming and self.is_finished():
            raise ConfigError(
                f"run directory {self.path} already holds a finished run; choose another --out "
                f"or continue it with --resume {self.path}"
            )
        if not resuming and self.is_interrupted():
            raise ConfigError(
                f"run directory {self.path} holds an interrupted run; continue it with --resume {self.path}"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create run directory {self.path}: {exc.strerror or exc}") from None
        clean_stale_temporaries(self.path)  # left by a kill -9 during an atomic write; nothing else writes here now
        return self

    # ------------------------------------------------------------------ readers and writers
    def write_config(self, config: dict) -> Path:
        return _write_json(self.config, config)

    def read_config(self, label: str) -> dict:
        """The saved config as a dict (bounded read; faults are one ConfigError starting with ``label``)."""
        from mnistkit.config import read_config_dict

        return read_config_dict(self.config, label)

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.jsonl and metrics.csv atomically (small files; crash-safe)."""
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in rows).encode())
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.metrics_csv, buf.getvalue().encode())

    def write_eval(self, evaluation: dict) -> Path:
        return _write_json(self.eval, evaluation)

    def write_summary(self, summary: dict) -> Path:
        return _write_json(self.summary, summary)

    def read_summary(self) -> dict:
        return json.loads(self.summary.read_text())


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or a run directory's ``model.safetensors`` (every command accepts both)."""
    p = Path(path)
    if p.is_dir():
        p = RunDir(p).checkpoint
        if not p.exists():
            raise CheckpointError(f"{path} is a directory without {p.name}; is the run finished?")
    return p


def default_run_dir(cfg: TrainConfig) -> RunDir:
    """``--out`` when given, else ``runs/<--name>``, else ``runs/<dataset>-<model>-<timestamp>``."""
    if cfg.out:
        return RunDir(cfg.out)
    name = cfg.name or f"{Path(cfg.dataset).stem}-{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}"
    return RunDir(Path("runs") / name)


def _write_json(path: Path, obj: Any) -> Path:
    return atomic_write_bytes(path, json.dumps(obj, indent=2).encode())
