"""Where the fixed cost of a `mnistkit train` process goes: imports, the first optimiser, plots.

Each step runs in a fresh process (imports are cached within one) at one torch thread and
reports CPU seconds, the steadier figure on a shared machine, and wall seconds. Writes
``results/startup-<host>-<date>.json``.

    python bench/startup.py
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent

#: step -> (setup code, timed code); the setup's imports are not counted
STEPS = {
    "python": ("", "pass"),
    "import mnistkit.cli (what `--help` loads)": ("", "import mnistkit.cli"),
    "import torch": ("", "import torch"),
    "first torch.optim.Adam() (imports torch._dynamo)": (
        "import torch; m = torch.nn.Linear(4, 2)",
        "torch.optim.Adam(m.parameters())",
    ),
    "import matplotlib (Agg figure)": ("", "import matplotlib.figure, matplotlib.backends.backend_agg"),
    "a run's plots (curves, confusion, 36 mistakes)": (
        "import numpy as np, tempfile; from mnistkit.plots import save_run_plots; import matplotlib.figure\n"
        "rng = np.random.default_rng(0)\n"
        "metrics = [dict(epoch=e, train_loss=1 / e, train_accuracy=90 + e, lr=1e-3) for e in range(1, 11)]\n"
        "conf = rng.integers(0, 50, (10, 10)) + np.eye(10, dtype=int) * 900\n"
        "k = 36; mistakes = dict(images=rng.integers(0, 255, (k, 28, 28), dtype=np.uint8),\n"
        "    true=np.arange(k) % 10, pred=(np.arange(k) + 1) % 10, prob=rng.random(k))\n"
        "out = tempfile.mkdtemp()",
        "save_run_plots(out, metrics=metrics, confusion=conf, class_names=[str(i) for i in range(10)], "
        "mistakes=mistakes, weights=None)",
    ),
}

CHILD = """
import json, sys, time
{setup}
c0, w0 = time.process_time(), time.perf_counter()
{timed}
print(json.dumps({{"cpu_seconds": time.process_time() - c0, "wall_seconds": time.perf_counter() - w0}}))
"""


def measure(setup: str, timed: str, env: dict, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(setup=setup, timed=timed)], env=env, capture_output=True, text=True
        )
        if out.returncode:
            return {"error": out.stderr.strip().splitlines()[-1]}
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["cpu_seconds"])
    mid = runs[len(runs) // 2]
    return {k: round(v, 3) for k, v in mid.items()} | {"repeats": repeats}


def main() -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH.parent / "src"), env.get("PYTHONPATH")]))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    steps = {name: measure(setup, timed, env, repeats=3) for name, (setup, timed) in STEPS.items()}
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "host": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "median of 3 fresh processes per step (by CPU seconds), 1 torch thread",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "children_cpu_seconds": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 2),
        "seconds": round(time.perf_counter() - t0, 1),
        "steps": steps,
    }
    for name, r in steps.items():
        print(f"{name:55s} " + (r.get("error") or f"{r['cpu_seconds']:.2f} s CPU, {r['wall_seconds']:.2f} s wall"))
    path = BENCH / "results" / f"startup-{result['host']}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
