"""Photographed digits: uneven light, shadows, several digits, numbers, the unsure rule, the predict
CLI's model choice and the Python API. Photos are rendered in the test (paper, light field, noise, JPEG)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
pytest.importorskip("scipy")
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage  # noqa: E402

from mnistkit.errors import CheckpointError, ConfigError, InputImageError  # noqa: E402
from mnistkit.number_reading import read_number  # noqa: E402
from mnistkit.preprocess import Normalization  # noqa: E402
from mnistkit.preprocess.image import analyze_image, load_image, preprocess_image  # noqa: E402
from mnistkit.preprocess.ink import ink_mask, mean3x3  # noqa: E402
from mnistkit.unsure import DEFAULT_MIN_CONFIDENCE, unsure_reason  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from helpers import run_cli  # noqa: E402
from synthetic import quick_train  # noqa: E402

_GEOMETRY = importlib.util.spec_from_file_location(
    "geometric_numbers", Path(__file__).parents[1] / "bench" / "geometric_numbers.py"
)
_geometry = importlib.util.module_from_spec(_GEOMETRY)
_GEOMETRY.loader.exec_module(_geometry)
analyze_number = _geometry.analyze_number  # the benchmark's geometry-only baseline

MNIST_NORM = Normalization(0.1307, 0.3081)
CLASSES = [str(i) for i in range(10)]


# --- rendering photos --------------------------------------------------------------------------


def light(size, kind: str) -> np.ndarray:
    """A multiplicative light field (H, W) on 0..1: what a phone sees besides the page."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "vignette":
        return 1.0 - 0.3 * (((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2)
    if kind == "side-light":
        return 1.0 - 0.6 * x / w
    if kind == "shadow":  # a soft diagonal shadow edge across the page and the digit
        return 1.0 - 0.45 / (1.0 + np.exp(-((x - y) - 0.1 * w) / 15.0))
    return np.ones((h, w), np.float32)


def photograph(ink: Image.Image, kind: str, seed: int = 0, pen: float = 0.2) -> bytes:
    """An "L" ink drawing (255 = ink) -> JPEG bytes: tinted paper, pen, light, blur, noise."""
    rng = np.random.default_rng(seed)
    alpha = np.asarray(ink, np.float32) / 255.0
    paper = np.array([0.95, 0.92, 0.85], np.float32)
    img = paper * (1 - alpha[..., None]) + paper * pen * alpha[..., None]
    img = img * light(ink.size, kind)[..., None] * 255
    img = img + rng.normal(0, 4, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def ring(size=(480, 360), box=(300, 60, 370, 170), width=9) -> Image.Image:
    """A "0": a ring of ink, off-centre."""
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).ellipse(box, outline=255, width=width)
    return img


def place(digits: list[np.ndarray], size=(520, 300), height=90, gap=30, left=60, top=80) -> Image.Image:
    """MNIST digits (bright on dark) written left to right on one line -> an "L" ink drawing."""
    img = Image.new("L", size, 0)
    x = left
    for d in digits:
        rows, cols = np.flatnonzero(d.any(1)), np.flatnonzero(d.any(0))
        crop = Image.fromarray(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        w = max(2, round(crop.width * height / crop.height))
        img.paste(crop.resize((w, height), Image.Resampling.BICUBIC), (x, top))
        x += w + gap
    return img


def shift_tolerant_diff(a: np.ndarray, b: np.ndarray) -> float:
    return min(
        float(np.abs(np.roll(a.astype(int), (dy, dx), (0, 1)) - b).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )


# --- preprocessing of photos ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vignette", "side-light", "shadow"])
def test_uneven_light_gives_the_same_digit_as_even_light(kind):
    even = analyze_image(load_image(photograph(ring(), "even")))
    lit = analyze_image(load_image(photograph(ring(), kind)))
    assert lit.digits_found == 1 and even.digits_found == 1
    rows, _cols = np.nonzero(lit.digit > 64)
    assert rows.max() - rows.min() >= 17  # the ring fills the 20 px box, not a shadow-sized crop
    assert shift_tolerant_diff(lit.digit, even.digit) < 12
    assert lit.ink_share < 0.05


def test_grey_pencil_on_a_dark_photo_is_found():
    """Dim light: the border is dark (below mid-grey), yet the ink is dark on paper, not light on dark."""
    data = photograph(ring(), "vignette", pen=0.5)
    dim = Image.eval(Image.open(io.BytesIO(data)), lambda v: int(v * 0.4))
    out = analyze_image(dim)
    clean = analyze_image(load_image(photograph(ring(), "even")))
    assert out.digits_found == 1 and shift_tolerant_diff(out.digit, clean.digit) < 15


def test_blank_page_under_uneven_light_has_no_ink():
    out = analyze_image(load_image(photograph(Image.new("L", (480, 360), 0), "vignette")))
    assert out.digits_found == 0 and not out.digit.any()


def test_speck_and_page_edge_are_dropped():
    ink = ring()
    d = ImageDraw.Draw(ink)
    d.ellipse((60, 250, 64, 254), fill=255)  # a speck
    d.rectangle((0, 0, 479, 12), fill=255)  # a dark table edge along the top of the frame
    clean = analyze_image(load_image(photograph(ring(), "even")))
    out = analyze_image(load_image(photograph(ink, "even")))
    assert out.digits_found == 1 and shift_tolerant_diff(out.digit, clean.digit) < 8


def test_several_digits_and_filled_frames_are_counted():
    two = ring()
    ImageDraw.Draw(two).ellipse((80, 60, 150, 170), outline=255, width=9)
    assert analyze_image(load_image(photograph(two, "even"))).digits_found == 2
    blot = Image.new("L", (480, 360), 0)
    ImageDraw.Draw(blot).rectangle((200, 120, 250, 180), fill=255)  # a solid blot: no strokes
    assert analyze_image(load_image(photograph(blot, "even"))).box_fill > 0.4


def test_framed_28x28_passes_through_with_an_analysis():
    digit = np.asarray(ring((28, 28), (6, 4, 21, 23), 2))
    out = analyze_image(digit)
    assert out.framed and out.digits_found == 1 and np.array_equal(out.digit, digit)
    assert np.array_equal(analyze_image(255 - digit).digit, digit)


def test_jpeg_is_decoded_at_reduced_size():
    big = ring((4000, 3000), (2500, 500, 3100, 1400), 70)
    img = load_image(photograph(big, "even"))
    assert max(img.size) < 4000 / 2 and max(img.size) >= 320  # 1/4 or 1/8 scale, by the DCT
    assert analyze_image(img).digits_found == 1


def test_a_faint_stroke_joined_to_bold_ink_is_kept_only_in_numbers():
    """Hysteresis: grey-pen ink under MIN_INK (a 7's thin bar) counts where it touches a sure
    stroke, never on its own, and only for the number reader."""
    ink = np.zeros((120, 200), np.uint8)
    ink[20:100, 40:52] = 200  # a bold stroke
    ink[20:26, 52:90] = 30  # a faint bar joined to it
    ink[60:66, 140:170] = 30  # a faint mark on its own
    number, single = ink_mask(ink, keep_faint=True), ink_mask(ink)
    assert number[22, 70] and number[50, 45] and not number[62, 150]
    assert single[50, 45] and not single[22, 70] and not single[62, 150]


def test_mean3x3_is_the_rounded_mirrored_box_mean():
    gray = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    exact = ndimage.uniform_filter(gray.astype(np.float64), size=3, mode="reflect")
    assert np.array_equal(mean3x3(gray), np.floor(exact + 0.5 + 1e-9).astype(np.uint8))


def test_an_empty_pil_image_is_a_clear_input_error():
    for size in ((0, 0), (5, 0)):
        with pytest.raises(InputImageError, match="no pixels"):
            analyze_image(Image.new("RGBA", size))


# --- the unsure rule -----------------------------------------------------------------------------


def test_unsure_reasons():
    sure = analyze_image(load_image(photograph(ring(), "even")))
    p_sure, p_flat = np.eye(10)[0] * 0.97 + 0.003, np.full(10, 0.1)
    assert unsure_reason(sure, p_sure) is None
    assert unsure_reason(sure, p_flat) == f"top probability 0.10 is below --min-confidence {DEFAULT_MIN_CONFIDENCE:g}"
    assert unsure_reason(sure, p_flat, min_confidence=0.05) is None
    blank = analyze_image(load_image(photograph(Image.new("L", (200, 200), 0), "even")))
    assert unsure_reason(blank, p_sure) == "no ink found"
    two = ring()
    ImageDraw.Draw(two).ellipse((80, 60, 150, 170), outline=255, width=9)
    assert unsure_reason(analyze_image(two), p_sure).startswith("2 separate digits")
    blot = Image.new("L", (480, 360), 0)
    ImageDraw.Draw(blot).rectangle((200, 120, 250, 180), fill=255)
    assert (
        unsure_reason(analyze_image(load_image(photograph(blot, "even"))), p_sure)
        == "ink fills the frame: not a written digit"
    )


# --- a quickly trained model on real MNIST ---------------------------------------------------------


@pytest.fixture(scope="module")
def mnist(mnist_root):
    from mnistkit.data.idx import read_idx

    raw = mnist_root / "MNIST" / "raw"
    return (
        read_idx(raw / "train-images-idx3-ubyte.gz")[:20000],
        read_idx(raw / "train-labels-idx1-ubyte.gz")[:20000].long(),
        read_idx(raw / "t10k-images-idx3-ubyte.gz")[:300].numpy(),
        read_idx(raw / "t10k-labels-idx1-ubyte.gz")[:300].numpy(),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist) -> Path:
    """A run directory (model.safetensors) of a logreg trained briefly on 20k MNIST images."""
    from mnistkit.checkpoint import save_checkpoint

    images, labels, _, _ = mnist
    model = quick_train("logreg", images, labels, MNIST_NORM, steps=300, batch_size=256, lr=3e-3)
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(
        folder / "model.safetensors",
        model,
        {"dataset": "mnist", "norm": MNIST_NORM.to_dict(), "class_names": CLASSES, "metrics": {"test_accuracy": 91.0}},
    )
    return folder


@pytest.fixture(scope="module")
def easy_digits(run_dir, mnist):
    """Test digits the model reads right with >= 0.95 on their clean 28x28 form: (images, labels)."""
    import mnistkit

    _, _, x, y = mnist
    preds = mnistkit.predict(x, model=run_dir)
    keep = [i for i, p in enumerate(preds) if p.label == str(y[i]) and p.probability >= 0.95]
    return x[keep], y[keep]


def test_a_photographed_number_is_read_left_to_right(run_dir, easy_digits):
    from mnistkit.checkpoint import load_checkpoint

    x, y = easy_digits
    ckpt = load_checkpoint(run_dir)  # a run directory, as the CLI accepts
    for kind, pick in (("side-light", [0, 1, 2]), ("shadow", [3, 4, 5, 6])):
        reading = read_number(ckpt, load_image(photograph(place([x[i] for i in pick]), kind)))
        assert reading.text == "".join(str(y[i]) for i in pick) and len(reading.images) == len(pick)
        assert len(analyze_number(load_image(photograph(place([x[i] for i in pick]), kind)))) == len(pick)


def test_a_digit_broken_in_two_is_rejoined_by_the_model_not_read_as_two(run_dir, easy_digits):
    """Geometry alone reads a digit with a pen gap down its middle as two digits; the reader also
    tries the pieces together and keeps the reading the model is surest of."""
    from mnistkit.checkpoint import load_checkpoint

    x, y = easy_digits
    ckpt = load_checkpoint(run_dir)
    ones = [j for j in range(len(x)) if y[j] == 1][:2]
    split, rejoined = 0, 0
    for i in [i for i in range(len(x)) if y[i] in (0, 4, 6, 8)][:12]:  # wide digits
        broken = x[i].copy()
        cols = np.flatnonzero(broken.any(0))
        middle = (cols[0] + cols[-1]) // 2
        broken[:, middle : middle + 2] = 0  # a two-pixel gap: ~6 px once written 90 px tall
        photo = load_image(photograph(place([x[ones[0]], broken, x[ones[1]]]), "even"))
        if len(analyze_number(photo)) != 4:
            continue  # the halves still touch or overlap: nothing to rejoin
        split += 1
        rejoined += read_number(ckpt, photo).text == f"1{y[i]}1"
    assert split >= 5, f"only {split} broken digits came apart"
    assert rejoined >= 0.8 * split, f"{rejoined} of {split} broken digits read as one"


def test_number_cli_json_and_saved_digits(run_dir, easy_digits, tmp_path, capsys, monkeypatch):
    x, y = easy_digits
    path = tmp_path / "house.jpg"
    path.write_bytes(photograph(place([x[0], x[1], x[2]]), "vignette"))
    code, out, err = run_cli(
        ["predict", "--model", run_dir, "--number", "--json", "--save-input", tmp_path / "seen", path],
        capsys,
        monkeypatch,
    )
    assert code == 0 and err == ""
    doc = json.loads(out)[0]
    assert doc["number"] == "".join(str(v) for v in y[:3]) and len(doc["digits"]) == 3
    assert sorted(p.name for p in (tmp_path / "seen").iterdir()) == ["house-1.png", "house-2.png", "house-3.png"]


def test_checkpoint_forms_agree_and_save_input_writes_what_the_model_saw(run_dir, tmp_path, capsys, monkeypatch):
    path = tmp_path / "zero.jpg"
    path.write_bytes(photograph(ring(), "shadow"))
    _, old, _ = run_cli(["predict", run_dir, path, "--min-confidence", "0"], capsys, monkeypatch)
    _, old_file, _ = run_cli(
        ["predict", run_dir / "model.safetensors", path, "--min-confidence", "0"], capsys, monkeypatch
    )
    code, new, _ = run_cli(
        ["predict", "--model", run_dir, path, "--min-confidence", "0", "--save-input", tmp_path / "seen"],
        capsys,
        monkeypatch,
    )
    assert code == 0 and old == new == old_file and new.startswith(f"{path}  ")
    saved = np.asarray(Image.open(tmp_path / "seen" / "zero.png"))
    assert np.array_equal(saved, preprocess_image(load_image(path)))
    code, _, err = run_cli(["predict", run_dir, "--model", run_dir, path], capsys, monkeypatch)
    assert code == 2 and "give the model once" in err and len(err.splitlines()) == 1


def test_unsure_inputs_print_a_question_mark(run_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "blank.jpg").write_bytes(photograph(Image.new("L", (300, 300), 0), "vignette"))
    two = ring()
    ImageDraw.Draw(two).ellipse((80, 60, 150, 170), outline=255, width=9)
    (tmp_path / "two.jpg").write_bytes(photograph(two, "even"))
    code, out, _ = run_cli(
        ["predict", "--model", run_dir, tmp_path / "blank.jpg", tmp_path / "two.jpg"], capsys, monkeypatch
    )
    lines = out.splitlines()
    assert code == 0 and [line.split("  ")[1] for line in lines] == ["?", "?"]
    assert lines[0] == f"{tmp_path / 'blank.jpg'}  ?  (no ink found)"  # no label, no probability
    assert "2 separate digits" in lines[1]
    code, out, _ = run_cli(
        ["predict", "--model", run_dir, tmp_path / "two.jpg", tmp_path / "blank.jpg", "--json"], capsys, monkeypatch
    )
    doc, blank = json.loads(out)
    assert doc["unsure"] is True and doc["reason"].startswith("2 separate digits")
    assert blank["label"] is None and blank["probability"] is None and blank["top"] == []
    code, _, err = run_cli(
        ["predict", "--model", run_dir, tmp_path / "two.jpg", "--min-confidence", "2"], capsys, monkeypatch
    )
    assert code == 2 and "--min-confidence must be between 0 and 1, got 2.0" in err


def test_choose_min_confidence_spends_the_budget_the_rest_of_the_rule_leaves():
    from mnistkit.unsure import choose_min_confidence

    top = np.linspace(0.5, 0.99, 200)  # 200 true digits' top probabilities, no ties
    none = np.zeros(200, bool)
    c = choose_min_confidence(top, none, 0.015)  # 3 of 200 may be flagged
    assert (top < c).sum() == 3 and c == np.floor(top[3] * 1000) / 1000
    two_others = none.copy()
    two_others[[150, 199]] = True  # flagged already (no ink, several digits...): 1 left to spend
    assert (top[~two_others] < choose_min_confidence(top, two_others, 0.015)).sum() == 1
    assert choose_min_confidence(top, np.ones(200, bool), 0.015) == 0.0  # over budget before confidence
    assert choose_min_confidence(top[:10], none[:10], 1.0) == 1.0


def test_a_checkpoint_s_own_min_confidence_is_the_default(run_dir, tmp_path, capsys, monkeypatch):
    from mnistkit.checkpoint import CheckpointError, load_checkpoint, load_tensors, save_tensors

    (tmp_path / "one.jpg").write_bytes(photograph(ring(), "even"))
    tensors, meta = load_tensors(run_dir / "model.safetensors")
    assert load_checkpoint(run_dir).min_confidence == DEFAULT_MIN_CONFIDENCE
    save_tensors(tmp_path / "strict.safetensors", tensors, {**meta, "min_confidence": 0.999999})
    code, out, _ = run_cli(["predict", "--model", tmp_path / "strict.safetensors", tmp_path / "one.jpg"], capsys)
    assert code == 0 and "below --min-confidence 0.999999" in out  # the model's own threshold applies
    code, out, _ = run_cli(
        ["predict", "--model", tmp_path / "strict.safetensors", tmp_path / "one.jpg", "--min-confidence", "0"], capsys
    )
    assert code == 0 and "  ?  " not in out  # a threshold given on the command line wins
    save_tensors(tmp_path / "bad.safetensors", tensors, {**meta, "min_confidence": 7})
    with pytest.raises(CheckpointError, match="min_confidence"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_about_prints_the_card_or_the_metadata(run_dir, tmp_path, capsys, monkeypatch):
    from mnistkit.checkpoint import load_tensors, save_tensors

    code, out, _ = run_cli(["predict", "--model", run_dir, "--about"], capsys, monkeypatch)
    assert code == 0 and "name: " in out and "(logreg" in out and " test accuracy: " in out
    tensors, meta = load_tensors(run_dir / "model.safetensors")
    meta["card"] = {"name": "digits-test", "training_command": "mnistkit train --preset cnn"}
    save_tensors(tmp_path / "carded.safetensors", tensors, meta)
    code, out, _ = run_cli(["predict", tmp_path / "carded.safetensors", "--about", "--json"], capsys, monkeypatch)
    card = json.loads(out)
    assert code == 0 and card["name"] == "digits-test" and card["training_command"].startswith("mnistkit train")


def test_no_checkpoint_uses_the_bundled_model_or_says_it_is_missing(tmp_path, capsys, monkeypatch):
    import mnistkit.bundled

    monkeypatch.setattr(mnistkit.bundled, "MODEL_FILE", "not-shipped.safetensors")
    path = tmp_path / "zero.png"
    ring().save(path)
    code, out, err = run_cli(["predict", path], capsys, monkeypatch)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "no bundled model" in err
    with pytest.raises(CheckpointError, match="no bundled model"):
        import mnistkit

        mnistkit.predict(path)


def test_python_api_takes_paths_arrays_and_pil_images(run_dir, easy_digits, tmp_path):
    import mnistkit
    import mnistkit.api  # importing the module must not shadow the function

    x, y = easy_digits
    path = tmp_path / "d.png"
    Image.fromarray(255 - x[0]).save(path)
    preds = mnistkit.predict([str(path), x[1], Image.fromarray(x[2]), path.read_bytes()], model=run_dir)
    assert callable(mnistkit.predict) and [p.label for p in preds] == [str(y[0]), str(y[1]), str(y[2]), str(y[0])]
    assert all(0 < p.probability <= 1 and p.unsure is False and p.digit.shape == (28, 28) for p in preds)
    batch = mnistkit.predict(x[:5], model=run_dir)
    assert [p.label for p in batch] == [str(v) for v in y[:5]]
    with pytest.raises(
        ConfigError, match=r"^cannot predict a dict: give paths, file bytes, PIL images or 2-D NumPy arrays$"
    ):
        mnistkit.predict([{}], model=run_dir)


# --- hostile inputs (one line, exit 2, bounded memory, no hang) -----------------------------------


def _run(args, stdin=None, timeout=120):
    """The real CLI in a subprocess -> (exit code, stdout, stderr, its peak RSS in MB)."""
    code = (
        "import resource, subprocess, sys; "
        f"p = subprocess.run({[sys.executable, '-m', 'mnistkit', *map(str, args)]!r}, "
        "capture_output=True, text=True, stdin=sys.stdin); "
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
        "print(p.returncode, rss, sep='|'); print(p.stdout, end=''); print(p.stderr, end='', file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    first, _, rest = done.stdout.partition("\n")
    rc, rss = first.split("|")
    return int(rc), rest, done.stderr, float(rss)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_devices_fifos_and_endless_stdin_are_refused(run_dir, tmp_path):
    rc, out, err, rss = _run(["predict", run_dir, "/dev/zero"])
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and "not a regular file" in err and rss < 1024
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # no writer: opening it for reading must not block
    rc, _, err, _ = _run(["predict", run_dir, fifo], timeout=60)
    assert rc == 2 and len(err.splitlines()) == 1 and "not a regular file" in err
    with open("/dev/zero", "rb") as zero:
        rc, out, err, rss = _run(["predict", run_dir, "-"], stdin=zero)
    assert rc == 2 and len(err.splitlines()) == 1 and "<stdin>: more than" in err and rss < 1024


def test_image_errors_name_the_file_once(tmp_path):
    from mnistkit.data.custom import load_image_folder
    from mnistkit.errors import DataFormatError

    for c in ("0", "1"):
        (tmp_path / c).mkdir()
        ring((60, 60), (10, 10, 50, 50), 5).save(tmp_path / c / "ok.png")
    bad = tmp_path / "1" / "x.png"
    bad.write_text("not an image")
    with pytest.raises(DataFormatError) as info:
        load_image_folder(tmp_path)
    assert str(info.value).count(str(bad)) == 1 and "not an image" in str(info.value)
    with pytest.raises(InputImageError, match="may be at most 10$"):
        load_image(bad, max_bytes=10)
    sparse = tmp_path / "big.png"
    with open(sparse, "wb") as f:
        f.truncate(3 * 1024**3)  # 3 GB that occupy no disk: refused by its size, before any read
    with pytest.raises(InputImageError, match=r"big\.png: is 3,221,225,472 bytes; a file may be at most 67,108,864"):
        load_image(sparse)
