"""Hostile inputs, round two: checkpoints that validate but mean nothing, headers that cost gigabytes
to parse, class names that forge output, images too small or too large for preprocessing, search
spaces that ask for petabytes, and CSVs that are parsed whole.

Cases that are about what a user sees run the real CLI in a child process (:func:`run_child` from
``hostile_helpers``: exit code, output and the child's own peak RSS) and are marked slow (a few
seconds each, so ``make test-fast`` leaves them to ``make test``); the rest call the library.
Every hostile file is built here, small.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import META, RSS_LIMIT, Child, assert_refused, retag, run_child

from mnistkit.checkpoint import (
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    check_finite,
    load_checkpoint,
    load_tensors,
    save_tensors,
)
from mnistkit.data.kaggle import KAGGLE_PIXELS, read_kaggle_csv
from mnistkit.errors import CheckpointError, ConfigError, DataFormatError
from mnistkit.models import build_model

PNG = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    """A dark stroke on white paper: an image every model reads as some digit."""
    page = np.full((60, 60), 255, np.uint8)
    page[10:50, 28:32] = 0
    path = tmp_path_factory.mktemp("img") / "good.png"
    PNG.fromarray(page).save(path)
    return path


def assert_no_nan(child: Child) -> None:
    """No NaN or infinity printed as a value (an error line may say what it refused)."""
    assert not re.search(r"\b(nan|-?inf(inity)?)\b", child.out, re.IGNORECASE), child.out[-2000:]


# ----------------------------------------------------------------------------- row 5: checkpoints that mean nothing


def _first_weight(tensors: dict) -> str:
    return sorted(k for k in tensors if k.endswith("weight"))[0]


def _as_float64_of(value: float):
    def edit(tensors):
        name = _first_weight(tensors)
        tensors[name] = torch.full_like(tensors[name], value, dtype=torch.float64)

    return edit


def _as_float8(tensors):
    name = _first_weight(tensors)
    tensors[name] = tensors[name].to(torch.float8_e4m3fn)


MEANINGLESS = {
    "temperature 1e-300": ({"temperature": 1e-300}, None, "bad metadata field 'temperature'"),
    "temperature 1e6": ({"temperature": 1e6}, None, "bad metadata field 'temperature'"),
    "float64 weights of 1e300": (None, _as_float64_of(1e300), "as F64; mnistkit writes only F32, I64 tensors"),
    "float8 weights": (None, _as_float8, "as F8_E4M3; mnistkit writes only"),
}


@pytest.mark.parametrize("name", list(MEANINGLESS))
def test_checkpoints_that_validate_but_mean_nothing_are_refused(name, good_ckpt, tmp_path):
    changes, edit, needle = MEANINGLESS[name]
    bad = retag(good_ckpt, tmp_path / "bad.safetensors", changes, tensor_edit=edit)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert needle in str(exc.value) and str(bad) in str(exc.value), str(exc.value)


def test_weights_are_checked_in_the_models_dtype():
    """1e300 is finite in fp64 but infinite once ``load_state_dict`` casts it to the model's fp32."""
    tensors = {"w": torch.full((2,), 1e300, dtype=torch.float64)}
    check_finite(tensors, "x")  # in its own dtype it is finite
    with pytest.raises(CheckpointError, match="non-finite values"):
        check_finite(tensors, "x", dtypes={"w": torch.float32})


def test_temperature_at_the_calibrations_limits_is_accepted(good_ckpt, tmp_path):
    from mnistkit.calibration import TEMPERATURE_RANGE

    for t in TEMPERATURE_RANGE:
        assert load_checkpoint(retag(good_ckpt, tmp_path / f"t{t}.safetensors", {"temperature": t})).temperature == t


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_meaningless_temperature_through_the_cli(good_ckpt, digit_png, tmp_path):
    bad = retag(good_ckpt, tmp_path / "cold.safetensors", {"temperature": 1e-300})
    child = run_child(["predict", "--model", bad, "--json", digit_png], cwd=tmp_path, timeout=60)
    assert_refused(child, "bad metadata field 'temperature'")
    assert child.out == ""


