"""Real handwritten numbers read side by side: the digit reader, the line reader and Tesseract.

`make bench-real` reads a folder of ``NNNN_LABEL.ext`` files (LABEL: the number written) with

- ``digits``: the segmentation reader (:mod:`mnistkit.number_reading`, the bundled digit CNN);
- ``lines``: the sequence reader (:mod:`mnistkit.reading`, the bundled line model or ``--line-model``);
- ``single``: the one-digit numbers only, read by plain ``mnistkit predict`` (one digit per image:
  :func:`mnistkit.prediction.predict_files`, the bundled models or ``--model``);
- ``tesseract``: Tesseract (``--psm 7``, digits only), when it is installed,

and gives for each: the share read exactly with a 95 % Wilson interval, the share with the right
digit count, the share flagged unsure and the accuracy of what is not flagged, the per-number
latency (min/median/max, a warm process, decode included) and the commonest confusions.

    python bench/real_numbers.py                           # the development set beside the checkout
    python bench/real_numbers.py --folder DIR --limit 500  # another folder, a subset
    python bench/real_numbers.py --readers lines --line-model runs/lines-1

Results go to ``bench/results/real-numbers[-TAG].json``. The development set is for measuring and
choosing settings only; nothing is trained on it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV_SET = ROOT.parent / "shared" / "data" / "realworld-dev" / "parish-rows"
NAME = re.compile(r"^\d+_(\d+)\.(jpe?g|png|tiff?|bmp|webp)$", re.IGNORECASE)

#: A reader takes a file's path and gives (text read, unsure).
Reader = Callable[[str], tuple[str, bool]]


def labelled_files(folder: Path, limit: int | None) -> list[tuple[Path, str]]:
    """``(path, label)`` for each ``NNNN_LABEL.ext`` file, in name order (``limit``: evenly spaced ones)."""
    files = sorted((p, m.group(1)) for p in folder.iterdir() if (m := NAME.match(p.name)))
    if limit and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


def wilson_percent(k: int, n: int) -> list[float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return [round(100 * ci.low, 2), round(100 * ci.high, 2)]


def digit_reader(model: str | None) -> Reader:
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path
    from mnistkit.number_reading import read_number
    from mnistkit.prediction import decode_input

    ckpt = load_checkpoint(resolve_checkpoint_path(model))

    def read(path: str) -> tuple[str, bool]:
        r = read_number(ckpt, decode_input(path, None), path)
        return r.text, r.unsure

    return read


def line_reader(model: str | None) -> Reader:
    from mnistkit.reading import read_number_file
    from mnistkit.reading.model import load_line_reader

    reader = load_line_reader(model)

    def read(path: str) -> tuple[str, bool]:
        r = read_number_file(reader, path)
        return r.text, r.unsure

    return read


def single_digit_reader(model: str | None) -> Reader:
    from mnistkit.checkpoint import load_checkpoint, resolve_checkpoint_path
    from mnistkit.prediction import predict_files

    ckpt = load_checkpoint(resolve_checkpoint_path(model))

    def read(path: str) -> tuple[str, bool]:
        p = predict_files(ckpt, [path]).predictions[0]
        return p.label or "", p.unsure

    return read


def tesseract_reader() -> Reader | None:
    exe = shutil.which("tesseract")
    if exe is None:
        return None

    def read(path: str) -> tuple[str, bool]:
        out = subprocess.run(
            [exe, path, "stdout", "--psm", "7", "-c", "tessedit_char_whitelist=0123456789"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return re.sub(r"\D", "", out), False

    return read


def measure(read: Reader, files: list[tuple[Path, str]]) -> dict:
    """Read every file once (after one warm-up read), timing each, and score the readings."""
    read(str(files[0][0]))
    texts, unsure, ms = [], [], []
    for path, _ in files:
        t0 = time.perf_counter()
        text, flagged = read(str(path))
        ms.append(1000 * (time.perf_counter() - t0))
        texts.append(text)
        unsure.append(flagged)
    return score([label for _, label in files], texts, unsure, ms)


def score(truth: list[str], texts: list[str], unsure: list[bool], ms: list[float]) -> dict:
    n = len(truth)
    right = [t == r for t, r in zip(truth, texts)]
    kept = [ok for ok, u in zip(right, unsure) if not u]
    confusions = collections.Counter(f"{t}->{r or '(none)'}" for t, r in zip(truth, texts) if t != r)
    multi = [ok for ok, t in zip(right, truth) if len(t) > 1]
    return {
        "numbers": n,
        "read_exactly_percent": round(100 * sum(right) / n, 2),
        "read_exactly_95ci": wilson_percent(sum(right), n),
        "read_exactly_multi_digit_percent": round(100 * sum(multi) / max(1, len(multi)), 2),
        "read_exactly_one_digit_percent": round(100 * (sum(right) - sum(multi)) / max(1, n - len(multi)), 2),
        "digit_count_right_percent": round(100 * float(np.mean([len(t) == len(r) for t, r in zip(truth, texts)])), 2),
        "unsure_percent": round(100 * sum(unsure) / n, 2),
        "right_when_not_unsure_percent": round(100 * sum(kept) / max(1, len(kept)), 2),
        "latency_ms": {k: round(float(f(ms)), 2) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))},
        "confusions": confusions.most_common(15),
    }


def phone_photo_jpeg(seed: int = 0) -> bytes:
    """A 12-megapixel (4000x3000) JPEG of a 4-digit number written 150 px tall on grey paper, with
    uneven light: the size and kind of file a phone sends."""
    import io

    from PIL import Image

    from mnistkit.data import load_dataset

    rng = np.random.default_rng(seed)
    ds = load_dataset("mnist-sample")
    digits = [ds.test.images[int(i)].numpy() for i in rng.choice(len(ds.test), 4, replace=False)]
    ink = np.concatenate([np.asarray(Image.fromarray(d).resize((150, 150))) for d in digits], axis=1)
    yy, xx = np.mgrid[0:3000, 0:4000]
    page = (200 + 30 * (xx / 4000) - 20 * (yy / 3000) + rng.normal(0, 3, (3000, 4000))).astype(np.float32)
    page[1400:1550, 1600:2200] -= ink.astype(np.float32) * 0.7
    buf = io.BytesIO()
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def time_inputs(model: str | None, repeats: int = 30) -> dict:
    """Per-number latency of the line reader, decode included, on a phone photo and a scan crop
    (min/median/max ms over ``repeats`` reads after a warm-up, in this process)."""
    from mnistkit.reading import read_number_file
    from mnistkit.reading.model import load_line_reader

    reader = load_line_reader(model)
    photo = phone_photo_jpeg()
    crop = _scan_crop(photo)
    out = {}
    for name, data in (("12 MP phone JPEG", photo), ("200x60 scan crop", crop)):
        read_number_file(reader, data, name)
        ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            read_number_file(reader, data, name)
            ms.append(1000 * (time.perf_counter() - t0))
        out[name] = {k: round(float(f(ms)), 2) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))}
    return out


def _scan_crop(photo: bytes) -> bytes:
    """The number of :func:`phone_photo_jpeg` cut as a 200x60 px grey PNG, as a scanned form field."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(photo)).convert("L").crop((1550, 1375, 2250, 1585)).resize((200, 60))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=DEV_SET, help="NNNN_LABEL.ext files (default: the dev set)")
    ap.add_argument("--limit", type=int, default=None, help="N evenly spaced files only (a quick look)")
    ap.add_argument(
        "--readers", default="digits,lines,single,tesseract", help="comma-separated: digits, lines, single, tesseract"
    )
    ap.add_argument(
        "--model", default=None, help="digit checkpoint of the digits and single readers (default: bundled)"
    )
    ap.add_argument("--line-model", default=None, help="line checkpoint for the lines reader (default: bundled)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    ap.add_argument(
        "--timing", action="store_true", help="also time a 12 MP phone JPEG and a 200x60 crop (quiet machine)"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="results JSON (default bench/results/real-numbers[-TAG].json)"
    )
    args = ap.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"real_numbers: {args.folder} is not a folder of NNNN_LABEL images")
    files = labelled_files(args.folder, args.limit)
    if not files:
        sys.exit(f"real_numbers: no NNNN_LABEL.ext files in {args.folder}")
    makers: dict[str, Callable[[], Reader | None]] = {
        "digits": lambda: digit_reader(args.model),
        "lines": lambda: line_reader(args.line_model),
        "single": lambda: single_digit_reader(args.model),
        "tesseract": tesseract_reader,
    }
    results: dict = {
        "folder": args.folder.name,
        "numbers": len(files),
        "load_before": list(os.getloadavg()),
        "line_model": args.line_model or "bundled",
    }
    if args.timing:  # first, before the readers' runs
        results["timing_ms"] = time_inputs(args.line_model)
        for name, t in results["timing_ms"].items():
            print(f"{name}: {t['min']} / {t['median']} / {t['max']} ms (min / median / max)")
    for name in args.readers.split(","):
        read = makers[name]()
        if read is None:
            print(f"{name}: not installed (apt-get install tesseract-ocr), skipped")
            continue
        r = results[name] = measure(read, [f for f in files if name != "single" or len(f[1]) == 1])
        lat = r["latency_ms"]
        print(
            f"{name}: {r['read_exactly_percent']:.1f} % read exactly ({r['read_exactly_95ci'][0]:.1f}-"
            f"{r['read_exactly_95ci'][1]:.1f}; one digit {r['read_exactly_one_digit_percent']:.1f} %, more "
            f"{r['read_exactly_multi_digit_percent']:.1f} %), right count {r['digit_count_right_percent']:.1f} %, "
            f"unsure {r['unsure_percent']:.1f} % (right when sure {r['right_when_not_unsure_percent']:.1f} %), "
            f"{lat['min']}/{lat['median']}/{lat['max']} ms"
        )
    results["load_after"] = list(os.getloadavg())
    out = args.out or ROOT / "bench" / "results" / f"real-numbers{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
