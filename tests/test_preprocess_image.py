"""The one image path: any picture -> a 28x28 digit framed the way MNIST was made."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw  # noqa: E402

from mnistkit.errors import InputImageError  # noqa: E402
from mnistkit.preprocess.image import load_image, preprocess_image  # noqa: E402


def paper_digit(size=(200, 300), box=(120, 40, 180, 140), mode="L") -> Image.Image:
    """A dark ring (a "0") on white paper, off-centre, with a wide margin."""
    img = Image.new(mode, size, "white")
    ImageDraw.Draw(img).ellipse(box, outline="black", width=9)
    return img


def tee_digit(size=(160, 240)) -> Image.Image:
    """An asymmetric "T" (bar on top, stem below): tells up from sideways."""
    img = Image.new("L", size, 255)
    d = ImageDraw.Draw(img)
    d.rectangle((40, 40, 120, 55), fill=0)
    d.rectangle((72, 55, 88, 200), fill=0)
    return img


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def center_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    r = np.arange(a.shape[0])
    return float((a.sum(1) * r).sum() / a.sum()), float((a.sum(0) * r).sum() / a.sum())


def shift_tolerant_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| under the best whole-pixel shift of at most 1 (centring of near-symmetric
    digits can land either side of a half pixel)."""
    return min(
        float(np.abs(np.roll(a.astype(int), (dy, dx), (0, 1)) - b).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )


def assert_mnist_framed(out: np.ndarray) -> None:
    """uint8 28x28, bright ink on black, inside the central 20x20 box, mass centred within 1 px."""
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    assert out.max() == 255 and np.median(out) == 0  # bright ink on a black field
    rows, cols = np.nonzero(out)
    assert rows.min() >= 4 and rows.max() <= 23 and cols.min() >= 4 and cols.max() <= 23
    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)


@pytest.mark.parametrize(
    "fmt,mode,kw",
    [
        ("PNG", "L", {}),
        ("JPEG", "RGB", {"quality": 85}),
        ("BMP", "RGB", {}),
        ("TIFF", "L", {}),
        ("GIF", "P", {}),
        ("PNG", "RGB", {}),
    ],
)
def test_paper_digit_in_every_format_is_centred_bright_on_dark(fmt, mode, kw):
    img = paper_digit(mode="RGB" if mode in ("RGB", "P") else "L")
    if mode == "P":
        img = img.convert("P")
    out = preprocess_image(load_image(encode(img, fmt, **kw)))
    assert_mnist_framed(out)


def test_formats_agree_with_each_other():
    """Lossless encodings of one drawing give the same digit; JPEG stays close."""
    img = paper_digit()
    png = preprocess_image(load_image(encode(img, "PNG")))
    for fmt in ("BMP", "TIFF", "GIF"):
        assert np.array_equal(preprocess_image(load_image(encode(img, fmt))), png), fmt
    jpeg = preprocess_image(load_image(encode(img.convert("RGB"), "JPEG", quality=90)))
    assert shift_tolerant_diff(jpeg, png) < 6


def test_gif_uses_the_first_frame():
    blank = Image.new("P", (200, 300), 0)
    first = paper_digit().convert("P")
    data = encode(first, "GIF", save_all=True, append_images=[blank], duration=100)
    assert_mnist_framed(preprocess_image(load_image(data)))


def test_exif_orientation_is_applied():
    upright = tee_digit()
    # Orientation 6 means "rotate 90 degrees clockwise to display": store it turned the other way.
    stored = upright.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = preprocess_image(load_image(encode(stored.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())))
    want = preprocess_image(load_image(encode(upright.convert("RGB"), "JPEG", quality=95)))
    sideways = preprocess_image(stored)
    assert shift_tolerant_diff(tagged, want) < 6
    assert shift_tolerant_diff(sideways, want) > 20
    assert tagged[5:9].sum() > tagged[20:24].sum()  # the T's bar is on top


def test_rgba_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (200, 300), (0, 0, 0, 0))  # transparent *black*: white once composited
    ImageDraw.Draw(rgba).ellipse((120, 40, 180, 140), outline=(0, 0, 0, 255), width=9)
    out = preprocess_image(load_image(encode(rgba, "PNG")))
    assert_mnist_framed(out)
    assert np.array_equal(out, preprocess_image(paper_digit()))


