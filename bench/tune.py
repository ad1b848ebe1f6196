"""Is tuning worth it? ``mnistkit tune --model mlp`` on a time budget beside the ``best-mlp`` preset.

In one run, on this machine: a study with the MLP family's default search space (no
augmentation) gets ``--budget`` seconds (no new trial starts after it; the running one
finishes), then the hand-tuned ``best-mlp`` preset trains on the same 10,000-image validation
split. Both report validation accuracy (what tuning optimises) and test accuracy (scored once,
for the best trial and for the preset). Goal from the issue: the tuned MLP reaches >= 98.8 %
test accuracy within 15 minutes, above the preset.

    python bench/tune.py                  # 15-minute budget (make bench-tune)
    python bench/tune.py --quick          # the same pipeline on mnist-sample, 2-minute budget: does it all work?

Writes ``bench/results/tune-<host>-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PY, RESULTS, run_child

GOAL_TEST_ACCURACY = 98.8  # % for the best tuned MLP, no augmentation
VAL_SIZE = 10_000  # images carved from the training set, the same for both


LOAD_BEFORE = list(os.getloadavg())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=None, help="seconds for the study (default: 900; quick: 120)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="mnist-sample (4,000 train images, 1,000 for validation): checks the pipeline, "
        "its figures are not MNIST's",
    )
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1)")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument(
        "--data-dir", default=os.environ.get("MNISTKIT_DATA"), help="root holding MNIST/raw (default: $MNISTKIT_DATA)"
    )
    args = p.parse_args(argv)
    args.budget = args.budget or (120.0 if args.quick else 900.0)
    if not args.data_dir and not args.quick:
        p.error("give --data-dir or set MNISTKIT_DATA")
    return args


def common_options(args: argparse.Namespace) -> list[str]:
    """The data and device options the study and the preset run share."""
    if args.quick:
        common = ["--dataset", "mnist-sample", "--val-size", "1000"]
    else:
        common = ["--dataset", "mnist", "--data-dir", args.data_dir, "--no-download", "--val-size", str(VAL_SIZE)]
    return [*common, "--device", "cpu", "--json"]


def run_study_and_preset(args: argparse.Namespace, common: list[str], env: dict) -> tuple[dict, dict, float]:
    """``mnistkit tune`` on the budget, then ``train --preset best-mlp``: (tune's JSON, the preset's, tune's wall s)."""
    with tempfile.TemporaryDirectory(prefix="mnistkit-bench-tune-") as tmp:
        t0 = time.perf_counter()
        tune = ["tune", "--model", "mlp", "--norm", "dataset", "--trials", "1000", "--timeout", str(args.budget)]
        tune += ["--workers", str(args.workers), "--sampler-seed", str(args.sampler_seed)]
        tuned = run_child(
            [PY, "-m", "mnistkit", *tune, "--out", str(Path(tmp) / "tune"), *common],
            env,
            timeout=args.budget * 2 + 600,
        )
        tune_wall = round(time.perf_counter() - t0, 1)
        preset = run_child(
            [PY, "-m", "mnistkit", "train", "--preset", "best-mlp", "--out", str(Path(tmp) / "preset"), *common], env
        )
    return tuned, preset, tune_wall


def result_record(args: argparse.Namespace, tuned: dict, preset: dict, tune_wall: float) -> dict:
    """The results file's content: both rows, the machine's load and whether the goal was met."""
    best = tuned["best"] or {}
    rows = {
        "tuned": {
            "val_accuracy": best.get("val_accuracy"),
            "test_accuracy": best.get("test_accuracy"),
            "trial": best.get("number"),
            "params": best.get("params"),
            "counts": tuned["counts"],
            "wall_seconds": tune_wall,
            "budget_seconds": args.budget,
            "peak_rss_mb": tuned.get("peak_rss_mb"),
        },
        "best-mlp preset": {
            "val_accuracy": preset.get("val_accuracy"),
            "test_accuracy": preset.get("test_accuracy"),
            "train_seconds": preset.get("train_seconds"),
        },
    }
    return {
        "host": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_before": LOAD_BEFORE,
        "load_after": list(os.getloadavg()),
        "quick": args.quick,
        "dataset": "mnist-sample" if args.quick else "mnist",
        "budget_seconds": args.budget,
        "workers": args.workers,
        "goal_test_accuracy": GOAL_TEST_ACCURACY,
        "rows": rows,
        "met": (best.get("test_accuracy") or 0) >= GOAL_TEST_ACCURACY
        and (best.get("test_accuracy") or 0) > (preset.get("test_accuracy") or 0),
    }


def print_summary(result: dict, quick: bool) -> None:
    rows, tuned = result["rows"], result["rows"]["tuned"]
    print(f"{'':18} {'val acc %':>10} {'test acc %':>11}")
    for name, row in rows.items():
        print(f"{name:18} {row['val_accuracy'] or float('nan'):10.2f} {row['test_accuracy'] or float('nan'):11.2f}")
    c = tuned["counts"]
    print(
        f"study: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed in "
        f"{tuned['wall_seconds']:.0f} s (budget {result['budget_seconds']:.0f} s); best trial {tuned['trial']}: "
        f"{tuned['params']}"
    )
    print(
        f"goal: tuned test >= {GOAL_TEST_ACCURACY} % and above the preset: {'met' if result['met'] else 'NOT met'}"
        + (" (quick run on mnist-sample: the goal is for MNIST)" if quick else "")
    )
    print(
        f"load average {LOAD_BEFORE[0]:.1f} before, {result['load_after'][0]:.1f} after (2 cores: above 2 is a shared machine)"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"MNISTKIT_DATA": args.data_dir} if args.data_dir else {}))
    tuned, preset, tune_wall = run_study_and_preset(args, common_options(args), env)
    if "error" in tuned or "error" in preset:
        print(f"failed: tune: {tuned.get('error')}; preset: {preset.get('error')}", file=sys.stderr)
        return 1
    result = result_record(args, tuned, preset, tune_wall)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tune{'-quick' if args.quick else ''}-{result['host']}-{datetime.now():%Y%m%d-%H%M}.json"
    path.write_text(json.dumps(result, indent=2))
    print_summary(result, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
