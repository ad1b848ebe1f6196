"""How much the tutorial recipe's test accuracy moves from seed to seed, in both pipelines.

The issue asks for the tutorial's 97.88 % within 0.3 points as a mean of 3 seeds. One seed of
this recipe (sigmoid MLP, Adam 1e-3 at a constant rate, accuracy read after the last step)
lands anywhere in about 97.0-97.9 %, so a 3-seed mean says little about whether mnistkit
trains the recipe as well as the tutorial does. This script answers that directly: for the
same seeds, alternating, it runs the tutorial's own pipeline (``seed_pipeline.py``) with its
double normalisation fixed (``--no-double-normalise``: the recipe as meant, not its bug)
and ``mnistkit train`` with the recipe, and prints both distributions side by side.

    python bench/recipe_seeds.py              # seeds 0-9, about 12 minutes on 2 cores
    python bench/recipe_seeds.py --seeds 4

Writes ``bench/results/recipe-seeds-<host>-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BENCH, PY, RESULTS, TUTORIAL_ACCURACY, run_child, run_train


def describe(accs: list[float]) -> dict:
    """Mean, spread and the 3-seed means of consecutive seed triples (what the goal reads)."""
    triples = [round(statistics.fmean(accs[i : i + 3]), 3) for i in range(0, len(accs) - 2, 3)]
    return {
        "accuracies": accs,
        "mean": round(statistics.fmean(accs), 3),
        "sd": round(statistics.stdev(accs), 3) if len(accs) > 1 else 0.0,
        "min": min(accs),
        "max": max(accs),
        "means_of_seed_triples": triples,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default: 10)")
    p.add_argument(
        "--data-dir", default=os.environ.get("MNISTKIT_DATA"), help="root holding MNIST/raw (default: $MNISTKIT_DATA)"
    )
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("give --data-dir or set MNISTKIT_DATA")
    env = dict(os.environ, MNISTKIT_DATA=args.data_dir, PYTHONUNBUFFERED="1")
    tutorial, mnistkit = [], []
    with tempfile.TemporaryDirectory(prefix="mnistkit-seeds-") as tmp:
        for s in range(args.seeds):
            r = run_child(
                [
                    PY,
                    str(BENCH / "seed_pipeline.py"),
                    "--quiet",
                    "--no-double-normalise",
                    "--seed",
                    str(s),
                    "--data-dir",
                    args.data_dir,
                ],
                env,
            )
            tutorial.append(r)
            m = run_train(["--device", "cpu"], s, Path(tmp), "recipe", env)
            mnistkit.append(m)
            print(
                f"seed {s}: tutorial pipeline {r.get('accuracy', r.get('error'))} %, "
                f"mnistkit {m.get('accuracy', m.get('error'))} %",
                flush=True,
            )
    failed = [r["error"] for r in tutorial + mnistkit if "error" in r]
    if failed:
        print("failed runs:", *failed, sep="\n  ", file=sys.stderr)
        return 1
    result = {
        "host": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "goal": f"mean of 3 seeds >= {TUTORIAL_ACCURACY - 0.3}",
        "tutorial_pipeline_single_normalisation": describe([r["accuracy"] for r in tutorial]),
        "mnistkit_tutorial_recipe": describe([r["accuracy"] for r in mnistkit]),
        "train_seconds_mean": {
            "tutorial_pipeline": round(statistics.fmean(r["train_seconds"] for r in tutorial), 2),
            "mnistkit": round(statistics.fmean(r["train_seconds"] for r in mnistkit), 2),
        },
    }
    for name in ("tutorial_pipeline_single_normalisation", "mnistkit_tutorial_recipe"):
        d = result[name]
        print(
            f"{name}: mean {d['mean']:.2f} ± {d['sd']:.2f} over {args.seeds} seeds "
            f"(min {d['min']}, max {d['max']}); 3-seed means {d['means_of_seed_triples']}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"recipe-seeds-{socket.gethostname()}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
