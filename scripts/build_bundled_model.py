"""Rebuild the bundled digit model (``make bundled-model``).

Trains with the recorded command (``mnistkit.bundled.TRAIN_COMMAND``) into a temporary run
directory, writes the model card into the checkpoint's metadata, and replaces
``src/mnistkit/bundled/digits-cnn.safetensors`` atomically (the previous file survives any
failure). Prints the card.

    python scripts/build_bundled_model.py                  # train (10-30 min on 2 CPU cores), package
    python scripts/build_bundled_model.py --from-run DIR   # package a finished run of the same recipe
    python scripts/build_bundled_model.py --from-run src/mnistkit/bundled/digits-cnn.safetensors \
        --photo-benchmark bench/results/photos.json        # refresh the card of the shipped file
    python scripts/build_bundled_model.py --from-run ... --novelty   # (re)fit the novelty model
    python scripts/build_bundled_model.py --from-run ... --choose-min-confidence   # the model's own threshold

``--novelty`` fits :mod:`mnistkit.novelty` (class means and shared covariance of the model's
pooled features, every stage) on the run's own training images, and sets its threshold on the digits the run
held out for validation (the same seeded split training used, so never seen by the weights nor by
the test split), photographed by bench/photos.py's generator with a seed the benchmark does not use.

``--choose-min-confidence`` instead gives the model its own ``--min-confidence`` default: the
highest at which the whole unsure rule flags at most :data:`~mnistkit.prediction.UNSURE_FLAG_RATE`
of the same photographed validation digits. It is meant for a model trained with ``--negatives``,
which is unsure of non-digits by itself and needs no novelty model: the shipped recipe is one
(``make bundled-model`` passes it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: config fields that say where and how a run executed, not what it learned
RUN_PLACE_FIELDS = ("out", "name", "device", "data_dir", "download")
NOTE = (
    "trained on CPU; torch kernels differ across machines and thread counts, so a rebuild gives close, "
    "not identical, weights"
)


def parse_args() -> argparse.Namespace:
    from mnistkit.unsure import UNSURE_FLAG_RATE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--from-run",
        type=Path,
        help="package this finished run directory (or checkpoint) of the recipe instead of training",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for training (default: torch's)")
    parser.add_argument(
        "--photo-benchmark",
        type=Path,
        default=None,
        help="bench/photos.py's results JSON for this model (its --out file)",
    )
    parser.add_argument("--target", type=Path, default=None, help="where to write (default: the package's file)")
    parser.add_argument(
        "--novelty",
        action="store_true",
        help="fit the novelty model (mnistkit.novelty) on the run's training split and threshold it on its "
        "photographed validation digits; without it, a novelty model already in the run is kept",
    )
    parser.add_argument(
        "--choose-min-confidence",
        action="store_true",
        help="store the model's own --min-confidence: the highest at which the unsure rule flags at most "
        f"{UNSURE_FLAG_RATE * 100:g} %% of its photographed validation digits (drops a novelty model)",
    )
    parser.add_argument(
        "--novelty-photos",
        type=int,
        default=5000,
        help="validation digits photographed for the threshold (default 5000: all the recipe holds out)",
    )
    parser.add_argument(
        "--note", action="append", default=None, help="a note for the card, instead of the CPU note (repeatable)"
    )
    args = parser.parse_args()
    if args.novelty and args.choose_min_confidence:
        parser.error("--novelty and --choose-min-confidence each spend the whole false-alarm budget: give one")
    return args


def with_unsure_rule(tensors: dict, meta: dict, checkpoint: Path, args: argparse.Namespace) -> dict:
    """``--novelty``: a freshly fitted novelty model; ``--choose-min-confidence``: the run's own
    threshold and no novelty model. Edits ``meta``; returns the tensors to package."""
    if args.novelty:
        novelty = fit_novelty(checkpoint, args.novelty_photos)
        tensors = {k: v for k, v in tensors.items() if not k.startswith("novelty.")} | novelty.to_tensors()
        meta["novelty"] = novelty.to_meta()
    if args.choose_min_confidence:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("novelty.")}
        meta.pop("novelty", None)
        meta["min_confidence"], meta["min_confidence_chosen"] = choose_threshold(checkpoint, args.novelty_photos)
    return tensors


def stage_package(run: Path, args: argparse.Namespace, folder: Path) -> Path:
    """The package file for ``run``, written in ``folder``: its unsure rule, a fresh card, checked to load
    and to fit :data:`mnistkit.bundled.MAX_BYTES`."""
    from mnistkit.bundled import MAX_BYTES, MODEL_FILE, TRAIN_COMMAND
    from mnistkit.card import card_from_metadata, parameter_count
    from mnistkit.checkpoint import load_checkpoint, load_tensors, resolve_checkpoint_path, save_tensors

    tensors, meta = load_tensors(resolve_checkpoint_path(run))
    check_recipe(meta)
    tensors = with_unsure_rule(tensors, meta, resolve_checkpoint_path(run), args)
    meta.pop("card", None)  # a repackaged card is written afresh
    # where the run happened to be written or read from is this machine's business, not the package's
    meta["config"] = {**meta["config"], "out": None, "data_dir": None}
    meta["card"] = card_from_metadata(
        meta,
        parameter_count(tensors),
        Path(MODEL_FILE).stem,
        TRAIN_COMMAND,
        photo_benchmark=photo_benchmark(args.photo_benchmark),
        notes=args.note or [NOTE],
    )
    staged = save_tensors(folder / MODEL_FILE, tensors, meta)
    size = staged.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"build_bundled_model: {size} bytes is over the {MAX_BYTES}-byte limit")
    load_checkpoint(staged)  # loads, digest verifies, the model rebuilds
    return staged


def main() -> int:
    sys.path.insert(0, str(REPO / "src"))
    args = parse_args()
    import mnistkit.bundled
    from mnistkit.bundled import MODEL_FILE, TRAIN_COMMAND
    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.errors import MnistkitError
    from mnistkit.fileio import atomic_write_bytes

    target = args.target or Path(mnistkit.bundled.__file__).with_name(MODEL_FILE)
    try:
        with tempfile.TemporaryDirectory(prefix="mnistkit-bundled-") as tmp:
            run = args.from_run or train(Path(tmp) / "run", TRAIN_COMMAND, args.threads)
            staged = stage_package(run, args, Path(tmp))
            atomic_write_bytes(target, staged.read_bytes())
            target.chmod(0o644)  # a package data file, readable by all (temp files are created 0600)
    except MnistkitError as exc:
        print(f"build_bundled_model: error: {exc}", file=sys.stderr)
        return 2
    card = load_checkpoint(target).meta["card"]
    print(f"wrote {target} ({target.stat().st_size} bytes)")
    print(json.dumps({k: v for k, v in card.items() if k != "config"}, indent=2))
    return 0


#: Photographs for the novelty threshold are drawn with this seed; bench/photos.py uses 0 by default.
NOVELTY_PHOTO_SEED = 12


def photographed_validation(ckpt, photos: int):
    """``photos`` of the run's validation digits (its own seeded split: never trained on, never the
    test split), photographed by bench/photos.py's generator with :data:`NOVELTY_PHOTO_SEED`, lighting
    in turn, and analysed as ``mnistkit predict`` does -> (training split, analyses, 28x28 digits, note)."""
    import numpy as np

    from mnistkit.data import load_dataset, split_validation
    from mnistkit.preprocess.image import analyze_image, load_image

    sys.path.insert(0, str(REPO / "bench"))
    from photos import LIGHTING, ink_layer, render_photo

    cfg = ckpt.meta["config"]
    train, val = split_validation(load_dataset(cfg["dataset"], download=False).train, cfg["val_size"], cfg["seed"])
    if val is None:
        raise SystemExit("build_bundled_model: choosing thresholds needs a run trained with a validation split")
    rng = np.random.default_rng(NOVELTY_PHOTO_SEED)
    pick = np.sort(rng.choice(len(val), min(photos, len(val)), replace=False))
    analyses = []
    for k, i in enumerate(pick):
        layer = ink_layer(val.images[i].numpy(), int(rng.integers(60, 141)), rng, rotate=True)
        analyses.append(analyze_image(load_image(render_photo([layer], rng, LIGHTING[k % len(LIGHTING)]))))
    note = (
        f"{len(pick)} of the {len(val)} validation digits (seed {cfg['seed']}), photographed by bench/photos.py's "
        f"generator (seed {NOVELTY_PHOTO_SEED}, lighting in turn)"
    )
    return train, analyses, np.stack([a.digit for a in analyses]), note


def choose_threshold(checkpoint: Path, photos: int) -> tuple[float, str]:
    """The run's own ``--min-confidence`` (:func:`mnistkit.prediction.choose_min_confidence` on its
    photographed validation digits), and how it was chosen, for the card."""
    import numpy as np

    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.prediction import probabilities
    from mnistkit.unsure import UNSURE_FLAG_RATE, choose_min_confidence, unsure_reason

    ckpt = load_checkpoint(checkpoint)
    _, analyses, digits, note = photographed_validation(ckpt, photos)
    proba = probabilities(ckpt, digits)
    otherwise = np.array([unsure_reason(a, p, 0.0) is not None for a, p in zip(analyses, proba)])
    chosen = choose_min_confidence(proba.max(1), otherwise, UNSURE_FLAG_RATE)
    return chosen, f"the highest at which the unsure rule flags at most {UNSURE_FLAG_RATE:.1%} of {note}"


def fit_novelty(checkpoint: Path, photos: int):
    """The novelty model of a run: fitted on its training split's features; its threshold the lowest
    at which the whole unsure rule flags at most :data:`~mnistkit.novelty.DEFAULT_FLAG_RATE` of
    ``photos`` of its validation digits, photographed (lighting in turn)."""
    import torch

    from mnistkit.checkpoint import load_checkpoint
    from mnistkit.novelty import DEFAULT_FLAG_RATE, FEATURE, FEATURES, NoveltyModel, embed_images
    from mnistkit.prediction import probabilities
    from mnistkit.unsure import DEFAULT_MIN_CONFIDENCE, unsure_reason

    ckpt = load_checkpoint(checkpoint)
    train, analyses, digits, note = photographed_validation(ckpt, photos)
    features = embed_images(ckpt.model, train.images, ckpt.norm, FEATURE)
    fit = NoveltyModel.fit(features, train.labels, feature=FEATURE).stored()
    unsure = [
        unsure_reason(a, p, DEFAULT_MIN_CONFIDENCE) is not None for a, p in zip(analyses, probabilities(ckpt, digits))
    ]
    distances = fit.distance(embed_images(ckpt.model, torch.from_numpy(digits), ckpt.norm, FEATURE))
    return fit.with_flag_rate(
        distances,
        unsure,
        DEFAULT_FLAG_RATE,
        feature_is=f"{FEATURE}: every convolutional stage's feature maps averaged over space, concatenated "
        f"(SmallCNN.{FEATURES[FEATURE]})",
        fit_data=f"{ckpt.meta['config']['dataset']} training split less the validation images ({len(train)} images)",
        threshold_data=f"{note}; the threshold is the lowest at which the whole unsure rule "
        f"(--min-confidence {DEFAULT_MIN_CONFIDENCE:g}) flags at most {DEFAULT_FLAG_RATE:.1%} of them",
    )


def train(run: Path, command: str, threads: int | None) -> Path:
    """Run the recorded command (the console script's own module) with ``--out run``."""
    argv = [sys.executable, "-m", *shlex.split(command), "--out", str(run), "-q"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print("$", command, "--out", run, flush=True)
    subprocess.run(argv, check=True, env=env)
    return run


def photo_benchmark(path: Path | None) -> dict:
    """The card's photo-benchmark field: from bench/photos.py's results file, or unmeasured with a note."""
    if path is None:
        return {
            "accuracy": None,
            "note": "not measured when this file was built: run bench/photos.py (issue 12 "
            "part 2) on the bundled model, then this script with --from-run on the shipped file and "
            "--photo-benchmark",
        }
    return photo_benchmark_summary(json.loads(path.read_text()))


def photo_benchmark_summary(result: dict) -> dict:
    """The card's view of a bench/photos.py result: accuracy per condition, the mean over the photo
    conditions (``accuracy``), and the share of numbers read exactly."""
    conditions = {name: c.get("accuracy") for name, c in (result.get("conditions") or {}).items()}
    photos = [a for name, a in conditions.items() if name.startswith("photo-") and isinstance(a, (int, float))]
    return {
        "accuracy": round(sum(photos) / len(photos), 2) if photos else result.get("accuracy"),
        "accuracy_is": "mean over the photo-* lighting conditions",
        "conditions": conditions,
        "numbers_read_exactly_percent": (result.get("numbers") or {}).get("read_exactly_percent"),
        "digits_per_condition": result.get("n"),
        "seed": result.get("seed"),
        "source": "bench/photos.py",
    }


def check_recipe(meta: dict, preset: str | None = None) -> None:
    """The run was trained with exactly the recipe the card will name (``preset``, default the digit
    model's), apart from where it ran."""
    from mnistkit.bundled import PRESET
    from mnistkit.config import resolve_config
    from mnistkit.errors import ConfigError

    preset = preset or PRESET
    got = {k: v for k, v in (meta.get("config") or {}).items() if k not in RUN_PLACE_FIELDS}
    want = {k: v for k, v in resolve_config(preset).to_dict().items() if k not in RUN_PLACE_FIELDS}
    # an option added after the run was trained is absent from its config: it ran as the default did
    defaults = resolve_config().to_dict()
    diff = sorted(k for k in want if got.get(k, defaults[k]) != want[k])
    if diff:
        raise ConfigError(f"the run was not trained with --preset {preset}: it differs in {', '.join(diff)}")


if __name__ == "__main__":
    sys.exit(main())
