"""Photo benchmark: MNIST *test* digits rendered as a phone would see them, read by `mnistkit predict`.

A seeded generator draws each digit on tinted paper, 60-140 px tall somewhere
off-centre, rotated up to +-10 degrees, in a pen from black to grey, then lights
it (evenly, with a vignette, from one side, under a soft shadow, or all three),
blurs it, adds sensor noise and saves a JPEG at quality 60-90. The same digits
are also saved as the plain 28x28 image and as a clean scan (white paper, black
ink, PNG), so every condition is compared side by side on identical digits.

It also renders 3-6 digit numbers (read with the number reader) and non-digits
(Fashion-MNIST items, letters drawn with the system's fonts, random scribbles)
to measure the unsure rule: how many non-digits it flags against how many true
digits it flags, at several ``--min-confidence`` values, with the checkpoint's novelty model
(:mod:`mnistkit.novelty`) when it has one, and at the default without it for comparison.

Images go to a temporary folder that is deleted afterwards; results go to
bench/results/photos.json and a table is printed.

    python bench/photos.py                       # the bundled model, 1000 digits per condition
    python bench/photos.py --model runs/cnn      # another checkpoint or run directory
    python bench/photos.py --quick               # 200 digits: a smoke run
    python bench/photos.py --timing              # also time preprocessing (12 MP JPEG, 400x400 canvas)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LIGHTING = ("even", "vignette", "side-light", "shadow", "all")
CONDITIONS = ("plain-28x28", "clean-scan") + tuple(f"photo-{name}" for name in LIGHTING)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
FONT_DIR = Path("/usr/share/fonts/truetype")
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


# --- rendering ------------------------------------------------------------------------------------


def ink_layer(digit28: np.ndarray, height: int, rng: np.random.Generator, rotate: bool) -> Image.Image:
    """MNIST's bright-on-dark 28x28 -> an "L" ink-coverage layer whose 20 px box is ``height`` px tall."""
    side = max(28, round(height * 28 / 20))
    layer = Image.fromarray(digit28).resize((side, side), Image.Resampling.BICUBIC)
    if rotate:
        layer = layer.rotate(float(rng.uniform(-10, 10)), Image.Resampling.BICUBIC, expand=True)
    return layer


def paper(size: tuple[int, int], rng: np.random.Generator, tinted: bool) -> np.ndarray:
    """float32 (H, W, 3) paper colour on 0..1: white, or a random warm/cool tint."""
    w, h = size
    tint = np.array([1.0, 1.0, 1.0]) if not tinted else 1.0 - rng.uniform(0.0, 0.12, 3)
    return np.broadcast_to(tint.astype(np.float32), (h, w, 3)).copy()


