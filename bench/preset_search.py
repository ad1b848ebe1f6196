"""Record preset-search trials: `mnistkit train` runs scored on a validation split, one JSON file.

Presets are chosen on validation accuracy (``--val-size``), never on the test set; the test
accuracy is recorded too, for the record only. Each trial runs in its own process (so its peak
RSS and CPU seconds are its own) and appends a record to ``--log``: the command, the seed, val
and test accuracy, train seconds, the process's wall and CPU seconds, and the load average
before and after (the machine may be shared: CPU seconds at ``--threads 1`` are the steadier
figure for the time a run needs).

    python bench/preset_search.py --log bench/results/presets-search-DATE.json --tag fast-cnn-a \\
        --seeds 0,1 --threads 1 -- --preset fast-cnn --val-size 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BENCH, run_child, train_cmd


def trial(train_args: list[str], seed: int, env: dict) -> dict:
    """One training run; its JSON summary reduced to what a search compares."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mnistkit-search-") as tmp:
        r = run_child(train_cmd([*train_args, "--device", "cpu"], seed, Path(tmp), "trial"), env, timeout=1800)
    keep = ("val_accuracy", "test_accuracy", "train_seconds", "wall_seconds", "cpu_seconds", "peak_rss_mb", "error")
    return {
        "seed": seed,
        **{k: r[k] for k in keep if k in r},
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def append(path: Path, record: dict) -> None:
    """Add ``record`` to the log, read just before writing (another search may have added to it
    while this trial ran), and replace the file atomically."""
    log = json.loads(path.read_text()) if path.exists() else {"trials": []}
    log["trials"].append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", type=Path, required=True, help="the JSON file to append trials to")
    p.add_argument("--tag", required=True, help="a name for this configuration")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS); default 1")
    p.add_argument("--note", default="", help="why this trial (free text)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then `mnistkit train` options")
    args = p.parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH.parent / "src"), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for seed in (int(s) for s in args.seeds.split(",")):
        record = {
            "tag": args.tag,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": ["mnistkit", "train", *train_args, "--seed", str(seed)],
            "threads": args.threads,
            "note": args.note,
            **trial(train_args, seed, env),
        }
        print(json.dumps(record), flush=True)
        append(args.log, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
