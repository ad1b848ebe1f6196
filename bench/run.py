"""The benchmark: mnistkit against the tutorial's pipeline and scikit-learn, in one run.

Every configuration runs in its own subprocess (so its peak RSS is its own, read with
``os.wait4``); configurations that are compared by a time ratio run in alternation,
seed by seed, so machine load hits both alike. Prints a Markdown table and writes
``bench/results/<host>-<date>.json``, which ``bench/readme_table.py`` turns into the
README's table.

    python bench/run.py            # the full benchmark (`make bench`, about 25 min on 2 quiet cores)
    python bench/run.py --quick    # a subset (`make bench-quick`, < 4 min): fewer seeds and epochs
    python bench/run.py --threads 1   # torch intra-op threads in every child (default: torch's own)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from results_table import markdown

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PY = sys.executable

# Goals from the issues; units in the names. Time goals hold on the median run.
TUTORIAL_ACCURACY = 97.88  # % the tutorial reports for its recipe
GOAL_TUTORIAL_RATIO = 0.25  # mnistkit's whole process / the seed pipeline's whole process, same epochs
GOAL_LOGREG_RATIO = 0.1  # mnistkit logreg fit time / scikit-learn's
GOAL_IMAGES_PER_SECOND = 200_000
GOAL_RSS_MB = 1024.0
#: preset -> (mean test accuracy %, median train seconds or None); issue 16's goals
PRESET_GOALS: dict[str, tuple[float, float | None]] = {
    "fast": (98.0, 1.0),
    "fast-cnn": (99.0, 8.0),
    "best-mlp": (98.95, 60.0),
    "cnn": (99.6, 90.0),
    "fashion-cnn": (94.0, 180.0),
}
#: a 1-minute load average above this many runnable tasks per core makes the figures unreliable
MAX_LOAD_PER_CORE = 0.5


# ----------------------------------------------------------------------------- running children


def run_child(cmd: list[str], env: dict, timeout: float = 900) -> dict:
    """Run ``cmd``; return its last stdout line parsed as JSON plus wall seconds and peak RSS (MB)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - t0
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_seconds": round(wall, 2)}
    result = json.loads(lines[-1])
    result["wall_seconds"] = round(wall, 2)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    # CPU seconds of the whole process (start-up included): less sensitive to other jobs than wall time
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    return result


def train_cmd(args: list[str], seed: int, out_root: Path, tag: str) -> list[str]:
    out = out_root / f"{tag}-s{seed}"
    return [PY, "-m", "mnistkit", "train", *args, "--seed", str(seed), "--out", str(out), "--json", "--quiet"]


def run_train(args, seed, out_root, tag, env) -> dict:
    r = run_child(train_cmd(args, seed, out_root, tag), env)
    if "error" not in r:
        r["accuracy"] = r.get("test_accuracy")
    return r


# ----------------------------------------------------------------------------- rows


def spread(values: list[float], digits: int = 3) -> dict:
    """Median, min and max: what a noisy machine's figures need (a mean hides one slow run)."""
    if not values:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def summarise(name: str, runs: list[dict], goal: str = "", **extra) -> dict:
    ok = [r for r in runs if "error" not in r]
    accs = [r["accuracy"] for r in ok if r.get("accuracy") is not None]
    secs = [r["train_seconds"] for r in ok if r.get("train_seconds") is not None]
    walls = [r["wall_seconds"] for r in ok if r.get("wall_seconds") is not None]
    row = {
        "name": name,
        "seeds": len(runs),
        "runs": runs,
        "goal": goal,
        "errors": [r["error"] for r in runs if "error" in r],
        "accuracy_mean": round(statistics.fmean(accs), 3) if accs else None,
        "accuracy_sd": round(statistics.stdev(accs), 3) if len(accs) > 1 else (0.0 if accs else None),
        "accuracy_min": min(accs) if accs else None,
        "accuracy_max": max(accs) if accs else None,
        "train_seconds_mean": round(statistics.fmean(secs), 3) if secs else None,
        "train_seconds": spread(secs),
        "wall_seconds": spread(walls, 2),
        "cpu_seconds": spread([r["cpu_seconds"] for r in ok if r.get("cpu_seconds") is not None], 2),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in ok if "peak_rss_mb" in r), default=None),
    }
    row.update(extra)
    return row


