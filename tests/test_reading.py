"""The line reader: CTC decoding, synthetic lines, where the writing is, training and resume."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mnistkit.ctc import PAD, ctc_loss, exact_matches, greedy_decode, greedy_labels, one_symbol_log_probs
from mnistkit.reading.find import find_lines, runs
from mnistkit.reading.line import LINE_HEIGHT, LINE_WIDTH, line_image, pad_lines
from mnistkit.reading.synth import MAX_DIGITS, Recipe, synth_lines


@pytest.fixture(scope="module")
def digits():
    from mnistkit.data import load_dataset

    ds = load_dataset("mnist-sample")
    return ds.train.images.numpy(), ds.train.labels.numpy()


# ----------------------------------------------------------------------------- CTC


def _logits(paths: list[list[int]], classes: int = 10) -> torch.Tensor:
    out = torch.full((len(paths), len(paths[0]), classes + 1), -5.0)
    for i, path in enumerate(paths):
        for t, k in enumerate(path):
            out[i, t, k] = 5.0
    return out


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    b = 10  # the blank
    logits = _logits([[b, 1, 1, b, 1, 2], [3, 3, 3, b, b, b], [b] * 6])
    assert greedy_labels(logits).tolist() == [[1, 1, 2, PAD, PAD, PAD], [3] + [PAD] * 5, [PAD] * 6]
    assert greedy_decode(logits).labels == [[1, 1, 2], [3], []]
    targets = torch.tensor([[1, 1, 2], [3, PAD, PAD], [PAD, PAD, PAD]])
    assert int(exact_matches(logits, targets)) == 3
    assert int(exact_matches(logits, torch.tensor([[1, 2, PAD], [3, 3, PAD], [1, PAD, PAD]]))) == 0


def test_tensor_and_list_decoding_agree_on_random_logits():
    logits = torch.randn(64, 12, 11) * 3
    listed = greedy_decode(logits).labels
    tensor = [[v for v in row if v != PAD] for row in greedy_labels(logits).tolist()]
    assert listed == tensor


def test_ctc_loss_is_low_for_the_right_path_and_has_gradients():
    b = 10
    targets = torch.tensor([[4, 2, PAD]])
    right = _logits([[b, 4, b, 2, b]]).requires_grad_()
    wrong = _logits([[b, 7, b, 1, b]])
    loss = ctc_loss(right, targets)
    assert float(loss.detach()) < 0.1 < float(ctc_loss(wrong, targets))
    loss.backward()
    assert right.grad is not None and torch.isfinite(right.grad).all()


# ----------------------------------------------------------------------------- synthetic lines


def test_one_symbol_probabilities_sum_every_path_that_reads_that_symbol():
    """Checked against enumerating all 4^4 paths of two random 4-column lines (3 symbols + blank)."""
    import itertools
    import math

    logits = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    log_probs = torch.log_softmax(logits, -1)
    for n, got in enumerate(one_symbol_log_probs(logits)):
        want = [0.0, 0.0, 0.0]
        for path in itertools.product(range(4), repeat=4):
            read = [k for i, k in enumerate(path) if k != 3 and (i == 0 or path[i - 1] != k)]
            if len(read) == 1:
                want[read[0]] += math.exp(sum(float(log_probs[n, t, k]) for t, k in enumerate(path)))
        assert got.exp().tolist() == pytest.approx(want, rel=1e-4)
    assert float(one_symbol_log_probs(logits).exp().sum(1).max()) < 1.0  # the rest reads 0 or 2+ symbols


def test_synthetic_lines_are_line_images_with_padded_labels(digits):
    x, y = synth_lines(*digits, 60, seed=3)
    assert x.shape == (60, LINE_HEIGHT, LINE_WIDTH) and x.dtype == np.uint8
    assert y.shape == (60, MAX_DIGITS) and y.dtype == np.int64
    lengths = (y != PAD).sum(1)
    for row, n in zip(y, lengths):
        assert (row[:n] >= 0).all() and (row[:n] <= 9).all() and (row[n:] == PAD).all()
    assert x.max() == 255  # the contrast is stretched as in a found line
    again, _ = synth_lines(*digits, 60, seed=3)
    assert np.array_equal(x, again)


def test_rejection_lines_have_no_digits(digits):
    _, y = synth_lines(*digits, 20, seed=0, recipe=Recipe(rejection_p=1.0))
    assert (y == PAD).all()


# ----------------------------------------------------------------------------- finding the writing


def _number_ink(digits, labels: str, height: int) -> np.ndarray:
    """Digits of the sample side by side, ``height`` px tall, ink 0-255 (white on black)."""
    images, ys = digits
    parts = []
    for ch in labels:
        img = images[int(np.flatnonzero(ys == int(ch))[0])]
        parts.append(np.asarray(Image.fromarray(img).resize((height, height), Image.Resampling.BILINEAR)))
    return np.concatenate(parts, axis=1)


def _page(ink: np.ndarray, size: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    page = np.full(size, 225, np.uint8)
    y, x = at
    h, w = ink.shape
    page[y : y + h, x : x + w] = np.minimum(page[y : y + h, x : x + w], 255 - ink)
    return page


def _inside(box, y0, y1, x0, x1) -> bool:
    bx0, by0, bx1, by1 = box
    return bx0 <= x0 and by0 <= y0 and bx1 >= x1 and by1 >= y1


def test_a_number_beside_a_gutter_ruling_lines_and_an_underline(digits):
    ink = _number_ink(digits, "47", 28)
    page = _page(ink, (220, 150), (90, 70))
    page[:, :35] = 15  # the book's gutter, black, at the left
    page[:, 130:132] = 60  # a vertical ruling line
    page[20:22, :] = 70  # a horizontal ruling line
    page[121:124, 66:132] = 40  # an underline
    page[114:118, 130:134] = 30  # a full stop after the number, on the ruling line
    lines = find_lines(page)
    assert lines, "no writing found"
    best = lines[0]
    assert _inside(best.box, 92, 116, 73, 124)  # the digits' ink
    x0, y0, _x1, _y1 = best.box
    assert x0 >= 35 and y0 > 22  # not the gutter, not the ruling line
    assert best.image.shape[0] == LINE_HEIGHT and best.image.max() == 255


def test_a_scan_whose_border_is_mostly_gutter_is_still_dark_ink_on_paper(digits):
    ink = _number_ink(digits, "8", 24)
    page = _page(ink, (160, 110), (60, 70))
    page[:, :45] = 12  # the book's gutter ...
    page[-15:, :] = 12  # ... and the table below the page: most of the border is black
    assert np.median(np.concatenate([page[0], page[-1], page[:, 0], page[:, -1]])) < 50
    lines = find_lines(page)
    assert lines and _inside(lines[0].box, 62, 84, 72, 92)
    assert lines[0].box[0] >= 45  # the digit, not the gutter's edge


def test_white_on_black_reads_the_same_ink_as_black_on_white(digits):
    ink = _number_ink(digits, "305", 40)
    black_on_white = _page(ink, (120, 220), (40, 40))
    white_on_black = 255 - black_on_white
    a, b = find_lines(black_on_white)[0], find_lines(white_on_black)[0]
    assert a.box == b.box
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 8


def test_a_small_number_in_a_12_megapixel_photo_is_cut_at_full_resolution(digits):
    ink = _number_ink(digits, "2026", 120)  # 120 px tall digits in a 4000x3000 photo
    photo = _page(ink, (3000, 4000), (1400, 1700))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=90)
    from mnistkit.preprocess.decode import load_image, to_grayscale
    from mnistkit.reading import NUMBER_DECODE_SIDE

    gray = to_grayscale(load_image(buf.getvalue(), work_side=NUMBER_DECODE_SIDE))
    assert max(gray.shape) >= NUMBER_DECODE_SIDE  # a JPEG decoded at reduced size, not at WORK_SIDE
    line = find_lines(gray)[0]
    scale = gray.shape[1] / 4000
    assert _inside(line.box, 1400 * scale + 15, 1520 * scale - 15, 1700 * scale + 15, 2180 * scale - 15)
    _x0, y0, _x1, y1 = line.box
    assert y1 - y0 >= 25  # cut from the decoded image (digits ~30 px), not a 400 px search copy


def test_a_blank_page_has_no_lines():
    assert find_lines(np.full((300, 200), 230, np.uint8)) == []
    noisy = np.clip(230 + np.random.default_rng(0).normal(0, 4, (300, 200)), 0, 255).astype(np.uint8)
    assert find_lines(noisy) == []


def test_a_tight_crop_of_a_one_keeps_the_one(digits):
    one = _number_ink(digits, "1", 28)
    rows, cols = np.flatnonzero(one.max(1) > 40), np.flatnonzero(one.max(0) > 40)
    tight = 255 - one[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    page = np.pad(tight, 2, constant_values=255)
    lines = find_lines(page)
    assert lines and lines[0].image.max() > 200  # the stroke is writing, not a ruling line
    _x0, y0, _x1, y1 = lines[0].box
    assert y1 - y0 >= tight.shape[0]


def test_straight_strokes_alone_are_writing_when_clear_of_the_edges():
    page = np.full((100, 200), 230, np.uint8)
    page[30:70, 50:54] = 20  # a big "11": two straight strokes, 40 % of the height
    page[30:70, 90:94] = 20
    (line,) = find_lines(page)
    x0, y0, x1, y1 = line.box
    assert x0 <= 50 and x1 >= 94 and y0 <= 30 and y1 >= 70
    ruled = np.full((100, 200), 230, np.uint8)
    ruled[:, 100:102] = 20  # a ruling line from edge to edge is no writing
    assert find_lines(ruled) == []


def test_runs_is_an_opening_by_a_line():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    for _ in range(30):
        mask = rng.random((25, 30)) < 0.75
        length, axis = int(rng.integers(1, 15)), int(rng.integers(0, 2))
        line = np.ones((1, length) if axis == 1 else (length, 1), bool)
        expected = ndimage.binary_opening(np.pad(mask, length), structure=line)[length:-length, length:-length]
        assert np.array_equal(runs(mask, length, axis), expected)


def test_line_images_keep_the_aspect_and_stretch_the_contrast():
    ink = np.zeros((50, 200), np.float32)
    ink[10:40, 20:180] = 90.0  # a grey pencil
    img = line_image(ink)
    assert img.shape == (LINE_HEIGHT, 128) and img.max() == 255
    batch = pad_lines([img, img[:, :60]])
    assert batch.shape == (2, LINE_HEIGHT, 128) and (batch[1, :, 60:] == 0).all()


def test_a_short_digit_joins_a_line_whose_digits_sit_on_different_baselines(digits):
    """A "7" and a "9" 50 px tall, the 9 lower, and a "2" 24 px tall: the line's box is 62 px,
    over 2.5 times the 2, but the 2 is judged against the line's tallest digit and stays in it."""
    page = np.full((160, 260), 225, np.uint8)
    for ch, (y, x, h) in zip("792", [(40, 30, 50), (52, 90, 50), (70, 150, 24)]):
        page[y : y + h, x : x + h] = 255 - _number_ink(digits, ch, h)
    lines = find_lines(page)
    assert len(lines) == 1
    assert _inside(lines[0].box, 45, 100, 35, 170)