def test_light_ink_on_dark_background_is_not_inverted():
    dark = Image.eval(paper_digit(), lambda v: 255 - v)
    assert np.array_equal(preprocess_image(dark), preprocess_image(paper_digit()))


def test_a_large_white_on_black_drawing_reads_as_its_inverse():
    """MNIST-style drawings 200x200 (fat strokes on an even black ground): the zeros, whose wide
    rings once swayed the polarity vote to dark ink, read as their black-on-white copies do."""
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.data import load_dataset
    from mnistkit.prediction import probabilities, stack_digits
    from mnistkit.preprocess.image import analyze_image

    test = load_dataset("mnist-sample").test
    images, labels = test.images.numpy(), test.labels.numpy()
    pick = np.flatnonzero(labels == 0)[:20]
    drawings = [np.asarray(Image.fromarray(images[i]).resize((200, 200), Image.Resampling.BILINEAR)) for i in pick]
    ckpt = load_checkpoint(None)

    def read(imgs):
        return probabilities(ckpt, stack_digits([analyze_image(img).digit for img in imgs])).argmax(1)

    white_on_black, black_on_white = read(drawings), read([255 - d for d in drawings])
    assert (white_on_black == 0).sum() >= 18 and (white_on_black == black_on_white).sum() >= 19


def test_sixteen_bit_png_is_scaled_not_clipped():
    a = np.asarray(paper_digit(), dtype=np.uint16) * 257
    img16 = Image.fromarray(a)  # mode I;16
    out = preprocess_image(load_image(encode(img16, "PNG")))
    assert np.array_equal(out, preprocess_image(paper_digit()))


def test_thin_vertical_stroke_keeps_its_aspect_ratio():
    img = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(img).line((200, 30, 200, 270), fill=0, width=12)
    out = preprocess_image(img)
    assert_mnist_framed(out)
    rows, cols = np.nonzero(out)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 <= 3


@pytest.mark.parametrize(
    "img",
    [
        Image.new("L", (200, 300), 255),
        Image.new("RGB", (50, 50), "black"),
        Image.new("L", (28, 28), 255),
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
    ],
    ids=["white-paper", "black", "white-28", "transparent"],
)
def test_blank_image_gives_blank_digit(img):
    out = preprocess_image(load_image(encode(img, "PNG")))
    assert out.shape == (28, 28) and out.dtype == np.uint8 and not out.any()


def test_mnist_images_pass_through_byte_identical(mnist_root):
    from mnistkit.data.idx import read_idx

    images = read_idx(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")[:300].numpy()
    for a in images:
        assert np.array_equal(preprocess_image(load_image(encode(Image.fromarray(a), "PNG"))), a)
        assert np.array_equal(preprocess_image(Image.fromarray(255 - a)), a)  # dark-on-light MNIST too


def test_an_image_file_becomes_a_uint8_28x28_tensor(tmp_path):
    import torch

    path = tmp_path / "d.png"
    paper_digit().save(path)
    t = torch.from_numpy(preprocess_image(load_image(path)))
    assert t.dtype == torch.uint8 and tuple(t.shape) == (28, 28)
    assert np.array_equal(t.numpy(), preprocess_image(paper_digit()))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but holds no pixels: a decompression-bomb stand-in."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty file"),
        (b"hello, I am text, not a picture\n", "not an image"),
        (_png_header_only(8000, 8000), "64,000,000 pixels, over the limit of 50,000,000"),
        (_png_header_only(20000, 20000), "over the limit"),
        (encode(paper_digit(), "PNG")[:200], "cannot decode image"),
    ],
    ids=["empty", "text", "huge", "bomb", "truncated"],
)
def test_bad_files_raise_input_image_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad-input.png"
    path.write_bytes(content)
    with pytest.raises(InputImageError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_pixel_limit_argument(tmp_path):
    with pytest.raises(InputImageError, match=r"nope\.png: no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputImageError, match=r"upload: image is 200x300 = 60,000 pixels, over the limit of 10,000"):
        load_image(encode(paper_digit(), "PNG"), max_pixels=10_000, name="upload")


def test_importing_mnistkit_loads_no_pil_fastapi_or_onnx():
    code = (
        "import sys, mnistkit, mnistkit.preprocess, mnistkit.preprocess.image, mnistkit.prediction, "
        "mnistkit.serving, mnistkit.cli; "
        "bad = [m for m in ('PIL', 'fastapi', 'onnx', 'onnxruntime', 'uvicorn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