def median_of(row: dict, what: str = "train_seconds") -> float | None:
    """A row's median ``train_seconds`` or ``wall_seconds`` (falls back on the mean of older rows)."""
    value = row.get(what)
    if isinstance(value, dict):
        return value.get("median")
    return row.get(f"{what}_mean")


def ratio(row: dict, ref: dict, what: str = "train_seconds") -> float | None:
    a, b = median_of(row, what), median_of(ref, what)
    return round(a / b, 4) if a and b else None


def count_met(row: dict, run_ok) -> None:
    """Set ``met_runs`` to "k/n": how many of the row's runs met the goal on their own."""
    row["met_runs"] = f"{sum(1 for r in row['runs'] if 'error' not in r and run_ok(r))}/{len(row['runs'])}"


def bench_tutorial(plan, out_root, env, data_dir, log) -> tuple[dict, dict]:
    """The seed pipeline and `mnistkit train` with the tutorial's recipe, alternating seed by seed.

    The goal compares the two whole processes (start-up, data, training, evaluation, files):
    what a user waits for. The train-seconds ratio is kept beside it, for information.
    """
    seed_runs, mk_runs = [], []
    for s in range(plan["tutorial_seeds"]):
        if s < plan["seed_pipeline_seeds"]:  # the slow reference: fewer seeds, still alternating
            log(f"seed pipeline, seed {s}, {plan['epochs']} epochs")
            cmd = [PY, str(BENCH / "seed_pipeline.py"), "--quiet", "--seed", str(s)]
            cmd += ["--epochs", str(plan["epochs"]), "--data-dir", str(data_dir)]
            seed_runs.append(run_child(cmd, env))
        log(f"mnistkit train (tutorial recipe), seed {s}")
        mk_runs.append(run_train(["--epochs", str(plan["epochs"]), "--device", "cpu"], s, out_root, "tutorial", env))
    e = plan["epochs"]
    ref = summarise(
        f"tutorial's pipeline (seed_pipeline.py, {e} epochs, double normalisation)", seed_runs, "reference", key="seed"
    )
    mk = summarise(
        f"`mnistkit train` (tutorial recipe: seed-mlp, Adam 1e-3, batch 64, {e} epochs)",
        mk_runs,
        f"acc >= {TUTORIAL_ACCURACY - 0.3} (10 epochs), whole process <= {GOAL_TUTORIAL_RATIO}x the "
        f"seed pipeline's, RSS <= {GOAL_RSS_MB:.0f} MB",
        key="tutorial",
    )
    mk["ratio"] = ratio(mk, ref, "wall_seconds")  # the goal: whole process against whole process
    mk["ratio_train_seconds"] = ratio(mk, ref)
    ref_wall = median_of(ref, "wall_seconds")
    count_met(mk, lambda r: bool(ref_wall) and r["wall_seconds"] / ref_wall <= GOAL_TUTORIAL_RATIO)
    mk["met"] = (
        mk["ratio"] is not None
        and mk["ratio"] <= GOAL_TUTORIAL_RATIO
        and (mk["peak_rss_mb"] or 1e9) <= GOAL_RSS_MB
        and (e < 10 or (mk["accuracy_mean"] or 0) >= TUTORIAL_ACCURACY - 0.3)
    )
    return ref, mk


