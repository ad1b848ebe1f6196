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
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mnistkit.checkpoint_meta import META_FIELDS, check_meta
from mnistkit.errors import CheckpointError, MnistkitError
from mnistkit.fileio import atomic_write_bytes, read_bytes
from mnistkit.models.registry import SEQUENCE_PROBE
from mnistkit.runs import checkpoint_path
from mnistkit.unsure import model_min_confidence

if TYPE_CHECKING:  # pragma: no cover
    from mnistkit.novelty import NoveltyModel

__all__ = [
    "FORMAT",
    "META_FIELDS",
    "Checkpoint",
    "load_checkpoint",
    "load_tensors",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "save_tensors",
]

FORMAT = "mnistkit-checkpoint/1"
#: Most tensors a file of ours holds. The largest model the registry builds within
#: :data:`mnistkit.models.registry.LAYER_LIMITS` (a CNN of four stages) has 26; a training state
#: holds the model twice (weights and best weights) plus Adam's two moments and step per weight.
MAX_TENSORS = 256
#: Header bytes one tensor's entry may take: its name, dtype, shape and offsets are under 150.
HEADER_BYTES_PER_TENSOR = 512
#: Header bytes for the metadata: the JSON of model, config, metrics, card and class names
#: (1,000 names of 64 characters are 70 kB; a trained checkpoint's whole header is about 10 kB).
MAX_METADATA_BYTES = 4 * 1024**2
#: The largest header read, checked from its 8-byte length before the JSON is parsed: parsing
#: a 99 MB header listing a million empty tensors takes gigabytes and most of a minute.
MAX_HEADER_BYTES = MAX_TENSORS * HEADER_BYTES_PER_TENSOR + MAX_METADATA_BYTES
#: The tensor types mnistkit writes, with safetensors' names for them: fp32 weights, statistics
#: and optimiser state, int64 counters (BatchNorm's batch count). Anything else (fp64, fp8, ...)
#: was not written by us, and some types (fp8) have no kernels for the checks below.
WRITTEN_DTYPES = {torch.float32: "F32", torch.int64: "I64"}
#: Largest checkpoint or training-state file read (bytes). The largest preset's state file
#: (best-mlp, weights + best weights + Adam moments) is about 30 MB.
MAX_CHECKPOINT_BYTES = 1024**3


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode), its metadata, and its novelty model
    (:mod:`mnistkit.novelty`: "does this input look like the training digits?") or None."""

    model: torch.nn.Module
    meta: dict
    path: Path | None = None
    novelty: NoveltyModel | None = None

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

    @property
    def min_confidence(self) -> float:
        """The top probability below which this model's predictions are unsure, when ``--min-confidence``
        is not given (:func:`mnistkit.unsure.model_min_confidence`)."""
        return model_min_confidence(self.meta)


def versions() -> dict:
    """Library versions recorded in every checkpoint, for reproducibility."""
    import platform

    from mnistkit import __version__

    return {"mnistkit": __version__, "torch": torch.__version__, "python": platform.python_version()}


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
    data = read_bytes(path, MAX_CHECKPOINT_BYTES, CheckpointError, "checkpoint")
    header = _read_header(path, data)
    _check_entries(path, header)
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
        raise CheckpointError(
            f"{path} has unsupported checkpoint format {meta.get('format') if isinstance(meta, dict) else None!r}; expected {FORMAT}"
        )
    return tensors, meta


def _read_header(path: Path, data: bytes) -> dict:
    """Parse the safetensors header ourselves so non-safetensors files get a clear message."""
    if len(data) < 8:
        raise CheckpointError(f"{path} is not a safetensors checkpoint (file too short: {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 0 < n <= len(data) - 8 and n > MAX_HEADER_BYTES and data[8:9] == b"{":
        raise CheckpointError(
            f"{path} has a {n:,}-byte safetensors header; an mnistkit checkpoint's is at most "
            f"{MAX_HEADER_BYTES:,} ({MAX_TENSORS} tensors and their metadata): it was not written by mnistkit"
        )
    if n == 0 or n > min(MAX_HEADER_BYTES, len(data) - 8):
        pickled = data[:1] == b"\x80" or data[:2] == b"PK" or path.suffix in (".pt", ".pth", ".pkl", ".ckpt")
        hint = (
            (
                " (it looks like a pickle/torch.save file, which mnistkit never loads: unpickling can run "
                "arbitrary code; use a model.safetensors written by mnistkit train)"
            )
            if pickled
            else ""
        )
        raise CheckpointError(f"{path} is not a safetensors checkpoint{hint}")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: not ours either
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint (corrupt header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint (header is not an object)")
    return header


def _check_entries(path: Path, header: dict) -> None:
    """At most :data:`MAX_TENSORS` tensors, each of a type we write (:data:`WRITTEN_DTYPES`),
    checked on the header before any tensor is made."""
    entries = {k: e for k, e in header.items() if k != "__metadata__"}
    if len(entries) > MAX_TENSORS:
        raise CheckpointError(
            f"{path} lists {len(entries):,} tensors; an mnistkit checkpoint has at most {MAX_TENSORS}"
        )
    allowed = set(WRITTEN_DTYPES.values())
    for name, entry in entries.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if not isinstance(dtype, str) or dtype not in allowed:  # a list or object is no dtype (and unhashable)
            raise CheckpointError(
                f"checkpoint {path} stores {name[:60]!r} as {str(dtype)[:20]}; mnistkit writes only "
                f"{', '.join(sorted(allowed))} tensors"
            )


def _check_length(path: Path, data: bytes, header: dict) -> None:
    """Name truncation plainly: the header says where the last tensor ends; the file must reach it."""
    ends = [
        e["data_offsets"][1]
        for k, e in header.items()
        if k != "__metadata__"
        and isinstance(e, dict)
        and isinstance(e.get("data_offsets"), list)
        and len(e["data_offsets"]) == 2
        and isinstance(e["data_offsets"][1], int)
    ]
    n = struct.unpack("<Q", data[:8])[0]
    needed = 8 + n + max(ends, default=0)
    if len(data) < needed:
        raise CheckpointError(
            f"checkpoint {path} is corrupt (truncated): {len(data)} bytes, its header describes {needed}"
        )


def save_checkpoint(
    path: str | Path, model: torch.nn.Module, meta: dict, extra_tensors: dict[str, torch.Tensor] | None = None
) -> Path:
    """Save a model built by :func:`mnistkit.models.build_model` with its metadata.

    ``meta`` should carry ``dataset``, ``norm`` (``{"mean", "std"}``), ``class_names``,
    and optionally ``config`` and ``metrics``; the model's name, options and task are
    taken from the model itself. ``extra_tensors`` are stored beside the weights, under the
    digest: a novelty model's (``novelty.*`` names, with ``meta["novelty"]``), the only extra tensors a
    checkpoint carries.
    """
    from mnistkit.novelty import PREFIX

    extra = dict(extra_tensors or {})
    if any(not k.startswith(PREFIX) for k in extra):
        raise CheckpointError(f"extra checkpoint tensors must be named {PREFIX}*, got {sorted(extra)[:4]}")
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
    return save_tensors(path, {**state, **extra}, full)


def resolve_checkpoint_path(path: str | Path | None) -> Path:
    """Accept a checkpoint file or a run directory (then its ``model.safetensors``); ``None`` is the
    bundled pretrained digit model."""
    if path is None:
        from mnistkit.bundled import bundled_model_path

        return bundled_model_path()
    return checkpoint_path(path)


def load_checkpoint(path: str | Path | None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load, verify and rebuild a checkpoint's model (eval mode) on ``device``.

    ``path`` is a ``.safetensors`` file, a run directory (then its ``model.safetensors``), or
    ``None`` for the bundled digit model (:func:`resolve_checkpoint_path`).

    Refuses with :class:`CheckpointError` a missing, truncated or tampered file, a
    pickle, a checkpoint naming an unknown model, and weights that do not fit the
    model its metadata names (listing missing and unexpected keys).
    """
    from mnistkit.models import build_model
    from mnistkit.novelty import split_tensors

    path = resolve_checkpoint_path(path)  # a run directory, as every command accepts: its model.safetensors

    tensors, meta = load_tensors(path)
    check_meta(meta, path)
    tensors, novelty_tensors = split_tensors(tensors)  # not the model's: checked by their own rule
    options = meta.get("model_options", {})
    try:  # a weightless skeleton first: bogus options (a 10^9-unit layer) must not allocate anything
        with torch.device("meta"):
            skeleton = build_model(meta["model"], **options)
    except MnistkitError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be rebuilt: {exc}") from None
    except Exception as exc:  # the options come from an untrusted file; the builder may reject them any way
        raise CheckpointError(
            f"checkpoint {path} cannot be rebuilt: model {meta['model']!r} with options "
            f"{options}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None
    _check_fits(skeleton, tensors, path)
    _check_consistency(meta, skeleton, path)
    check_finite(tensors, path, dtypes={k: v.dtype for k, v in skeleton.state_dict().items()})
    novelty = _load_novelty(novelty_tensors, meta, skeleton, path)
    model = build_model(meta["model"], **options)
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    return Checkpoint(model=model, meta=meta, path=Path(path), novelty=novelty)


def _load_novelty(tensors: dict[str, torch.Tensor], meta: dict, skeleton: torch.nn.Module, path) -> NoveltyModel | None:
    """The checkpoint's novelty model, or None when it has neither ``novelty.*`` tensors nor metadata;
    one without the other, or features the model cannot produce, is refused."""
    from mnistkit.novelty import NoveltyModel, feature_method

    if not tensors and "novelty" not in meta:
        return None
    if not tensors or "novelty" not in meta:
        raise CheckpointError(
            f"checkpoint {path} has novelty {'tensors' if tensors else 'metadata'} without the "
            f"{'metadata' if tensors else 'tensors'}; it was not written by mnistkit"
        )
    feature = meta["novelty"]["feature"]
    embed = feature_method(skeleton, feature)
    try:
        with torch.no_grad():
            dims = int(embed(torch.empty(1, 1, 28, 28, device="meta")).shape[-1]) if embed is not None else None
    except Exception:  # a model the shape probe cannot drive
        dims = None
    if dims != meta["novelty"]["dims"]:
        has = f"has {dims} {feature!r} features" if dims else f"cannot compute {feature!r} features"
        raise CheckpointError(
            f"checkpoint {path} has a novelty model over {meta['novelty']['dims']} features, but model "
            f"{meta['model']!r} {has}"
        )
    return NoveltyModel.from_checkpoint(tensors, meta["novelty"], len(meta["class_names"]), path)


def _check_consistency(meta: dict, skeleton: torch.nn.Module, path) -> None:
    """The metadata agrees with the model it describes: task, and one class name per output."""
    task = getattr(skeleton, "mnistkit_task", "multiclass")
    if meta["task"] != task:
        raise CheckpointError(f"checkpoint {path} says task {meta['task']!r} but model {meta['model']!r} is {task}")
    outputs = _output_count(skeleton, task)
    if task == "sequence" and outputs is not None:
        outputs -= 1  # CTC's blank is no class
    expected = 2 if task == "binary" else outputs
    if task == "binary" and outputs != 1:
        raise CheckpointError(f"checkpoint {path} is binary but its model has {outputs} outputs; binary models have 1")
    if outputs is not None and len(meta["class_names"]) != expected:
        raise CheckpointError(
            f"checkpoint {path} names {len(meta['class_names'])} classes but its model has "
            f"{outputs} output{'s' if outputs != 1 else ''}"
            f"{' (2 classes)' if task == 'binary' else ''}; the metadata does not fit the weights"
        )


def _output_count(skeleton: torch.nn.Module, task: str = "multiclass") -> int | None:
    """Outputs per image (1 for a binary model's single logit), by a shape-only forward on the meta device."""
    shape = SEQUENCE_PROBE if task == "sequence" else (1, 1, 28, 28)
    try:
        with torch.no_grad():
            out = skeleton(torch.empty(*shape, device="meta"))
    except Exception:  # a model the shape probe cannot drive; the weights' shapes were checked anyway
        return None
    return 1 if out.dim() == 1 else int(out.shape[-1])


def check_finite(
    tensors: dict[str, torch.Tensor], path, prefix: str = "", dtypes: dict[str, torch.dtype] | None = None
) -> None:
    """Refuse NaN or infinite weights: they would give NaN probabilities for every input.

    ``dtypes`` (tensor name -> the model's dtype for it) makes the check on the values the model
    will hold: ``load_state_dict`` casts, and 1e300 is finite in fp64 but infinite in fp32.
    """
    for name, t in tensors.items():
        if not (name.startswith(prefix) and t.is_floating_point() and t.numel()):
            continue
        target = (dtypes or {}).get(name, t.dtype)
        if not bool(torch.isfinite(t.to(target) if target.is_floating_point else t).all()):
            raise CheckpointError(
                f"checkpoint {path} has non-finite values (NaN or infinity) in {name}; "
                "the model diverged or the file was tampered with"
            )


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