def light_field(size: tuple[int, int], kind: str, rng: np.random.Generator) -> np.ndarray:
    """float32 (H, W) multiplicative light: 1 is full light."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.full((h, w), float(rng.uniform(0.85, 1.0)), np.float32)
    if kind in ("vignette", "all"):
        cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
        r2 = ((x - cx) / (w / 2)) ** 2 + ((y - cy) / (h / 2)) ** 2
        field *= 1.0 - rng.uniform(0.15, 0.3) * r2  # corners at 0.4-0.7 of the centre (1-1.3 stops)
    if kind in ("side-light", "all"):
        angle = rng.uniform(0, 2 * math.pi)
        t = (x - w / 2) * math.cos(angle) + (y - h / 2) * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        field *= 1.0 - rng.uniform(0.4, 0.65) * t
    if kind in ("shadow", "all"):
        # A soft-edged shadow (a hand or a phone) over part of the page, its edge crossing the frame.
        angle = rng.uniform(0, 2 * math.pi)
        offset = rng.uniform(-0.25, 0.25) * min(w, h)
        d = (x - w / 2) * math.cos(angle) + (y - h / 2) * math.sin(angle) - offset
        softness = rng.uniform(10, 40)
        depth = rng.uniform(0.35, 0.55)
        field *= 1.0 - depth / (1.0 + np.exp(np.clip(-d / softness, -50, 50)))
    return field


def render_photo(
    layers: list[Image.Image], rng: np.random.Generator, lighting: str | None, size: tuple[int, int] | None = None
) -> bytes:
    """Ink layers placed side by side -> JPEG bytes of a photo (or a clean PNG scan when ``lighting`` is None)."""
    photo = lighting is not None
    gap = [int(rng.uniform(0.1, 0.3) * layers[0].height) for _ in layers]
    total_w = sum(layer.width for layer in layers) + sum(gap[:-1])
    total_h = max(layer.height for layer in layers)
    if size is None:
        size = (max(int(rng.integers(400, 641)), total_w + 80), max(int(rng.integers(400, 641)), total_h + 80))
    w, h = size
    coverage = Image.new("L", size, 0)
    left = int(rng.integers(20, max(21, w - total_w - 20)))
    top = int(rng.integers(20, max(21, h - total_h - 20)))
    x = left
    for layer, g in zip(layers, gap):
        jitter = int(rng.integers(-total_h // 12, total_h // 12 + 1)) if len(layers) > 1 else 0
        y = min(max(10, top + (total_h - layer.height) // 2 + jitter), h - layer.height - 10)  # a margin
        coverage.paste(layer, (x, y), layer)  # max-like: the layer is its own mask
        x += layer.width + g
    alpha = np.asarray(coverage, np.float32) / 255.0
    if not photo:
        return encode(np.clip(255 * (1 - alpha), 0, 255).astype(np.uint8), "PNG")
    pen = float(rng.uniform(0.0, 0.55))  # 0 = black ink, 0.55 = a grey pencil
    pen_rgb = np.clip(pen + rng.uniform(-0.05, 0.1, 3), 0, 1).astype(np.float32)
    page = paper(size, rng, tinted=True)
    img = page * (1 - alpha[..., None]) + page * pen_rgb * alpha[..., None]
    img *= light_field(size, lighting, rng)[..., None]
    pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), "RGB")
    pil = pil.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.5))))
    noisy = np.asarray(pil, np.float32) + rng.normal(0, rng.uniform(2, 6), (h, w, 3)).astype(np.float32)
    return encode(np.clip(noisy, 0, 255).astype(np.uint8), "JPEG", quality=int(rng.integers(60, 91)))


def encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def tight(digit28: np.ndarray) -> np.ndarray:
    """The 28x28 digit cropped to its ink (numbers are spaced by their ink, not by MNIST's frame)."""
    rows, cols = np.flatnonzero(digit28.any(1)), np.flatnonzero(digit28.any(0))
    return digit28[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def number_layers(digits: list[np.ndarray], rng: np.random.Generator) -> list[Image.Image]:
    """One ink layer per digit of a number, all written at one height (60-100 px)."""
    height = int(rng.integers(60, 101))
    layers = []
    for d in digits:
        crop = tight(d)
        scale = height / crop.shape[0]
        layer = Image.fromarray(crop).resize((max(2, round(crop.shape[1] * scale)), height), Image.Resampling.BICUBIC)
        layers.append(layer.rotate(float(rng.uniform(-5, 5)), Image.Resampling.BICUBIC, expand=True))
    return layers


# --- non-digits -----------------------------------------------------------------------------------


def letter_images(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Letters (digit-like ones excluded: O, I, l, S, Z, B, g, q...) in the system's fonts, 28x28 bright on dark."""
    fonts = sorted(FONT_DIR.rglob("*.ttf"))
    if not fonts:
        return []
    alphabet = "ACEFHKMNPRTUVWXYacdefhkmnprtuvwxy"
    out = []
    for _ in range(n):
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), 80)
        img = Image.new("L", (120, 120), 0)
        ImageDraw.Draw(img).text((60, 60), str(rng.choice(list(alphabet))), fill=255, font=font, anchor="mm")
        out.append(frame28(np.asarray(img)))
    return out


def scribble_images(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random pen scribbles: 6-14 joined random strokes, 28x28 bright on dark."""
    out = []
    for _ in range(n):
        img = Image.new("L", (120, 120), 0)
        points = [tuple(rng.uniform(10, 110, 2)) for _ in range(int(rng.integers(6, 15)))]
        ImageDraw.Draw(img).line(points, fill=255, width=int(rng.integers(6, 12)), joint="curve")
        out.append(frame28(np.asarray(img)))
    return out


def frame28(img: np.ndarray) -> np.ndarray:
    """A bright-on-dark drawing -> 28x28 with its ink in the central 20x20 box (like MNIST)."""
    crop = tight(img)
    h, w = crop.shape
    scale = 20 / max(h, w)
    small = Image.fromarray(crop).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    out = Image.new("L", (28, 28), 0)
    out.paste(small, ((28 - small.width) // 2, (28 - small.height) // 2))
    return np.asarray(out)


def fashion_images(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    if not FASHION.exists():
        return []
    from mnistkit.data.idx import read_idx

    images = read_idx(FASHION).numpy()
    return [images[i] for i in rng.choice(len(images), n, replace=False)]


# --- measuring ------------------------------------------------------------------------------------


def mnist_test(program: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test images and labels as arrays (never downloads: a benchmark says what is missing)."""
    from mnistkit.data import load_dataset
    from mnistkit.errors import MnistkitError

    try:
        test = load_dataset("mnist", download=False).test
    except MnistkitError as exc:
        sys.exit(f"{program}: {exc}")
    return test.images.numpy(), test.labels.numpy()


def read_digits(ckpt, files: list[Path]):
    """Run the predict path (decode, analyse, calibrated probabilities joined with the line reader's
    one-digit reading for the bundled model, novelty ratios) on files
    -> (probs, analyses, novelty ratios or None when the checkpoint has no novelty model, the
    classifier's own probs)."""
    from mnistkit.novelty import novelty_ratios
    from mnistkit.prediction import analyze_inputs, probabilities, with_line_readings

    _, analyses, failures = analyze_inputs([str(f) for f in files], None, ckpt)
    if failures:  # every file must be readable
        raise SystemExit(f"photos: {failures[0][0]}: {failures[0][1]}")
    digits = np.stack([a.digit for a in analyses])
    own = probabilities(ckpt, digits)
    return with_line_readings(own, analyses), analyses, novelty_ratios(ckpt, digits), own


def interval_percent(successes: int, n: int) -> list[float]:
    """The 95 % Wilson interval of a rate, in percent: how far a figure from ``n`` trials may be from
    the rate itself (200 numbers read at 95 % could come from anything in about 91-97 %)."""
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(0.95, method="wilson")
    return [round(100 * ci.low, 2), round(100 * ci.high, 2)]


def flagged_percent(analyses, probs, novelty, own, use_novelty: bool = True, thresholds=THRESHOLDS) -> dict:
    """% of inputs the unsure rule flags, per ``--min-confidence`` in ``thresholds``."""
    from mnistkit.unsure import unsure_reason

    ratios = novelty if novelty is not None and use_novelty else [None] * len(analyses)
    return {
        str(t): float(
            np.mean([unsure_reason(a, p, t, r, c) is not None for a, p, r, c in zip(analyses, probs, ratios, own)])
        )
        * 100
        for t in thresholds
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint or run directory (default: the bundled model)")
    ap.add_argument("-n", type=int, default=1000, help="digits per condition (default 1000)")
    ap.add_argument("--numbers", type=int, default=200, help="numbers of 3-6 digits (default 200)")
    ap.add_argument("--non-digits", type=int, default=300, help="of each non-digit kind (default 300)")
    ap.add_argument("--quick", action="store_true", help="200 digits, 50 numbers, 100 non-digits per kind")
    ap.add_argument("--timing", action="store_true", help="also time preprocessing of a 12 MP JPEG and a canvas")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "photos.json"))
    args = ap.parse_args()
    if args.quick:
        args.n, args.numbers, args.non_digits = 200, 50, 100
    return args


def condition_photos(cond: str, digits: list[np.ndarray], seed: int, folder: Path) -> list[Path]:
    """``digits`` as files under one condition: plain 28x28 PNGs, clean scans or lit photos (JPEG)."""
    folder.mkdir()
    crng = np.random.default_rng([seed, CONDITIONS.index(cond)])
    paths = []
    for k, digit in enumerate(digits):
        if cond == "plain-28x28":
            data = encode(255 - digit, "PNG")  # dark ink on white, as a user's file would be
        else:
            layer = ink_layer(digit, int(crng.integers(60, 141)), crng, rotate=cond != "clean-scan")
            data = render_photo([layer], crng, None if cond == "clean-scan" else cond[len("photo-") :])
        path = folder / f"{k:05d}.{'png' if cond in ('plain-28x28', 'clean-scan') else 'jpg'}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def digit_conditions(ckpt, digits: list[np.ndarray], labels: np.ndarray, seed: int, root: Path, thresholds) -> dict:
    """Digits under every condition (the same digits, in the same order): accuracy and the share flagged."""
    conditions = {}
    for cond in CONDITIONS:
        probs, analyses, novelty, own = read_digits(ckpt, condition_photos(cond, digits, seed, root / cond))
        acc = float((probs.argmax(1) == labels).mean() * 100)
        conditions[cond] = {
            "accuracy": round(acc, 2),
            "flagged_percent": flagged_percent(analyses, probs, novelty, own, thresholds=thresholds),
            "flagged_without_novelty_percent": flagged_percent(analyses, probs, novelty, own, False, thresholds),
        }
    return conditions


def number_results(ckpt, test_x, test_y, count: int, seed: int, folder: Path) -> dict:
    """Numbers of 3-6 digits, photographed with every lighting condition in turn, read whole."""
    from mnistkit.number_reading import read_number_files

    nrng = np.random.default_rng([seed, 100])
    folder.mkdir()
    truths, paths = [], []
    for k in range(count):
        idx = nrng.choice(len(test_x), int(nrng.integers(3, 7)), replace=False)
        truths.append("".join(str(int(test_y[i])) for i in idx))
        data = render_photo(number_layers([test_x[i] for i in idx], nrng), nrng, LIGHTING[k % len(LIGHTING)])
        paths.append(folder / f"{k:04d}.jpg")
        paths[-1].write_bytes(data)
    readings = read_number_files(ckpt, [str(p) for p in paths])
    exact = [r.text == t for r, t in zip(readings, truths)]
    right_count = [len(r.text) == len(t) for r, t in zip(readings, truths)]
    return {
        "count": count,
        "read_exactly_percent": round(float(np.mean(exact) * 100), 2),
        "read_exactly_95ci": interval_percent(sum(exact), len(exact)),
        "digit_count_right_percent": round(float(np.mean(right_count) * 100), 2),
        "examples_wrong": [[t, r.text] for r, t, ok in zip(readings, truths, exact) if not ok][:10],
    }


def non_digit_results(ckpt, count: int, seed: int, root: Path, thresholds) -> dict:
    """Non-digits, photographed like the digits (all lighting conditions in turn): the share flagged."""
    krng = np.random.default_rng([seed, 200])
    kinds = {
        "fashion-mnist": fashion_images(count, krng),
        "letters": letter_images(count, krng),
        "scribbles": scribble_images(count, krng),
    }
    results: dict = {}
    for kind, images in kinds.items():
        if not images:
            results[kind] = "skipped (not available on this machine)"
            continue
        folder = root / kind
        folder.mkdir()
        paths = []
        for k, img in enumerate(images):
            layer = ink_layer(img, int(krng.integers(60, 141)), krng, rotate=True)
            paths.append(folder / f"{k:04d}.jpg")
            paths[-1].write_bytes(render_photo([layer], krng, LIGHTING[k % len(LIGHTING)]))
        probs, analyses, novelty, own = read_digits(ckpt, paths)
        results[kind] = {
            "count": len(images),
            "flagged_percent": flagged_percent(analyses, probs, novelty, own, thresholds=thresholds),
            "flagged_without_novelty_percent": flagged_percent(analyses, probs, novelty, own, False, thresholds),
        }
    return results


def main() -> None:
    args = parse_args()
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path

    model_path = resolve_checkpoint_path(args.model)
    ckpt = load_checkpoint(model_path)
    # the tried values, and the model's own default (mnistkit.checkpoint.Checkpoint.min_confidence)
    thresholds = tuple(sorted({*THRESHOLDS, ckpt.min_confidence}))
    test_x, test_y = mnist_test("photos")
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(test_x), args.n, replace=False)
    results: dict = {"model": str(model_path), "n": args.n, "seed": args.seed, "conditions": {}}
    if args.timing:  # first, before any model work in this process: preprocessing alone
        results["timing_ms"] = time_preprocessing(test_x[pick[0]], rng)

    with tempfile.TemporaryDirectory(prefix="mnistkit-photos-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        digits = [test_x[i] for i in pick]
        results["conditions"] = digit_conditions(ckpt, digits, test_y[pick], args.seed, root, thresholds)
        results["digits_seconds"] = round(time.perf_counter() - started, 1)
        results["numbers"] = number_results(ckpt, test_x, test_y, args.numbers, args.seed, root / "numbers")
        results["non_digits"] = non_digit_results(ckpt, args.non_digits, args.seed, root, thresholds)
    results["default_min_confidence"] = ckpt.min_confidence  # the default in force: the model's own
    results["thresholds"] = list(thresholds)
    results["novelty"] = ckpt.meta.get("novelty")  # None: the unsure rule used the probabilities alone
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")


def time_preprocessing(digit28: np.ndarray, rng: np.random.Generator, repeats: int = 100) -> dict:
    """min/median/max ms for a 12-megapixel phone JPEG and a 400x400 canvas PNG: decode + analyse
    (what `mnistkit predict` does per file) and the analysis alone (what the server does once decoded)."""
    from mnistkit.preprocess.image import analyze_image, load_image

    big = render_photo([ink_layer(digit28, 1200, rng, rotate=True)], rng, "all", size=(4000, 3000))
    canvas = Image.new("RGBA", (400, 400), (255, 255, 255, 255))
    canvas.paste(Image.fromarray(255 - digit28).resize((280, 280)), (60, 60))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    out = {}
    for name, data in (("12MP-jpeg", big), ("400x400-canvas-png", buf.getvalue())):
        decoded = load_image(data)
        analyze_image(decoded)  # warm-up: the first call also imports SciPy (a server does that once)
        for step, work in (
            ("decode+analyse", lambda data=data: analyze_image(load_image(data))),
            ("analyse", lambda decoded=decoded: analyze_image(decoded)),
        ):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                work()
                times.append((time.perf_counter() - t0) * 1000)
            out[f"{name} {step}"] = {
                "bytes": len(data),
                "min": round(min(times), 2),
                "median": round(statistics.median(times), 2),
                "max": round(max(times), 2),
            }
    return out


def print_table(r: dict) -> None:
    default = str(r["default_min_confidence"])
    thresholds = r.get("thresholds", THRESHOLDS)
    clean = r["conditions"]["clean-scan"]["accuracy"]
    print(f"model: {r['model']}   digits per condition: {r['n']}")
    print(f"{'condition':<22}{'accuracy %':>11}{'vs clean':>10}{'unsure % @' + default:>16}")
    for cond, c in r["conditions"].items():
        flagged = c["flagged_percent"].get(default, float("nan"))
        print(f"{cond:<22}{c['accuracy']:>11.2f}{c['accuracy'] - clean:>+10.2f}{flagged:>16.2f}")
    n = r["numbers"]
    print(
        f"numbers (3-6 digits): {n['read_exactly_percent']:.1f}% read exactly "
        f"(95 % interval {n['read_exactly_95ci'][0]:.1f}-{n['read_exactly_95ci'][1]:.1f}), "
        f"{n['digit_count_right_percent']:.1f}% right digit count, of {n['count']}"
    )
    novelty = "with the novelty model" if r.get("novelty") else "the checkpoint has no novelty model"
    print(
        f"flagged as unsure ({novelty}), % by --min-confidence: "
        + "  ".join(str(t) for t in thresholds)
        + f"  | @{default} without novelty"
    )
    for kind, v in r["non_digits"].items():
        if isinstance(v, str):
            print(f"  {kind:<14} {v}")
        else:
            print(
                f"  {kind:<14} "
                + "  ".join(f"{v['flagged_percent'][str(t)]:5.1f}" for t in thresholds)
                + f"  | {v['flagged_without_novelty_percent'][default]:5.1f}"
            )
    photo = [c for k, c in r["conditions"].items() if k.startswith("photo-")]
    print(
        f"  {'photo digits':<14} "
        + "  ".join(f"{max(c['flagged_percent'][str(t)] for c in photo):5.1f}" for t in thresholds)
        + f"  | {max(c['flagged_without_novelty_percent'][default] for c in photo):5.1f}  (worst condition)"
    )
    all_photo = [c["flagged_percent"][default] for c in photo]
    print(f"  {'photo digits':<14} {sum(all_photo) / len(all_photo):5.1f} @{default} (mean over the photo conditions)")
    if "timing_ms" in r:
        for name, t in r["timing_ms"].items():
            print(f"{name} ({t['bytes']:,} bytes): min {t['min']} / median {t['median']} / max {t['max']} ms")


if __name__ == "__main__":
    main()