def bench_preset(name, seeds, out_root, env, log, goal_acc, goal_s, dataset="mnist") -> dict:
    """``seeds`` runs of ``--preset name``; the goal: mean accuracy and the median run's train seconds."""
    extra = [] if dataset == "mnist" else ["--dataset", dataset]
    runs = []
    for s in range(seeds):
        log(f"preset {name} on {dataset}, seed {s}")
        runs.append(run_train(["--preset", name, "--device", "cpu", *extra], s, out_root, f"{dataset}-{name}", env))
    on = "" if dataset == "mnist" else f" on {dataset}"
    key = name if dataset == "mnist" else f"{dataset}:{name}"
    if goal_acc is None:  # shown for information
        return summarise(f"`--preset {name}`{on}", runs, "for information", key=key)
    goal = f"acc >= {goal_acc}" + (f", <= {goal_s:g} s" if goal_s else "")
    row = summarise(f"`--preset {name}`{on}", runs, goal, key=key)
    median_s = median_of(row)
    row["met"] = (row["accuracy_mean"] or 0) >= goal_acc and (goal_s is None or (median_s or 1e9) <= goal_s)
    if goal_s is not None:  # accuracy is a mean over seeds; per run, the time goal is what can be met
        count_met(row, lambda r: r["train_seconds"] <= goal_s)
    else:
        count_met(row, lambda r: r["accuracy"] >= goal_acc)
    return row


def bench_logreg(plan, out_root, env, log) -> tuple[dict, dict, dict]:
    """scikit-learn's ``LogisticRegression()``, mnistkit's estimator and ``mnistkit train --model logreg``,
    each fit in a process of its own (so each row's peak RSS is its own), in alternation repeat by repeat.

    The estimator and scikit-learn fit pixels / 255 as float32 with C=1; the CLI fits the same problem
    by the same L-BFGS (its train seconds: the whole fit, CSR set-up included).
    """
    goal = f"acc >= scikit-learn's - 0.2, <= {GOAL_LOGREG_RATIO}x its fit time"
    spec = json.dumps({"dtype": "float32"})
    runs: dict[str, list[dict]] = {"sk": [], "est": [], "cli": []}
    for s in range(plan["logreg_repeats"]):
        log(f"logistic regression, repeat {s}: scikit-learn, the estimator, mnistkit train --model logreg")
        runs["sk"].append(run_child([PY, str(BENCH / "worker.py"), "sklearn-logreg", spec], env))
        runs["est"].append(run_child([PY, str(BENCH / "worker.py"), "mnistkit-logreg", spec], env))
        runs["cli"].append(run_train(["--model", "logreg", "--device", "cpu"], s, out_root, "logreg", env))
    sk = summarise(
        "scikit-learn `LogisticRegression()` (lbfgs, C=1, max_iter=100)", runs["sk"], "reference", key="sklearn-logreg"
    )
    est = summarise("`mnistkit.estimators.LogisticRegression()`", runs["est"], goal, key="logreg-estimator")
    cli = summarise("`mnistkit train --model logreg` (L-BFGS)", runs["cli"], goal, key="logreg")
    limit = GOAL_LOGREG_RATIO * (median_of(sk) or 0)  # seconds a run may take to meet the goal on its own
    for row in (est, cli):
        row["ratio"] = ratio(row, sk)  # median train seconds against scikit-learn's median fit
        row["met"] = (
            row["ratio"] is not None
            and row["ratio"] <= GOAL_LOGREG_RATIO
            and (row["accuracy_mean"] or 0) >= (sk["accuracy_mean"] or 100) - 0.2
        )
        count_met(row, lambda r: r["train_seconds"] <= limit)
    return sk, est, cli


def bench_inference(checkpoint: Path, env, log) -> dict:
    log("inference throughput (predict_logits, batch 1024)")
    r = run_child([PY, str(BENCH / "worker.py"), "inference", json.dumps({"checkpoint": str(checkpoint)})], env)
    row = summarise(
        "seed-mlp inference, `predict_logits`, batch 1,024",
        [r],
        f">= {GOAL_IMAGES_PER_SECOND:,} images/s (median pass)",
        key="inference",
    )
    for k in ("images_per_second", "images_per_second_min", "images_per_second_max", "repeats"):
        row[k] = r.get(k)
    row["bf16_autocast_images_per_second"] = r.get("bf16_autocast_images_per_second")
    row["met"] = (row["images_per_second"] or 0) >= GOAL_IMAGES_PER_SECOND
    return row