def _overflowing(tensors):
    """fp32 weights that are finite but overflow every logit to infinity: only the output can tell
    (the first layer ignores the image and outputs 3e38, the last multiplies that by 3e38)."""
    first = _first_weight(tensors)
    for name in tensors:
        tensors[name] = torch.full_like(tensors[name], 0.0 if name == first else 3e38)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", ["lines", "json", "csv"])
def test_non_finite_probabilities_are_never_an_answer(form, good_ckpt, digit_png, tmp_path):
    """Defence in depth: weights that pass every check can still give NaN; it is one error line."""
    bad = retag(good_ckpt, tmp_path / "hot.safetensors", tensor_edit=_overflowing)
    load_checkpoint(bad)  # finite fp32 weights: the checkpoint itself passes
    args = ["predict", "--model", bad]
    if form == "csv":
        csv = tmp_path / "test.csv"
        csv.write_text(",".join(KAGGLE_PIXELS) + "\n" + ",".join(["255"] * 784) + "\n")
        args += ["--csv", csv]
    else:
        args += [digit_png] + (["--json"] if form == "json" else [])
    child = run_child(args, cwd=tmp_path, timeout=60)
    assert_refused(child, "gives non-finite probabilities (NaN or infinity) for 1 of 1 inputs")
    assert_no_nan(child)


def test_json_output_is_always_valid_json(capsys):
    from mnistkit.cli.options import print_json

    print_json({"ece": math.nan, "top": [["7", math.inf]], "n": 3}, indent=2)
    assert json.loads(capsys.readouterr().out) == {"ece": None, "top": [["7", None]], "n": 3}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_predict_json_is_valid_json(good_ckpt, digit_png, tmp_path):
    child = run_child(["predict", "--model", good_ckpt, "--json", digit_png], cwd=tmp_path, timeout=60)
    assert child.code == 0, child.err
    (answer,) = json.loads(child.out)
    assert answer["path"] == str(digit_png) and 0 <= answer["probability"] <= 1


# ----------------------------------------------------------------------------- row 6: headers that cost gigabytes


def _empty_tensors(n: int) -> dict[str, torch.Tensor]:
    return {f"e{i}": torch.empty(0) for i in range(n)}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_header_over_the_bound_is_refused_before_it_is_parsed(tmp_path):
    """~90,000 empty tensors (a 5 MB header, digest right): refused from its 8-byte length, at once."""
    path = save_tensors(tmp_path / "many.safetensors", _empty_tensors(90_000), META)
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert length > MAX_HEADER_BYTES
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"has a {length:,}-byte safetensors header; an mnistkit checkpoint's"):
        load_tensors(path)
    assert time.perf_counter() - started < 1.0
    child = run_child(["predict", "--model", path, "--about"], cwd=tmp_path, timeout=60)
    assert_refused(child, "safetensors header")


def test_more_tensors_than_a_model_has_are_refused(tmp_path):
    path = save_tensors(tmp_path / "many.safetensors", _empty_tensors(MAX_TENSORS + 1), META)
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] < MAX_HEADER_BYTES
    with pytest.raises(CheckpointError, match=f"lists {MAX_TENSORS + 1} tensors; an mnistkit checkpoint has at most"):
        load_tensors(path)


def test_every_registered_model_fits_the_tensor_bound():
    """The bound follows the registry: its largest networks (at the layer limits) fit, twice over
    with Adam's state, as a training state holds them."""
    from mnistkit.models import list_models
    from mnistkit.models.registry import LAYER_LIMITS, get_model_spec

    for name in list_models():
        defaults = get_model_spec(name).defaults  # list options only: the line model's "hidden" is one GRU's size
        options = {
            k: [1] * LAYER_LIMITS[k].max_layers
            for k, v in defaults.items()
            if k in LAYER_LIMITS and isinstance(v, (list, tuple))
        }
        with torch.device("meta"):
            tensors = len(build_model(name, **options).state_dict())
        assert 5 * tensors <= MAX_TENSORS, (name, tensors)


