"""bench/geometric_numbers.py: numbers read by geometry alone, the baseline of bench/photo_numbers.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("scipy")
from PIL import Image, ImageDraw

_SPEC = importlib.util.spec_from_file_location(
    "geometric_numbers", Path(__file__).parents[1] / "bench" / "geometric_numbers.py"
)
_geometry = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_geometry)
analyze_number = _geometry.analyze_number


def test_a_long_flat_stroke_is_not_cut_off_as_a_digit_but_touching_digits_are_split():
    five = Image.new("L", (400, 200), "white")  # a 5 whose top bar runs far to the right
    d = ImageDraw.Draw(five)
    d.line([(340, 40), (120, 40), (115, 95)], fill="black", width=8)
    d.arc((100, 70, 170, 150), 270, 150, fill="black", width=8)
    assert len(analyze_number(five)) == 1
    pair = Image.new("L", (400, 200), "white")  # two 0s written so close that they touch
    for left in (100, 190):
        ImageDraw.Draw(pair).ellipse((left, 40, left + 95, 150), outline="black", width=8)
    assert len(analyze_number(pair)) == 2


@pytest.mark.parametrize("shape", [(1, 400), (2, 1000), (1, 9), (5, 3), (400, 1)])
def test_geometry_never_raises_on_thin_noise(shape):
    noise = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    assert all(a.digit.shape == (28, 28) for a in analyze_number(noise))