def test_a_line_is_read_at_each_width_and_the_surest_reading_wins(monkeypatch):
    """The reader keeps, over :data:`WIDTH_FACTORS`, the reading with the highest confidence: a
    model that grows surer of its "7" as the line gets wider answers with the widest reading."""
    from mnistkit.reading import reader
    from mnistkit.reading.find import FoundLine

    line = np.full((LINE_HEIGHT, 40), 200, np.uint8)
    line[:4] = 0  # black above the ink, as padding is
    assert reader.stretch(line, 1.5).shape == (LINE_HEIGHT, 60) and reader.stretch(line, 1.0) is line

    class WiderIsSurer(torch.nn.Module):
        def forward(self, x):
            cols = x.reshape(x.shape[0], -1, x.shape[-1])
            inked = (cols.amax(1) > cols.amin()).sum(1) / 4  # the line's own width (padding is blank)
            logits = torch.zeros((x.shape[0], x.shape[-1] // 4, 11))
            logits[:, :, 10] = 30.0  # blank, surely, in every column but the first
            logits[:, 0, :] = -20.0
            logits[:, 0, 10] = 2.0
            logits[:, 0, 7] = inked - 7.5  # a "7", surer the wider the line
            return logits

    names = [str(d) for d in range(10)]
    reads = reader.read_line_images(WiderIsSurer(), [line], names, widths=reader.WIDTH_FACTORS)[0]
    assert [text for text, _, _ in reads] == ["7"] * len(reader.WIDTH_FACTORS)
    confidences = [conf for _, conf, _ in reads]
    assert confidences == sorted(confidences) and confidences[0] < 0.7 and confidences[-1] > 0.95
    monkeypatch.setattr(reader, "find_lines", lambda gray: [FoundLine((0, 0, 40, 32), line, 1.0)])
    reading = reader.read_image(WiderIsSurer(), np.zeros((32, 40), np.uint8), names, min_confidence=0.3)
    assert reading.text == "7" and reading.confidence == pytest.approx(confidences[-1], abs=1e-5)
    assert not reading.unsure
