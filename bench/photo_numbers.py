"""Written numbers, read three ways side by side, and the preprocessing speed: `make bench-numbers`.

The numbers are those of the photo benchmark (`bench/photos.py`: the same generator and seed,
3-6 MNIST *test* digits per number, every lighting condition in turn). Each is read by the line
reader (:mod:`mnistkit.reading`, what `mnistkit predict --number` uses: the bundled one or
``--line-model``), by the digit model's segmentation by recognition (:mod:`mnistkit.number_reading`)
and by the geometric grouping alone (``bench/geometric_numbers.py``, each group
read by the same model), so the readers are measured on identical images. ``--timing`` also times preprocessing of a 12-megapixel phone JPEG and a
400x400 canvas (min/median/max ms; run it on a quiet machine).

    python bench/photo_numbers.py                   # the bundled model, 1000 numbers
    python bench/photo_numbers.py --timing          # and the preprocessing timings
    python bench/photo_numbers.py --digits val --model RUN   # development numbers, to choose a model

``--digits val`` makes the numbers from the digits the model's run held out for validation
(the same seeded split its training used), so models can be compared without the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geometric_numbers import analyze_number
from photos import LIGHTING, ROOT, interval_percent, mnist_test, number_layers, render_photo, time_preprocessing


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint or run directory (default: the bundled model)")
    ap.add_argument("--line-model", help="line reader checkpoint or run directory (default: the bundled one)")
    ap.add_argument("--numbers", type=int, default=1000, help="numbers of 3-6 digits (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="the photo benchmark's seed (default 0)")
    ap.add_argument("--timing", action="store_true", help="also time preprocessing (12 MP JPEG, canvas)")
    ap.add_argument(
        "--digits",
        choices=("test", "val"),
        default="test",
        help="MNIST's test split (the benchmark, default) or the model's validation split (development)",
    )
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/photos-numbers[-val].json)")
    args = ap.parse_args()
    suffix = "" if args.digits == "test" else "-val"
    args.out = args.out or str(ROOT / "bench" / "results" / f"photos-numbers{suffix}.json")
    return args


def read_three_ways(ckpt, line_reader, test_x, test_y, count: int, seed: int) -> tuple[list[str], dict]:
    """``count`` photographed numbers, each read by the line reader, by recognition-driven segmentation
    and by geometric grouping alone: (the true numbers, {way: readings})."""
    from mnistkit.number_reading import read_number
    from mnistkit.prediction import probabilities
    from mnistkit.preprocess.image import load_image
    from mnistkit.reading import read_number_file

    rng = np.random.default_rng([seed, 100])  # the photo benchmark's numbers generator
    truths: list[str] = []
    ways: dict[str, list[str]] = {"line_reader": [], "segmentation_by_recognition": [], "geometric_grouping_alone": []}
    with tempfile.TemporaryDirectory(prefix="mnistkit-numbers-") as tmp:
        for k in range(count):
            idx = rng.choice(len(test_x), int(rng.integers(3, 7)), replace=False)
            truths.append("".join(str(int(test_y[i])) for i in idx))
            path = Path(tmp) / f"{k:04d}.jpg"
            path.write_bytes(
                render_photo(number_layers([test_x[i] for i in idx], rng), rng, LIGHTING[k % len(LIGHTING)])
            )
            ways["line_reader"].append(read_number_file(line_reader, str(path)).text)
            image = load_image(str(path))
            ways["segmentation_by_recognition"].append(read_number(ckpt, image).text)
            digits = analyze_number(image)
            proba = probabilities(ckpt, np.stack([a.digit for a in digits])) if digits else np.zeros((0, 10))
            ways["geometric_grouping_alone"].append("".join(ckpt.class_names[int(i)] for i in proba.argmax(1)))
    return truths, ways


def score(readings: list[str], truths: list[str]) -> dict:
    """Exact readings (with a 95 % interval), readings of the right length, and a few mistakes."""
    return {
        "read_exactly_percent": round(100 * float(np.mean([r == t for r, t in zip(readings, truths)])), 2),
        "read_exactly_95ci": interval_percent(sum(r == t for r, t in zip(readings, truths)), len(truths)),
        "digit_count_right_percent": round(
            100 * float(np.mean([len(r) == len(t) for r, t in zip(readings, truths)])), 2
        ),
        "examples_wrong": [[t, r] for r, t in zip(readings, truths) if r != t][:10],
    }


def main() -> None:
    args = parse_args()
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path
    from mnistkit.reading.model import load_line_reader

    model_path = resolve_checkpoint_path(args.model)
    ckpt = load_checkpoint(model_path)
    line_reader = load_line_reader(args.line_model)
    test_x, test_y = mnist_test("photo_numbers") if args.digits == "test" else validation_digits(ckpt)
    timing: dict = {}
    if args.timing:  # first, before any model work in this process: preprocessing alone
        timing["load_before"] = list(os.getloadavg())
        timing["timing_ms"] = time_preprocessing(test_x[0], np.random.default_rng(args.seed))
        timing["load_after"] = list(os.getloadavg())
    truths, ways = read_three_ways(ckpt, line_reader, test_x, test_y, args.numbers, args.seed)
    results: dict = {
        "model": os.path.relpath(model_path, ROOT) if str(model_path).startswith(str(ROOT)) else str(model_path),
        "numbers": args.numbers,
        "seed": args.seed,
        "digits": args.digits,
        **{way: score(readings, truths) for way, readings in ways.items()},
    }
    results.update(timing)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for name in ways:
        r = results[name]
        print(
            f"{name}: {r['read_exactly_percent']:.1f} % read exactly (95 % interval "
            f"{r['read_exactly_95ci'][0]:.1f}-{r['read_exactly_95ci'][1]:.1f}), "
            f"{r['digit_count_right_percent']:.1f} % right count"
        )
    for step, t in results.get("timing_ms", {}).items():
        print(f"{step}: min {t['min']} / median {t['median']} / max {t['max']} ms")
    print(f"wrote {args.out}")


def validation_digits(ckpt) -> tuple[np.ndarray, np.ndarray]:
    """The digits the checkpoint's run held out for validation (its own seeded split), as arrays."""
    from mnistkit.data import load_dataset, split_validation

    cfg = ckpt.meta["config"]
    if not cfg.get("val_size"):
        sys.exit("photo_numbers: --digits val needs a model trained with a validation split (--val-size)")
    _, val = split_validation(load_dataset(cfg["dataset"], download=False).train, cfg["val_size"], cfg["seed"])
    return val.images.numpy(), val.labels.numpy()


if __name__ == "__main__":
    main()
