"""One benchmark measurement in its own process, so its peak RSS is its own.

``bench/run.py`` starts ``python bench/worker.py KIND JSON`` and reads the last stdout
line, a JSON object. Kinds that are not plain CLI runs live here:

- ``sklearn-logreg``: scikit-learn's ``LogisticRegression()`` (lbfgs, C=1, max_iter=100)
  on pixels / 255, the usual way it is run on MNIST.
- ``mnistkit-logreg``: ``mnistkit.estimators.LogisticRegression()`` on the same pixels.
- ``inference``: ``mnistkit.inference.predict_logits`` throughput (images/s) of a checkpoint: the median of 7 passes, and their min and max.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sklearn_logreg(spec: dict) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y, xt, yt = _mnist_pixels(spec)
    clf = LogisticRegression()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs stops at max_iter=100 on MNIST
        clf.fit(x, y)
    fit_s = time.perf_counter() - t0
    acc = 100.0 * float((clf.predict(xt) == yt).mean())
    return {"accuracy": acc, "train_seconds": round(fit_s, 3), "n_iter": int(clf.n_iter_.max())}


def _mnist_pixels(spec: dict):
    """MNIST as ``(x, y, x_test, y_test)``, pixels / 255 in ``spec["dtype"]`` (default float64)."""
    import numpy as np

    from mnistkit.data import load_dataset

    ds = load_dataset("mnist", download=False)
    dtype = np.dtype(spec.get("dtype", "float64"))
    x = ds.train.images.reshape(len(ds.train.images), -1).numpy().astype(dtype) / dtype.type(255)
    xt = ds.test.images.reshape(len(ds.test.images), -1).numpy().astype(dtype) / dtype.type(255)
    return x, ds.train.labels.numpy(), xt, ds.test.labels.numpy()


def mnistkit_logreg(spec: dict) -> dict:
    """The estimator's fit, timed like scikit-learn's in :func:`sklearn_logreg` (first call included)."""
    from mnistkit.estimators import LogisticRegression

    x, y, xt, yt = _mnist_pixels(spec)
    clf = LogisticRegression()
    t0 = time.perf_counter()
    clf.fit(x, y)
    fit_s = time.perf_counter() - t0
    acc = 100.0 * float((clf.predict(xt) == yt).mean())
    return {"accuracy": acc, "train_seconds": round(fit_s, 3), "n_iter": int(clf.n_iter_.max())}


def inference(spec: dict) -> dict:
    import torch

    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.data import load_dataset
    from mnistkit.inference import predict_logits
    from mnistkit.preprocess import Normalization

    ckpt = load_checkpoint(spec["checkpoint"])
    model, norm = ckpt.model, Normalization(**ckpt.meta["norm"])
    images = load_dataset("mnist", download=False).train.images  # 60,000 uint8 images
    bs = spec.get("batch_size", 1024)
    repeats = spec.get("repeats", 7)  # the median of 7 passes, with the fastest and slowest beside it

    def rates(bf16: bool) -> dict:
        predict_logits(model, images[:4096], norm, batch_size=bs, bf16=bf16)  # warm-up (allocator, oneDNN)
        per_pass = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predict_logits(model, images, norm, batch_size=bs, bf16=bf16)
            per_pass.append(len(images) / (time.perf_counter() - t0))
        return {
            "median": round(statistics.median(per_pass)),
            "min": round(min(per_pass)),
            "max": round(max(per_pass)),
        }

    fp32 = rates(False)
    result = {
        "images_per_second": fp32["median"],
        "images_per_second_min": fp32["min"],
        "images_per_second_max": fp32["max"],
        "batch_size": bs,
        "n": len(images),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }
    # The same call with bf16=True (`mnistkit evaluate/predict --bf16`): bf16 autocast where the
    # hardware has it, fp32 elsewhere.
    result["bf16_autocast_images_per_second"] = rates(True)["median"]
    return result


KINDS = {"sklearn-logreg": sklearn_logreg, "mnistkit-logreg": mnistkit_logreg, "inference": inference}


def main() -> None:
    kind, spec = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    result = KINDS[kind](spec)
    result["peak_rss_mb"] = _rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