# ----------------------------------------------------------------------------- row 7: class names


NAMES = {
    "100,000 characters": "x" * 100_000,
    "a newline": "7\nFAKE-LINE  9  1.0000",
    "ANSI escapes": "\x1b[2J\x1b[31m7",
    "65 characters": "y" * 65,
    "empty": "",
}


@pytest.mark.parametrize("name", list(NAMES))
def test_class_names_must_be_short_and_printable(name, good_ckpt, tmp_path):
    names = [NAMES[name], *"123456789"]
    bad = retag(good_ckpt, tmp_path / "names.safetensors", {"class_names": names})
    with pytest.raises(CheckpointError, match="bad metadata field 'class_names'.*printable strings of 1 to 64"):
        load_checkpoint(bad)


def test_class_names_at_the_limit_are_accepted(good_ckpt, tmp_path):
    names = ["z" * 64, "é7", "seven eight", *"3456789"]
    ok = retag(good_ckpt, tmp_path / "names.safetensors", {"class_names": names})
    assert load_checkpoint(ok).class_names == names


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_forged_line_never_reaches_the_output(good_ckpt, digit_png, tmp_path):
    bad = retag(good_ckpt, tmp_path / "names.safetensors", {"class_names": [NAMES["a newline"], *"123456789"]})
    child = run_child(["predict", "--model", bad, digit_png], cwd=tmp_path, timeout=60)
    assert_refused(child, "bad metadata field 'class_names'")
    assert child.out == "" and not any(line.startswith("FAKE") for line in child.err.splitlines())


def test_an_image_folder_with_a_control_character_in_a_class_name_is_refused(tmp_path):
    from mnistkit.data.custom import load_image_folder

    for cls in ("a", "b\x1b[31m"):
        (tmp_path / cls).mkdir()
        PNG.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / cls / "x.png")
    with pytest.raises(DataFormatError, match=r"class sub-folder name 'b\\x1b\[31m' holds control characters"):
        load_image_folder(tmp_path)


# ----------------------------------------------------------------------------- row 8: tiny and thin images


def _png(path: Path, width: int, height: int, value: int) -> Path:
    PNG.new("L", (width, height), value).save(path)
    return path


TINY_IMAGES = {"400x1 black": (400, 1, 0), "1x400 white": (1, 400, 255), "3x3 black": (3, 3, 0), "1x1": (1, 1, 0)}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("number", [False, True], ids=["digit", "number"])
def test_tiny_images_are_unsure_and_the_others_still_printed(number, digit_png, tmp_path):
    tiny = [_png(tmp_path / f"{n.replace(' ', '-')}.png", *spec) for n, spec in TINY_IMAGES.items()]
    assert tiny[0].stat().st_size < 100
    child = run_child(["predict", *(["--number"] if number else []), *tiny, digit_png], cwd=tmp_path, timeout=90)
    assert child.code == 0, child.err
    lines = child.out.splitlines()
    assert len(lines) == len(tiny) + 1 and lines[-1].startswith(str(digit_png)), child.out
    for path, line in zip(tiny, lines):
        assert line.startswith(f"{path}  ?  ") and line.endswith("(no ink found)"), line


@pytest.mark.parametrize("shape", [(1, 400), (2, 1000), (1, 9), (5, 3), (400, 1)])
def test_preprocessing_never_raises_on_thin_noise(shape):
    from mnistkit.preprocess.image import analyze_image, number_ink

    noise = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    assert analyze_image(noise).digit.shape == (28, 28)
    number_ink(noise)


