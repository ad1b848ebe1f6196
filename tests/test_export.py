"""``mnistkit export``: ONNX and TorchScript files that match PyTorch and take any batch size."""

from __future__ import annotations

import builtins
import json
import sys
import warnings

import pytest
import torch
from helpers import run_cli

from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.inference import class_probabilities, predict_logits
from mnistkit.models import build_model
from mnistkit.preprocess import Normalization

NORM = Normalization(0.1307, 0.3081)


def make_checkpoint(tmp_path, name: str, **options):
    torch.manual_seed(0)
    model = build_model(name, **options)
    classes = ["no", "yes"] if model.mnistkit_task == "binary" else [str(i) for i in range(10)]
    return save_checkpoint(
        tmp_path / f"{name}.safetensors", model, {"dataset": "mnist", "norm": NORM.to_dict(), "class_names": classes}
    )


def uint8_batch(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def reference(ckpt, images):
    """What mnistkit itself computes for uint8 images: logits and probabilities."""
    return (
        predict_logits(ckpt.model, images, ckpt.norm),
        class_probabilities(ckpt.model, images, ckpt.norm, ckpt.task),
    )


@pytest.mark.parametrize("name", ["logreg", "cnn", "binary-logreg"])
def test_onnx_matches_torch_for_batches_of_3_and_7(tmp_path, capsys, name):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = make_checkpoint(tmp_path, name)
    code, out, err = run_cli(["export", path, "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'm.onnx'} (onnx; max |difference| vs PyTorch")
    ckpt = load_checkpoint(path)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "pixels" and session.get_inputs()[0].shape[0] == "batch"
    for n, seed in ((3, 1), (7, 2)):
        images = uint8_batch(n, seed)
        logits, proba = session.run(["logits", "probabilities"], {"pixels": images.float().unsqueeze(1).numpy()})
        want_logits, want_proba = reference(ckpt, images)
        assert proba.shape == (n, len(ckpt.class_names))
        assert (torch.from_numpy(logits) - want_logits).abs().max() <= 1e-4
        assert (torch.from_numpy(proba) - want_proba).abs().max() <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["class_names"]) == ckpt.class_names
    assert json.loads(props["norm"]) == {"mean": 0.1307, "std": 0.3081}
    assert "0..255" in props["input"] and json.loads(props["mnistkit"])["model"] == name


@pytest.mark.parametrize("name", ["logreg", "cnn"])
def test_torchscript_matches_torch_for_batches_of_3_and_7(tmp_path, capsys, name):
    path = make_checkpoint(tmp_path, name)
    code, _, err = run_cli(["export", path, "--format", "torchscript", "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    ckpt = load_checkpoint(path)
    extra = {"mnistkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra["mnistkit.json"])["class_names"] == ckpt.class_names
    for n, seed in ((3, 1), (7, 2)):
        images = uint8_batch(n, seed)
        with torch.no_grad():
            logits, proba = loaded(images.float().unsqueeze(1))
        want_logits, want_proba = reference(ckpt, images)
        assert (logits - want_logits).abs().max() <= 1e-4 and (proba - want_proba).abs().max() <= 1e-4


def test_missing_export_extra_says_how_to_install(tmp_path, capsys, monkeypatch):
    path = make_checkpoint(tmp_path, "logreg")
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    code, _, err = run_cli(["export", path, "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2
    assert err == "mnistkit: error: ONNX export needs onnxruntime: pip install 'mnistkit[export]'\n"
    assert not (tmp_path / "m.onnx").exists()


def test_a_failed_check_leaves_no_file_behind(tmp_path, capsys, monkeypatch):
    import mnistkit.export

    path = make_checkpoint(tmp_path, "logreg")
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(mnistkit.export, "TOLERANCE", -1.0)  # every export now "differs"
    code, _, err = run_cli(["export", path, "--format", "torchscript", "--out", tmp_path / "out" / "m.pt"], capsys)
    assert code == 2 and "differs from the PyTorch model" in err and len(err.splitlines()) == 1
    assert list((tmp_path / "out").iterdir()) == []  # neither m.pt nor a temp file


def test_bad_format_and_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["export", tmp_path / "x.safetensors", "--format", "tflite", "--out", "m"], capsys)
    assert code == 2 and "'tflite' is not one of 'onnx', 'torchscript'" in err
    code, _, err = run_cli(
        ["export", tmp_path / "x.safetensors", "--format", "torchscript", "--out", tmp_path / "m.pt"], capsys
    )
    assert code == 2 and "checkpoint not found" in err
