"""Benchmark: mnistkit's LogisticRegression against scikit-learn's on MNIST, in the same run.

Both fit the same problem (multinomial, L2, C=1, pixels / 255 as float32) on the
60,000 training images and are scored on the 10,000 test images. Fits
alternate (sklearn, mnistkit, sklearn, ...) so that both see the same machine
load; the table reports the median fit time over ``--repeats``.

    python bench/bench_logreg.py --repeats 2 --json results.json
    python -c "import bench.bench_logreg as b; print(b.run(repeats=1))"

Extra mnistkit configurations can be added with ``--extra 'tol=1e-3'``.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = os.environ.get("MNISTKIT_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
PIXEL_SCALE = 255.0  # pixels / 255 -> [0, 1], the usual scikit-learn preprocessing


def _read_idx_gz(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def load_mnist(data_dir: str = DEFAULT_DATA):
    """``(X_train [60000, 784] float32, y_train, X_test [10000, 784] float32, y_test)``, pixels / 255."""
    try:
        from mnistkit.data import load_dataset

        ds = load_dataset("mnist", data_dir=data_dir, download=False)
        parts = [ds.train.images.numpy(), ds.train.labels.numpy(), ds.test.images.numpy(), ds.test.labels.numpy()]
    except Exception:  # the loader is optional here: read the IDX files directly
        raw = Path(data_dir) / "MNIST" / "raw"
        parts = [
            _read_idx_gz(raw / "train-images-idx3-ubyte.gz", 16),
            _read_idx_gz(raw / "train-labels-idx1-ubyte.gz", 8),
            _read_idx_gz(raw / "t10k-images-idx3-ubyte.gz", 16),
            _read_idx_gz(raw / "t10k-labels-idx1-ubyte.gz", 8),
        ]
    xtr, ytr, xte, yte = parts
    xtr = xtr.reshape(len(ytr), -1).astype(np.float32) / np.float32(PIXEL_SCALE)
    xte = xte.reshape(len(yte), -1).astype(np.float32) / np.float32(PIXEL_SCALE)
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64)


def _timed_fit(make, X, y, X_test, y_test) -> dict:
    est = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - start
    n_iter = int(np.max(est.n_iter_))
    return {
        "seconds": seconds,
        "accuracy": float(est.score(X_test, y_test)) * 100,
        "n_iter": n_iter,
        "converged": not any(w.category.__name__ == "ConvergenceWarning" for w in caught),
    }


def run(repeats: int = 2, device: str = "cpu", data_dir: str = DEFAULT_DATA, extra: tuple = ()) -> dict:
    """Fit both estimators ``repeats`` times each, alternating; return medians and the ratio.

    ``extra`` holds mnistkit parameter strings such as ``"tol=1e-3"`` benchmarked as further rows.
    """
    from sklearn.linear_model import LogisticRegression as SkLogReg

    from mnistkit.estimators import LogisticRegression

    X, y, X_test, y_test = load_mnist(data_dir)
    configs = {
        "sklearn": lambda: SkLogReg(C=1.0, max_iter=100),  # lbfgs, the scikit-learn default
        "mnistkit": lambda: LogisticRegression(C=1.0, device=device),
    }
    for spec in extra:
        key, value = spec.split("=", 1)
        value = ast.literal_eval(value)  # "40" -> int, "1e-3" -> float
        configs[f"mnistkit {spec}"] = lambda k=key, v=value: LogisticRegression(C=1.0, device=device, **{k: v})
    # warm-up: first-call costs (thread pools, lazy imports, CUDA context) are not fit time. A third
    # of the data takes every estimator down the code path of the full fit (mnistkit: CSR blocks).
    for make in configs.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make().set_params(max_iter=2).fit(X[:20000], y[:20000])
    runs = {name: [] for name in configs}
    for _ in range(repeats):
        for name, make in configs.items():
            runs[name].append(_timed_fit(make, X, y, X_test, y_test))
    rows = {}
    for name, results in runs.items():
        rows[name] = {
            "seconds": statistics.median(r["seconds"] for r in results),
            "accuracy": statistics.median(r["accuracy"] for r in results),
            "n_iter": results[-1]["n_iter"],
            "converged": results[-1]["converged"],
            "all_seconds": [r["seconds"] for r in results],
        }
    base = rows["sklearn"]["seconds"]
    for row in rows.values():
        row["ratio"] = row["seconds"] / base
    import sklearn
    import torch

    return {
        "rows": rows,
        "repeats": repeats,
        "device": device,
        "n_train": len(y),
        "n_test": len(y_test),
        "sklearn": sklearn.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
    }


def markdown(result: dict) -> str:
    """The results as a Markdown table."""
    lines = [
        f"MNIST {result['n_train']} train / {result['n_test']} test, median of {result['repeats']} fits, "
        f"device={result['device']}, torch threads={result['threads']}",
        "",
        "| estimator | test accuracy % | fit s | ratio vs sklearn | iterations | converged |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(
            f"| {name} | {r['accuracy']:.2f} | {r['seconds']:.2f} | {r['ratio']:.3f} | {r['n_iter']} "
            f"| {'yes' if r['converged'] else 'no (max_iter)'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="fits per estimator (default: 2)")
    parser.add_argument("--device", default="cpu", help="mnistkit device: cpu, cuda, auto (default: cpu)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA, help=f"root holding MNIST/raw (default: {DEFAULT_DATA})")
    parser.add_argument(
        "--extra", action="append", default=[], help="extra mnistkit row, e.g. 'tol=1e-3' (repeatable; default: none)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file (default: no file)")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.device, args.data_dir, tuple(args.extra))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