def with_load(rows: dict | tuple | list) -> list[dict]:
    """The rows, stamped with the load average after them (the next row's 'before')."""
    rows = [rows] if isinstance(rows, dict) else list(rows)
    for r in rows:
        r["load_after"] = round(os.getloadavg()[0], 2)
    return rows


def check_load(force: bool) -> tuple[bool, str]:
    """(may start, message): a busy machine gives figures that say more about its other jobs."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= MAX_LOAD_PER_CORE * cores:
        return True, ""
    msg = (
        f"load average {load:.1f} on {cores} cores (over {MAX_LOAD_PER_CORE} per core): other jobs would "
        f"inflate the timings"
    )
    if force:
        return True, f"warning: {msg}; going on (--force), and the table will say so"
    return False, f"{msg}; wait for a quiet machine, or add --force (the table then says so)"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a subset under 4 minutes (default: the full run)")
    p.add_argument("--force", action="store_true", help="start even when the load average says the machine is busy")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each child; 0 = torch's default")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated row keys to run: tutorial,fast,fast-cnn,best-mlp,cnn,fashion-cnn,fashion,"
        "logreg,inference (default: all)",
    )
    p.add_argument("--seeds", type=int, default=0, help="runs per row, overriding the plan (default: 0 = plan's)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    return p.parse_args(argv)


#: The plan's keys that count runs per row (``--seeds`` sets them all).
SEED_KEYS = ("tutorial_seeds", "seed_pipeline_seeds", "fast_seeds", "fast-cnn_seeds", "preset_seeds", "logreg_repeats")


def make_plan(quick: bool, seeds: int) -> dict:
    """Seeds per row (the table's "runs" column says how many ran); quick: fewer seeds, 2-epoch tutorial rows."""
    plan = (
        {
            "epochs": 2,
            "tutorial_seeds": 1,
            "seed_pipeline_seeds": 1,
            "fast_seeds": 2,
            "fast-cnn_seeds": 1,
            "preset_seeds": 1,
            "logreg_repeats": 1,
            "presets": ["fast", "fast-cnn"],
            "fashion": [],
        }
        if quick
        else {
            "epochs": 10,
            "tutorial_seeds": 3,
            "seed_pipeline_seeds": 2,
            "fast_seeds": 5,
            "fast-cnn_seeds": 5,
            "preset_seeds": 3,
            "logreg_repeats": 3,
            "presets": ["fast", "fast-cnn", "best-mlp", "cnn"],
            # Fashion-MNIST: the fashion-cnn preset against its goal, fast and cnn for information (1 seed)
            "fashion": ["fashion-cnn", "fast", "cnn"],
        }
    )
    if seeds:
        plan.update(dict.fromkeys(SEED_KEYS, seeds))
    return plan


def child_environment(threads: int) -> dict:
    """The children's environment: this checkout's ``src`` first on the path, ``threads`` torch threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH.parent / "src"), env.get("PYTHONPATH")]))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_metadata(args: argparse.Namespace, plan: dict, forced: bool) -> dict:
    """Where and how the benchmark ran: machine, versions, load, plan."""
    import torch

    return {
        "host": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "load_before": list(os.getloadavg()),
        "forced": forced,
        "epochs": plan["epochs"],
        "plan": plan,
    }


def fashion_rows(plan: dict, want, out_root: Path, env: dict, log) -> list[dict]:
    """The Fashion-MNIST rows: the fashion-cnn preset against its goal, others for information."""
    from mnistkit.data import dataset_info

    rows: list[dict] = []
    for name in plan.get("fashion", []):
        if not (want("fashion") or (name.startswith("fashion") and want(name))):
            continue
        if not dataset_info("fashion-mnist")["found"]:
            rows.append(
                {
                    "name": f"`--preset {name}` on fashion-mnist",
                    "key": f"fashion-mnist:{name}",
                    "skipped": "Fashion-MNIST not found (apt-get install dataset-fashion-mnist)",
                }
            )
            continue
        goal_acc, goal_s = PRESET_GOALS[name] if name.startswith("fashion") else (None, None)
        seeds = plan["preset_seeds"] if goal_acc else 1
        rows += with_load(bench_preset(name, seeds, out_root, env, log, goal_acc, goal_s, "fashion-mnist"))
    return rows


def gpu_rows(plan: dict, device: str, out_root: Path, env: dict, log) -> list[dict]:
    """The tutorial recipe and the fast preset on CUDA, or one row saying there is no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return [{"name": "GPU rows (tutorial recipe, fast preset on CUDA)", "key": "gpu", "skipped": "no CUDA device"}]
    log("GPU rows: tutorial recipe and fast preset on CUDA")
    g = [run_train(["--device", "cuda", "--epochs", str(plan["epochs"])], 0, out_root, "gpu-tutorial", env)]
    rows = [summarise(f"`mnistkit train` on {device} (tutorial recipe)", g, "", key="gpu-tutorial")]
    g = [run_train(["--preset", "fast", "--device", "cuda"], 0, out_root, "gpu-fast", env)]
    rows.append(summarise(f"`--preset fast` on {device}", g, "", key="gpu-fast"))
    return rows


def bench_rows(plan: dict, want, device: str, env: dict, data_dir: Path, log) -> list[dict]:
    """Every row the plan and ``want`` ask for, each run in its own child process, in a scratch folder."""
    rows: list[dict] = []
    out_root = Path(tempfile.mkdtemp(prefix="mnistkit-bench-"))
    try:
        tutorial = None
        if want("tutorial") or want("inference"):
            ref, tutorial = bench_tutorial(plan, out_root, env, data_dir, log)
            rows += with_load((ref, tutorial))
        for name in plan["presets"]:
            if want(name):
                seeds = plan.get(f"{name}_seeds", plan["preset_seeds"])  # fast, fast-cnn: 5 (issue 16)
                rows += with_load(bench_preset(name, seeds, out_root, env, log, *PRESET_GOALS[name]))
        rows += fashion_rows(plan, want, out_root, env, log)
        if want("logreg"):
            rows += with_load(bench_logreg(plan, out_root, env, log))
        if want("inference") and tutorial is not None:
            ckpt = out_root / "tutorial-s0" / "model.safetensors"
            if ckpt.exists():
                rows += with_load(bench_inference(ckpt, env, log))
        rows += gpu_rows(plan, device, out_root, env, log)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    return rows


def write_results(rows: list[dict], meta: dict, out: Path) -> None:
    """Print the markdown table and write it with the rows and the metadata to ``out/HOST-STAMP.json``."""
    table = markdown(rows, meta)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"{meta['host']}-{stamp}.json"
    path.write_text(json.dumps({**meta, "rows": rows, "table": table}, indent=2) + "\n")
    print(f"\nwrote {path} ({meta['total_seconds']:.0f} s)", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mnistkit.data import dataset_info

    info = dataset_info("mnist")
    if not info["found"]:
        print("MNIST not found: set MNISTKIT_DATA or run `mnistkit data fetch mnist` first", file=sys.stderr)
        return 2
    may_start, why = check_load(args.force)
    if why:
        print(why, file=sys.stderr)
    if not may_start:
        return 2
    plan = make_plan(args.quick, args.seeds)
    only = {k for k in args.only.split(",") if k}

    def want(k):
        return not only or k in only

    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    meta = run_metadata(args, plan, forced=bool(why))
    rows = bench_rows(plan, want, meta["device"], child_environment(args.threads), Path(info["location"]), log)
    meta["load_after"] = list(os.getloadavg())
    meta["total_seconds"] = round(time.perf_counter() - start, 1)
    write_results(rows, meta, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
