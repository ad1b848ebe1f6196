"""Checkpoints: safetensors weights plus JSON metadata in one file, never pickled.

Layout: a standard ``.safetensors`` file whose string metadata holds
``mnistkit`` (JSON: model name and options, task, dataset, normalisation,
class names, config, metrics, versions) and ``mnistkit_sha256``, a SHA-256
over that JSON and every tensor's name, dtype, shape and bytes. Loading
verifies the digest, so a flipped byte anywhere is refused rather than
silently giving a different model. Files are written to a temporary file in
the same folder and renamed into place, so a crash or a full disk never
leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from mnistkit.errors import CheckpointError, MnistkitError

FORMAT = "mnistkit-checkpoint/1"
_MAX_HEADER = 100 * 1024 * 1024  # bytes; a larger header is not a checkpoint of ours


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and its metadata."""

    model: torch.nn.Module
    meta: dict
    path: Path | None = None

    @property
    def norm(self):
        from mnistkit.preprocess import Normalization

        return Normalization(float(self.meta["norm"]["mean"]), float(self.meta["norm"]["std"]))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def temperature(self) -> float:
        """Logits are divided by this before the softmax (fitted on the validation split at the end
        of training so that probabilities are calibrated); 1.0 for checkpoints without one."""
        return float(self.meta.get("temperature", 1.0))


