"""``mnistkit predict``: image files, folders, stdin, Kaggle CSV; bad files reported, others predicted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
from helpers import run_cli
from PIL import Image
from synthetic import quick_train

from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.data.kaggle import read_kaggle_csv
from mnistkit.inference import class_probabilities
from mnistkit.models import build_model
from mnistkit.prediction import analyze_inputs, predict_files
from mnistkit.preprocess import Normalization

MNIST_NORM = Normalization(0.1307, 0.3081)
CLASSES = [str(i) for i in range(10)]


def write_checkpoint(path: Path, model) -> Path:
    return save_checkpoint(path, model, {"dataset": "mnist", "norm": MNIST_NORM.to_dict(), "class_names": CLASSES})


@pytest.fixture(scope="module")
def mnist_test(mnist_root):
    """The first 500 MNIST test images (uint8 [N, 28, 28]) and labels."""
    from mnistkit.data.idx import read_idx

    raw = mnist_root / "MNIST" / "raw"
    return read_idx(raw / "t10k-images-idx3-ubyte.gz")[:500], read_idx(raw / "t10k-labels-idx1-ubyte.gz")[:500].long()


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory, mnist_root) -> Path:
    """A checkpoint of a logreg trained briefly on 20k real MNIST training images."""
    from mnistkit.data.idx import read_idx

    raw = mnist_root / "MNIST" / "raw"
    images = read_idx(raw / "train-images-idx3-ubyte.gz")[:20000]
    labels = read_idx(raw / "train-labels-idx1-ubyte.gz")[:20000].long()
    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "m.safetensors",
        quick_train("logreg", images, labels, MNIST_NORM, steps=300, batch_size=256, lr=3e-3),
    )


@pytest.fixture(scope="module")
def digit_dir(tmp_path_factory, mnist_test) -> Path:
    """Six MNIST test digits as 28x28 PNGs, two of them in a sub-folder."""
    root = tmp_path_factory.mktemp("digits")
    (root / "sub").mkdir()
    images, _ = mnist_test
    for i in range(6):
        where = root / "sub" if i >= 4 else root
        Image.fromarray(images[i].numpy()).save(where / f"d{i}.png")
    (root / "notes.txt").write_text("not an image; folders only pick up image suffixes")
    return root


def test_lines_for_a_folder_recursive_and_sorted(ckpt_path, digit_dir, mnist_test, capsys, monkeypatch):
    code, out, err = run_cli(["predict", ckpt_path, digit_dir], capsys, monkeypatch)
    assert code == 0 and err == ""
    lines = out.splitlines()
    paths = [line.split("  ")[0] for line in lines]
    assert paths == sorted(str(p) for p in digit_dir.rglob("*.png")) and len(lines) == 6
    for line in lines:
        _path, label, p = line.split("  ")
        assert label in CLASSES and 0 < float(p) <= 1
    # Labels match the model on the raw MNIST tensor.
    ckpt = load_checkpoint(ckpt_path)
    images, _ = mnist_test
    want = class_probabilities(ckpt.model, images[:6], ckpt.norm, "multiclass").argmax(1).tolist()
    got = {Path(line.split("  ")[0]).name: int(line.split("  ")[1]) for line in lines}
    assert [got[f"d{i}.png"] for i in range(6)] == want


def test_mnist_pngs_give_exactly_the_raw_tensor_predictions(ckpt_path, mnist_test, tmp_path):
    images, labels = mnist_test
    paths = []
    for i in range(200):
        paths.append(str(tmp_path / f"{i:03d}.png"))
        Image.fromarray(images[i].numpy()).save(paths[-1])
    _names, analyses, failures = analyze_inputs(paths)
    tensor = torch.from_numpy(np.stack([a.digit for a in analyses]))
    assert failures == [] and torch.equal(tensor, images[:200])  # byte-identical model input
    ckpt = load_checkpoint(ckpt_path)
    result = predict_files(ckpt, paths)
    proba = class_probabilities(ckpt.model, images[:200], ckpt.norm, "multiclass")
    assert [p.label for p in result.predictions] == [str(k) for k in proba.argmax(1).tolist()]
    assert np.allclose([p.probability for p in result.predictions], proba.max(1).values.numpy(), atol=1e-6)
    accuracy = (proba.argmax(1) == labels[:200]).float().mean().item()
    assert accuracy > 0.93  # 96.5 % with this model (seed 0); a broken input path falls far below


def test_json_with_top_k(ckpt_path, digit_dir, capsys, monkeypatch):
    code, out, _ = run_cli(
        ["predict", ckpt_path, digit_dir / "d0.png", digit_dir / "d1.png", "--json", "--top-k", "3"],
        capsys,
        monkeypatch,
    )
    assert code == 0
    doc = json.loads(out)
    assert [d["path"] for d in doc] == [str(digit_dir / "d0.png"), str(digit_dir / "d1.png")]
    for d in doc:
        assert set(d) == {"path", "label", "probability", "top", "unsure", "reason"} and len(d["top"]) == 3
        assert d["top"][0] == [d["label"], d["probability"]]
        ps = [p for _, p in d["top"]]
        assert ps == sorted(ps, reverse=True)


def test_top_k_lines_show_k_pairs_and_bad_k_is_refused(ckpt_path, digit_dir, capsys, monkeypatch):
    code, out, _ = run_cli(["predict", ckpt_path, digit_dir / "d0.png", "--top-k", "2"], capsys, monkeypatch)
    assert code == 0 and len(out.strip().split("  ")) == 5
    code, out, err = run_cli(["predict", ckpt_path, digit_dir / "d0.png", "--top-k", "11"], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err == "mnistkit: error: --top-k must be between 1 and the number of classes (10), got 11\n"


def test_stdin_dash(ckpt_path, digit_dir, capsys, monkeypatch):
    data = (digit_dir / "d3.png").read_bytes()
    code, out, _ = run_cli(["predict", ckpt_path, "-"], capsys, monkeypatch, stdin=data)
    _, direct, _ = run_cli(["predict", ckpt_path, digit_dir / "d3.png"], capsys, monkeypatch)
    assert code == 0 and out.split("  ")[0] == "-" and out.split("  ")[1:] == direct.split("  ")[1:]


def test_bad_files_among_good_ones(ckpt_path, digit_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "text.png").write_text("definitely not a PNG")
    (tmp_path / "empty.jpg").write_bytes(b"")
    args = [
        "predict",
        ckpt_path,
        digit_dir / "d0.png",
        tmp_path / "text.png",
        tmp_path / "empty.jpg",
        tmp_path / "missing.png",
        digit_dir / "d1.png",
    ]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert [line.split("  ")[0] for line in out.splitlines()] == [str(digit_dir / "d0.png"), str(digit_dir / "d1.png")]
    errors = err.splitlines()
    assert len(errors) == 3
    for name, line in zip(["text.png", "empty.jpg", "missing.png"], errors):
        assert line.startswith("mnistkit predict: error: ") and name in line


def test_exit_code_2_reaches_the_process(ckpt_path, digit_dir, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x00\x01garbage")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistkit",
            "predict",
            str(ckpt_path),
            str(digit_dir / "d0.png"),
            str(tmp_path / "bad.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert len(done.stdout.splitlines()) == 1 and len(done.stderr.splitlines()) == 1
    assert "bad.png" in done.stderr


def _write_kaggle_csv(path: Path, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    header = (["label"] if labels is not None else []) + [f"pixel{i}" for i in range(784)]
    rows = [",".join(header)]
    for i, img in enumerate(images.reshape(len(images), -1).tolist()):
        rows.append(",".join(map(str, ([int(labels[i])] if labels is not None else []) + img)))
    path.write_text("\n".join(rows) + "\n")


def test_kaggle_csv_in_submission_out_with_accuracy(ckpt_path, mnist_test, tmp_path, capsys, monkeypatch):
    images, labels = mnist_test
    _write_kaggle_csv(tmp_path / "train.csv", images[:300], labels[:300])
    code, out, err = run_cli(
        ["predict", ckpt_path, "--csv", tmp_path / "train.csv", "--out", tmp_path / "sub.csv"], capsys, monkeypatch
    )
    assert code == 0 and err == ""
    sub = (tmp_path / "sub.csv").read_text().splitlines()
    assert sub[0] == "ImageId,Label" and len(sub) == 301
    assert [int(r.split(",")[0]) for r in sub[1:]] == list(range(1, 301))
    ckpt = load_checkpoint(ckpt_path)
    want = class_probabilities(ckpt.model, images[:300], ckpt.norm, "multiclass").argmax(1)
    assert [int(r.split(",")[1]) for r in sub[1:]] == want.tolist()
    accuracy = (want == labels[:300]).float().mean().item() * 100
    assert f"accuracy: {accuracy:.2f}% on 300 labelled rows" in out


def test_kaggle_test_csv_without_labels_to_stdout(ckpt_path, mnist_test, tmp_path, capsys, monkeypatch):
    images, _ = mnist_test
    _write_kaggle_csv(tmp_path / "test.csv", images[:5], None)
    got, labels = read_kaggle_csv(tmp_path / "test.csv")
    assert labels is None and torch.equal(got, images[:5])
    code, out, err = run_cli(["predict", ckpt_path, "--csv", tmp_path / "test.csv"], capsys, monkeypatch)
    assert code == 0 and err == "" and out.splitlines()[0] == "ImageId,Label" and len(out.splitlines()) == 6


def test_bad_csv_and_bad_usage_are_one_line_exit_2(ckpt_path, tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.csv").write_text("label,pixel0\n1,2\n")
    code, _, err = run_cli(["predict", ckpt_path, "--csv", tmp_path / "bad.csv"], capsys, monkeypatch)
    assert code == 2 and len(err.splitlines()) == 1 and "lacks 'pixel1'" in err
    code, _, err = run_cli(["predict", ckpt_path], capsys, monkeypatch)
    assert code == 2 and "give at least one INPUT" in err
    code, _, err = run_cli(["predict", tmp_path / "nope.safetensors", "x.png"], capsys, monkeypatch)
    assert code == 2 and "checkpoint not found" in err


def test_class_names_are_printed(tmp_path, digit_dir, capsys, monkeypatch):
    model = build_model("logreg")
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    path = save_checkpoint(
        tmp_path / "named.safetensors", model, {"dataset": "x", "norm": MNIST_NORM.to_dict(), "class_names": names}
    )
    # An untrained model is unsure of everything: --min-confidence 0 shows its plain guess.
    code, out, _ = run_cli(["predict", path, digit_dir / "d0.png", "--min-confidence", "0"], capsys, monkeypatch)
    assert code == 0 and out.split("  ")[1] in names


def test_a_run_directory_works_as_checkpoint(ckpt_path, digit_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(ckpt_path.read_bytes())
    code, out, _ = run_cli(["predict", tmp_path / "run", digit_dir / "d0.png"], capsys, monkeypatch)
    _, direct, _ = run_cli(["predict", ckpt_path, digit_dir / "d0.png"], capsys, monkeypatch)
    assert code == 0 and out == direct


def test_python_api_refuses_a_min_confidence_that_is_no_probability():
    """``mnistkit.predict`` checks ``min_confidence`` with the CLI's rule before loading a model."""
    import mnistkit
    from mnistkit.errors import ConfigError

    with pytest.raises(ConfigError, match="--min-confidence must be between 0 and 1, got 2"):
        mnistkit.predict(np.zeros((28, 28), np.uint8), model="no-such-model", min_confidence=2)


def test_a_checkpoint_without_a_threshold_of_its_own_takes_the_default():
    """One owner of the fallback: the model's own threshold, else DEFAULT_MIN_CONFIDENCE."""
    from mnistkit.unsure import DEFAULT_MIN_CONFIDENCE, min_confidence_for, model_min_confidence

    assert model_min_confidence({}) == DEFAULT_MIN_CONFIDENCE
    assert model_min_confidence({"min_confidence": 0.85}) == 0.85
    assert model_min_confidence({}, default=0.5) == 0.5

    class Model:
        min_confidence = 0.85

    assert min_confidence_for(Model(), None) == 0.85 and min_confidence_for(Model(), 0.2) == 0.2
