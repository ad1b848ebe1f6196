"""Export a checkpoint to ONNX or TorchScript, with normalisation inside the graph.

The exported model takes what a client has in hand: **float32 pixels on the
0..255 scale, shape ``[N, 1, 28, 28]`` (any N), already framed like MNIST**
(bright ink on black, digit centred; run
:func:`mnistkit.preprocess.image.preprocess_image` on photos first). It returns
two outputs: ``logits`` (``[N, C]``; ``[N]`` for binary models) and
``probabilities`` (``[N, C]``). Baking the checkpoint's normalisation into the
graph means no client can normalise twice or with the wrong statistics.

ONNX files carry ``metadata_props``: ``class_names`` and ``norm`` (JSON),
``input`` (the contract above) and ``mnistkit`` (the checkpoint's metadata).
TorchScript files carry the same as ``_extra_files["mnistkit.json"]``.

Every export is checked before it is kept: the exported model runs on batches
of 1 and 7 (so the dynamic batch dimension is exercised) and must match the
PyTorch model within :data:`TOLERANCE`. The model is serialised in memory and
written once with :func:`mnistkit.fileio.atomic_write_bytes` (temporary file,
rename, the umask's mode), so a failed export, a full disk included, never leaves
a file under the final name nor a temporary beside it.

ONNX needs the ``export`` extra (onnx, onnxruntime, onnxscript); TorchScript
needs only torch (``torch.jit`` is deprecated upstream but still works).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mnistkit.errors import ConfigError, MnistkitError
from mnistkit.fileio import atomic_write_bytes

FORMATS = ("onnx", "torchscript")
#: Largest allowed |exported - torch| over logits and probabilities.
TOLERANCE = 1e-4
#: Batch sizes the check runs (two sizes prove the batch dimension is dynamic).
CHECK_BATCHES = (1, 7)
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("logits", "probabilities")
INPUT_CONTRACT = (
    "float32 [N, 1, 28, 28], pixel values 0..255, MNIST-framed (bright ink on black); normalisation is inside the model"
)
EXTRA_HINT = "pip install 'mnistkit[export]'"


class ExportError(MnistkitError):
    """The export failed or the exported model does not match the PyTorch model."""


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float


class PixelModel(nn.Module):
    """Wraps a model so it takes 0..255 float pixels: normalisation, model, probabilities.

    Uses the same arithmetic as :func:`mnistkit.preprocess.normalize`
    (``x * 1/(255*std) - mean/std``), so exported and PyTorch outputs agree to
    float rounding.
    """

    scale: torch.Tensor  # buffers, declared for the type checker
    shift: torch.Tensor

    def __init__(self, model: nn.Module, mean: float, std: float, task: str):
        super().__init__()
        self.model = model
        self.binary = task == "binary"
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std), dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(mean / std, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels * self.scale - self.shift)
        if self.binary:
            p = torch.sigmoid(logits)
            return logits, torch.stack([1 - p, p], dim=1)
        return logits, torch.softmax(logits, dim=1)


def export_checkpoint(checkpoint_path: str | Path, fmt: str, out: str | Path) -> ExportResult:
    """Export ``checkpoint_path`` (a file or run directory) as ``fmt`` to ``out``, checked against PyTorch."""
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()
    ckpt = load_checkpoint(resolve_checkpoint_path(checkpoint_path))
    wrapper = PixelModel(ckpt.model, ckpt.norm.mean, ckpt.norm.std, ckpt.task).eval()
    meta = {"class_names": ckpt.class_names, "norm": ckpt.meta["norm"], "input": INPUT_CONTRACT, "mnistkit": ckpt.meta}
    out = Path(out)
    if fmt == "onnx":
        blob = export_onnx(wrapper, meta)
        diff = check_onnx(wrapper, blob)
    else:
        blob = export_torchscript(wrapper, meta)
        diff = check_torchscript(wrapper, blob)
    if not diff <= TOLERANCE:
        raise ExportError(
            f"exported {fmt} model differs from the PyTorch model by {diff:.2e} "
            f"(allowed {TOLERANCE:.0e}); nothing was written to {out}"
        )
    try:  # the one write: temp file + rename, so a full disk leaves nothing behind
        atomic_write_bytes(out, blob)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}; nothing was written") from None
    return ExportResult(out, fmt, diff)


def _require_onnx() -> None:
    """Fail early, in one line, when the ``export`` extra is missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MnistkitError(f"ONNX export needs {', '.join(missing)}: {EXTRA_HINT}")


def _example(batch: int, seed: int = 0) -> torch.Tensor:
    """Random 0..255 float pixels ``[batch, 1, 28, 28]`` (whole numbers, as real images give)."""
    g = torch.Generator().manual_seed(seed + batch)
    return torch.randint(0, 256, (batch, 1, 28, 28), generator=g).float()


@contextlib.contextmanager
def _quiet_exporter():
    """Silence upstream deprecation chatter and the ONNX exporter's missing-torchvision log lines."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(wrapper: PixelModel, meta: dict) -> bytes:
    """torch.export-based ONNX export with a dynamic batch dimension and metadata_props; the model's bytes.

    The exporter writes to a file in a private temporary folder (removed afterwards);
    the result is returned as bytes so the caller makes the one write into place.
    """
    import onnx

    example = _example(3)
    with tempfile.TemporaryDirectory(prefix="mnistkit-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            try:
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    dynamo=True,
                    verbose=False,
                    external_data=False,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
            except OSError as exc:
                raise ExportError(
                    f"ONNX export failed: cannot write a temporary file in {folder}: {exc.strerror or exc}"
                ) from None
            except Exception as exc:  # the exporter raises many internal types; report one line
                raise ExportError(
                    f"ONNX export failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                ) from None
        model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return model.SerializeToString()


def check_onnx(wrapper: PixelModel, blob: bytes) -> float:
    """Max |onnxruntime - torch| over both outputs for each batch in :data:`CHECK_BATCHES`."""
    import onnxruntime as ort

    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in CHECK_BATCHES:
        x = _example(batch, seed=1)
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        worst = max(worst, _max_diff(wrapper, x, [torch.from_numpy(g) for g in got]))
    return worst


def export_torchscript(wrapper: PixelModel, meta: dict) -> bytes:
    """Trace (the models have no data-dependent control flow) and serialise with metadata, in memory:
    ``torch.jit.save`` to a file aborts the whole process (C++ exception) when the disk is full."""
    buffer = io.BytesIO()
    with _quiet_exporter(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (_example(3),))
        torch.jit.save(traced, buffer, _extra_files={"mnistkit.json": json.dumps(meta, sort_keys=True)})
    return buffer.getvalue()


def check_torchscript(wrapper: PixelModel, blob: bytes) -> float:
    """Max |loaded TorchScript - torch| over both outputs for each batch in :data:`CHECK_BATCHES`."""
    with _quiet_exporter(), torch.no_grad():
        loaded = torch.jit.load(io.BytesIO(blob), map_location="cpu")
        worst = 0.0
        for batch in CHECK_BATCHES:
            x = _example(batch, seed=1)
            worst = max(worst, _max_diff(wrapper, x, list(loaded(x))))
    return worst


@torch.no_grad()
def _max_diff(wrapper: PixelModel, x: torch.Tensor, got: list[torch.Tensor]) -> float:
    expected = wrapper(x)
    return max(float((g.float() - e.float()).abs().max()) for g, e in zip(got, expected))