def versions() -> dict:
    """Library versions recorded in every checkpoint, for reproducibility."""
    import platform

    from mnistkit import __version__

    return {"mnistkit": __version__, "torch": torch.__version__, "python": platform.python_version()}


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file + fsync + rename; the old file survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Save tensors + JSON metadata with a digest, atomically. Raises CheckpointError on I/O failure."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, **meta}
    meta_json = json.dumps(meta, sort_keys=True, default=_json_default)
    blob = save(tensors, metadata={"mnistkit": meta_json, "mnistkit_sha256": _digest(meta_json, tensors)})
    try:
        return atomic_write_bytes(path, blob)
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; any previous file there is unchanged"
        ) from None


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a file written by :func:`save_tensors`; every fault is a one-line CheckpointError."""
    from safetensors.torch import load

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give the .safetensors file inside it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    header = _read_header(path, data)
    _check_length(path, data, header)
    raw_meta = header.get("__metadata__") or {}
    raw_meta = raw_meta if isinstance(raw_meta, dict) else {}
    meta_json, digest = raw_meta.get("mnistkit"), raw_meta.get("mnistkit_sha256")
    if not isinstance(meta_json, str) or not isinstance(digest, str) or not meta_json or not digest:
        raise CheckpointError(f"{path} is a safetensors file but not an mnistkit checkpoint (no mnistkit metadata)")
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error type for bad offsets/dtypes
        raise CheckpointError(f"checkpoint {path} is corrupt: {' '.join(str(exc).split())}") from None
    if _digest(meta_json, tensors) != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt or was modified: its SHA-256 digest does not match")
    try:
        meta = json.loads(meta_json)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"checkpoint {path} has unreadable metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has unsupported checkpoint format {meta.get('format') if isinstance(meta, dict) else None!r}; expected {FORMAT}")
    return tensors, meta


def _read_header(path: Path, data: bytes) -> dict:
    """Parse the safetensors header ourselves so non-safetensors files get a clear message."""
    if len(data) < 8:
        raise CheckpointError(f"{path} is not a safetensors checkpoint (file too short: {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n == 0 or n > min(_MAX_HEADER, len(data) - 8):
        pickled = data[:1] == b"\x80" or data[:2] == b"PK" or path.suffix in (".pt", ".pth", ".pkl", ".ckpt")
        hint = (" (it looks like a pickle/torch.save file, which mnistkit never loads: unpickling can run "
                "arbitrary code; use a model.safetensors written by mnistkit train)") if pickled else ""
        raise CheckpointError(f"{path} is not a safetensors checkpoint{hint}")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: not ours either
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint (corrupt header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint (header is not an object)")
    return header


def _check_length(path: Path, data: bytes, header: dict) -> None:
    """Name truncation plainly: the header says where the last tensor ends; the file must reach it."""
    ends = [e["data_offsets"][1] for k, e in header.items()
            if k != "__metadata__" and isinstance(e, dict) and isinstance(e.get("data_offsets"), list)
            and len(e["data_offsets"]) == 2 and isinstance(e["data_offsets"][1], int)]
    n = struct.unpack("<Q", data[:8])[0]
    needed = 8 + n + max(ends, default=0)
    if len(data) < needed:
        raise CheckpointError(f"checkpoint {path} is corrupt (truncated): {len(data)} bytes, its header describes {needed}")


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict) -> Path:
    """Save a model built by :func:`mnistkit.models.build_model` with its metadata.

    ``meta`` should carry ``dataset``, ``norm`` (``{"mean", "std"}``), ``class_names``,
    and optionally ``config`` and ``metrics``; the model's name, options and task are
    taken from the model itself.
    """
    model = _unwrap(model)
    name = getattr(model, "mnistkit_name", None)
    if name is None:
        raise CheckpointError("only models built with mnistkit.models.build_model can be checkpointed")
    full = {
        "model": name,
        "model_options": getattr(model, "mnistkit_options", {}),
        "task": getattr(model, "mnistkit_task", "multiclass"),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **meta,
    }
    state = model.state_dict()
    return save_tensors(path, dict(state), full)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load, verify and rebuild a checkpoint's model (eval mode) on ``device``.

    Refuses with :class:`CheckpointError` a missing, truncated or tampered file, a
    pickle, a checkpoint naming an unknown model, and weights that do not fit the
    model its metadata names (listing missing and unexpected keys).
    """
    from mnistkit.models import build_model

    tensors, meta = load_tensors(path)
    _check_meta(meta, path)
    options = meta.get("model_options", {})
    try:  # a weightless skeleton first: bogus options (a 10^9-unit layer) must not allocate anything
        with torch.device("meta"):
            skeleton = build_model(meta["model"], **options)
    except MnistkitError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be rebuilt: {exc}") from None
    except Exception as exc:  # the options come from an untrusted file; the builder may reject them any way
        raise CheckpointError(f"checkpoint {path} cannot be rebuilt: model {meta['model']!r} with options "
                              f"{options}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    _check_fits(skeleton, tensors, path)
    model = build_model(meta["model"], **options)
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    return Checkpoint(model=model, meta=meta, path=Path(path))


def _check_meta(meta: dict, path) -> None:
    """The fields a model is rebuilt from exist and have the right JSON types."""
    for key in ("model", "norm", "class_names", "task"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} lacks metadata field {key!r}; it was not written by save_checkpoint")
    norm = meta["norm"]
    ok = (isinstance(meta["model"], str) and isinstance(meta.get("model_options", {}), dict)
          and isinstance(meta["class_names"], list) and all(isinstance(c, str) for c in meta["class_names"])
          and meta["task"] in ("multiclass", "binary") and isinstance(norm, dict)
          and all(isinstance(norm.get(k), (int, float)) and not isinstance(norm.get(k), bool) for k in ("mean", "std")))
    if not ok:
        raise CheckpointError(f"checkpoint {path} has malformed metadata (model, model_options, class_names, "
                              "task or norm has the wrong type)")


def _check_fits(model: torch.nn.Module, tensors: dict, path) -> None:
    """The tensors are exactly the model's state: same keys, same shapes (model may be a meta skeleton)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit model {model.mnistkit_name!r}: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}; was it saved from another model?"
        )
    for k, v in expected.items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            raise CheckpointError(
                f"checkpoint {path} does not fit model {model.mnistkit_name!r}: {k} has shape "
                f"{tuple(tensors[k].shape)}, the model expects {tuple(v.shape)}"
            )


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers (state-dict keys without prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _json_default(o):
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