def test_an_image_folder_with_a_thin_image_still_loads(tmp_path):
    from mnistkit.data.custom import load_image_folder

    page = np.full((40, 40), 255, np.uint8)
    page[8:32, 18:22] = 0
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            PNG.fromarray(page).save(tmp_path / cls / f"{i}.png")
    _png(tmp_path / "a" / "thin.png", 400, 1, 0)
    data = load_image_folder(tmp_path)
    assert len(data.train) + len(data.test) == 13


# ----------------------------------------------------------------------------- row 12: search spaces


SPACES = {
    "width 10^12": ("hidden = {layers = [1, 1], width = [1000000000000, 1000000000000]}", "outside the model's limits"),
    "100 layers": ("hidden = {layers = [1, 100], width = [16, 32]}", "outside the model's limits"),
    "fixed width 10^12": ("hidden = [1000000000000]", "hidden sizes must be positive whole numbers, at most 8,192"),
    "epochs 10^9": ("epochs = {low = 1, high = 1000000000}", "epochs must be at most 10,000"),
    "batch size 10^9": ("batch_size = {choices = [64, 1000000000]}", "batch_size must be at most 65,536"),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_search_space_options_are_bounded_by_the_registries(name, tmp_path):
    from mnistkit.tuning.space import parse_space, read_space_file

    text, needle = SPACES[name]
    path = tmp_path / "space.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as exc:
        parse_space(read_space_file(path), "mlp", f"--space {path}")
    assert needle in str(exc.value) and str(path) in str(exc.value), str(exc.value)


def test_cnn_widths_in_a_space_are_bounded(tmp_path):
    from mnistkit.tuning.space import parse_space

    with pytest.raises(ConfigError, match="widths must be 1 to 4 positive channel counts, each at most 1,024"):
        parse_space({"widths": {"layers": [2, 3], "width": [16, 4096]}}, "cnn")
    parse_space({"widths": {"layers": [1, 4], "width": [16, 1024]}}, "cnn")  # the limits themselves are fine


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_petabyte_space_through_the_cli(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text(SPACES["width 10^12"][0] + "\n")
    child = run_child(
        ["tune", "--model", "mlp", "--space", space, "--trials", "1", "--out", tmp_path / "tune"], cwd=tmp_path
    )
    assert_refused(child, "outside the model's limits")
    assert not (tmp_path / "tune").exists()


# ----------------------------------------------------------------------------- row 14: CSVs parsed whole


def _digit_rows(n: int) -> str:
    """``n`` Kaggle rows of MNIST-like digits (a stroke of 0..255 values on black), with labels."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), np.int64)
    images[:, 6:22, 12:16] = rng.integers(0, 256, (n, 16, 4))
    table = np.concatenate([rng.integers(0, 10, (n, 1)), images.reshape(n, -1)], axis=1)
    rows = "\n".join(",".join(map(str, r)) for r in table)
    return "label," + ",".join(KAGGLE_PIXELS) + "\n" + rows + "\n"


def test_csv_blocks_keep_row_numbers_and_order(tmp_path, monkeypatch):
    """Parsed in many small blocks, the result and the row named in an error are the whole file's."""
    import mnistkit.data.kaggle as kaggle

    text = _digit_rows(40)
    path = tmp_path / "train.csv"
    path.write_text(text)
    whole, labels = read_kaggle_csv(path)
    monkeypatch.setattr(kaggle, "BLOCK_BYTES", 5_000)  # a few rows a block
    blocks, block_labels = read_kaggle_csv(path)
    assert torch.equal(whole, blocks) and torch.equal(labels, block_labels)
    lines = text.splitlines()
    lines[33] = lines[33].replace(",0,", ",300,", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"in data row 33 is 300; allowed whole numbers 0..255"):
        read_kaggle_csv(path)


def test_a_line_longer_than_any_row_is_refused(tmp_path, monkeypatch):
    import mnistkit.data.kaggle as kaggle

    monkeypatch.setattr(kaggle, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(kaggle, "MAX_LINE_BYTES", 2048)
    path = tmp_path / "train.csv"
    path.write_text("label," + ",".join(KAGGLE_PIXELS) + "\n" + "0," * 20_000 + "\n")
    with pytest.raises(DataFormatError, match="a line of over 2,048 bytes"):
        read_kaggle_csv(path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_csv_memory_follows_the_parsed_array(good_ckpt, tmp_path):
    """``predict --csv`` on 24,000 rows (40 MB of text, a 19 MB array): the child's peak RSS grows
    by at most about twice the array over a one-row CSV's, where reading the text whole took ~6x."""
    small, large = tmp_path / "one.csv", tmp_path / "many.csv"
    small.write_text(_digit_rows(1))
    large.write_text(_digit_rows(24_000))
    array_bytes = 24_000 * 784
    runs = {}
    for path in (small, large):
        child = run_child(["predict", "--model", good_ckpt, "--csv", path, "--out", tmp_path / "s.csv"], cwd=tmp_path)
        assert child.code == 0, child.err
        runs[path] = child.max_rss
    growth = runs[large] - runs[small]
    assert growth < 3 * array_bytes, f"RSS grew {growth / 2**20:.0f} MiB for a {array_bytes / 2**20:.0f} MiB array"
    assert runs[large] < RSS_LIMIT


# ----------------------------------------------------------------------------- row 13: small files, large pixels


@pytest.fixture(scope="module")
def decode_bombs(tmp_path_factory) -> dict[str, Path]:
    """Small files whose pixels, as decoded, pass the budget by a little (float, alpha, animation),
    and a 1x50,000,000 grey PNG that fits it (50 MB) but is all border."""
    folder = tmp_path_factory.mktemp("bombs")
    side = 4200  # 17.6 MP: 70.6 MB at 4 bytes a pixel, over the 64 MiB budget
    files = {name: folder / name for name in ("float.tif", "alpha.png", "animated.webp", "line.png")}
    PNG.new("F", (side, side), 0.0).save(files["float.tif"], compression="tiff_deflate")
    PNG.new("LA", (side, side), (0, 128)).save(files["alpha.png"])
    frames = [PNG.new("RGBA", (side, side), (v, v, v, 255)) for v in (0, 255)]
    frames[0].save(files["animated.webp"], save_all=True, append_images=frames[1:], lossless=True)
    PNG.new("L", (50_000_000, 1), 255).save(files["line.png"])
    return files


def test_the_decoded_size_is_checked_by_mode_before_decoding(decode_bombs):
    from mnistkit.errors import InputImageError
    from mnistkit.preprocess.decode import MAX_DECODED_BYTES, load_image

    files = decode_bombs
    for name in ("float.tif", "alpha.png", "animated.webp"):
        assert files[name].stat().st_size < 400_000
        with pytest.raises(InputImageError, match=rf"{name}: image is 4200x4200 in mode \w+: 70,560,000 bytes"):
            load_image(files[name])
    assert load_image(files["line.png"]).size == (50_000_000, 1)  # 50 MB of grey: within the budget
    assert 50_000_000 < MAX_DECODED_BYTES < 4 * 4200 * 4200


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_decode_bombs_through_the_cli_stay_small(decode_bombs, digit_png, tmp_path):
    files = decode_bombs
    child = run_child(["predict", *files.values(), digit_png], cwd=tmp_path, timeout=150)
    assert child.code == 2, child.err
    errors = child.err.splitlines()
    assert len(errors) == 3 and all("bytes once decoded, over the limit" in e for e in errors), child.err
    lines = child.out.splitlines()
    assert lines[0].startswith(f"{files['line.png']}  ?  ") and lines[1].startswith(str(digit_png)), child.out
    assert child.max_rss < RSS_LIMIT, f"peak RSS {child.max_rss / 2**20:.0f} MiB"
