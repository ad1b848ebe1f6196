"""The benchmark: mnistkit against the tutorial's pipeline and scikit-learn, in one run.

Every configuration runs in its own subprocess (so its peak RSS is its own, read with
``os.wait4``); configurations that are compared by a time ratio run in alternation,
seed by seed, so machine load hits both alike. Prints a Markdown table and writes
``bench/results/<host>-<date>.json``, which ``bench/readme_table.py`` turns into the
README's table.

    python bench/run.py            # the full benchmark (`make bench`, < 15 min on 2 quiet cores)
    python bench/run.py --quick    # a subset (`make bench-quick`, < 3 min): fewer seeds and epochs
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

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PY = sys.executable

# Goals from the issue; units in the names.
TUTORIAL_ACCURACY = 97.88  # % the tutorial reports for its recipe
GOAL_TUTORIAL_RATIO = 0.25  # mnistkit's time / the seed pipeline's time, same epochs
GOAL_FAST_ACCURACY, GOAL_FAST_SECONDS = 97.9, 1.5
GOAL_LOGREG_RATIO = 0.1  # mnistkit logreg fit time / scikit-learn's
GOAL_CNN_ACCURACY, GOAL_CNN_SECONDS = 99.5, 120.0
GOAL_BEST_MLP_ACCURACY = 98.6
GOAL_IMAGES_PER_SECOND = 200_000
GOAL_RSS_MB = 1024.0


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


def summarise(name: str, runs: list[dict], goal: str = "", **extra) -> dict:
    ok = [r for r in runs if "error" not in r]
    accs = [r["accuracy"] for r in ok if r.get("accuracy") is not None]
    secs = [r["train_seconds"] for r in ok if r.get("train_seconds") is not None]
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
        "peak_rss_mb": max((r["peak_rss_mb"] for r in ok if "peak_rss_mb" in r), default=None),
    }
    row.update(extra)
    return row


def ratio(row: dict, ref: dict) -> float | None:
    a, b = row.get("train_seconds_mean"), ref.get("train_seconds_mean")
    return round(a / b, 4) if a and b else None


def bench_tutorial(plan, out_root, env, data_dir, log) -> tuple[dict, dict]:
    """The seed pipeline and `mnistkit train` with the tutorial's recipe, alternating seed by seed."""
    seed_runs, mk_runs = [], []
    for s in range(plan["tutorial_seeds"]):
        if s < plan["seed_pipeline_seeds"]:  # the slow reference: fewer seeds, still alternating
            log(f"seed pipeline, seed {s}, {plan['epochs']} epochs")
            seed_runs.append(
                run_child(
                    [
                        PY,
                        str(BENCH / "seed_pipeline.py"),
                        "--quiet",
                        "--seed",
                        str(s),
                        "--epochs",
                        str(plan["epochs"]),
                        "--data-dir",
                        str(data_dir),
                    ],
                    env,
                )
            )
        log(f"mnistkit train (tutorial recipe), seed {s}")
        mk_runs.append(run_train(["--epochs", str(plan["epochs"]), "--device", "cpu"], s, out_root, "tutorial", env))
    e = plan["epochs"]
    ref = summarise(
        f"tutorial's pipeline (seed_pipeline.py, {e} epochs, double normalisation)", seed_runs, "reference", key="seed"
    )
    mk = summarise(
        f"`mnistkit train` (tutorial recipe: seed-mlp, Adam 1e-3, batch 64, {e} epochs)",
        mk_runs,
        f"acc >= {TUTORIAL_ACCURACY - 0.3} (10 epochs), <= {GOAL_TUTORIAL_RATIO}x seed pipeline, "
        f"RSS <= {GOAL_RSS_MB:.0f} MB",
        key="tutorial",
    )
    mk["ratio"] = ratio(mk, ref)
    mk["met"] = (
        mk["ratio"] is not None
        and mk["ratio"] <= GOAL_TUTORIAL_RATIO
        and (mk["peak_rss_mb"] or 1e9) <= GOAL_RSS_MB
        and (e < 10 or (mk["accuracy_mean"] or 0) >= TUTORIAL_ACCURACY - 0.3)
    )
    return ref, mk


def bench_preset(name, seeds, out_root, env, log, goal_acc, goal_s, extra=()) -> dict:
    runs = []
    for s in range(seeds):
        log(f"preset {name}, seed {s}")
        runs.append(run_train(["--preset", name, "--device", "cpu", *extra], s, out_root, name, env))
    row = summarise(
        f"`--preset {name}`", runs, f"acc >= {goal_acc}" + (f", <= {goal_s:g} s" if goal_s else ""), key=name
    )
    row["met"] = (row["accuracy_mean"] or 0) >= goal_acc and (
        goal_s is None or (row["train_seconds_mean"] or 1e9) <= goal_s
    )
    return row


def bench_logreg(plan, out_root, env, log) -> tuple[dict, dict]:
    """scikit-learn's LogisticRegression() beside mnistkit's logreg, alternating fit by fit.

    With ``bench/bench_logreg.py`` present, its ``run()`` does the alternation in one process
    (scikit-learn vs ``mnistkit.estimators.LogisticRegression``, same float32 data); otherwise
    scikit-learn runs in a worker beside ``mnistkit train --model logreg``.
    """
    goal = f"acc >= scikit-learn's, <= {GOAL_LOGREG_RATIO}x its fit time"
    if (BENCH / "bench_logreg.py").exists():
        log(f"bench_logreg.run(repeats={plan['logreg_repeats']}): scikit-learn and mnistkit, alternating")
        r = run_child(
            [
                PY,
                str(BENCH / "worker.py"),
                "bench-logreg",
                json.dumps({"repeats": plan["logreg_repeats"], "device": "cpu"}),
            ],
            env,
        )
        rows = r.get("result", {}).get("rows", {})

        def as_run(name):
            if "error" in r or name not in rows:
                return {"error": r.get("error", f"bench_logreg.run() gave no {name!r} row")}
            x = rows[name]
            return {
                "accuracy": x["accuracy"],
                "train_seconds": x["seconds"],
                "n_iter": x.get("n_iter"),
                "converged": x.get("converged"),
                "peak_rss_mb": r.get("peak_rss_mb"),
            }

        median = f"median of {plan['logreg_repeats']} fits"
        sk = summarise(
            f"scikit-learn `LogisticRegression()` (lbfgs, C=1, max_iter=100; {median})",
            [as_run("sklearn")],
            "reference",
            key="sklearn-logreg",
            repeats=plan["logreg_repeats"],
        )
        mk = summarise(
            f"`mnistkit.estimators.LogisticRegression` (bench_logreg.py, {median})",
            [as_run("mnistkit")],
            goal,
            key="logreg",
            repeats=plan["logreg_repeats"],
        )
    else:
        sk_runs, mk_runs = [], []
        for s in range(plan["logreg_repeats"]):
            log(f"scikit-learn LogisticRegression, repeat {s}")
            sk_runs.append(run_child([PY, str(BENCH / "worker.py"), "sklearn-logreg", "{}"], env))
            log(f"mnistkit train --model logreg, repeat {s}")
            mk_runs.append(run_train(["--model", "logreg", "--device", "cpu"], s, out_root, "logreg", env))
        sk = summarise(
            "scikit-learn `LogisticRegression()` (lbfgs, C=1, max_iter=100)", sk_runs, "reference", key="sklearn-logreg"
        )
        mk = summarise("`mnistkit train --model logreg`", mk_runs, goal, key="logreg")
    mk["ratio"] = ratio(mk, sk)
    mk["met"] = (
        mk["ratio"] is not None
        and mk["ratio"] <= GOAL_LOGREG_RATIO
        and (mk["accuracy_mean"] or 0) >= (sk["accuracy_mean"] or 100)
    )
    return sk, mk


def bench_inference(checkpoint: Path, env, log) -> dict:
    log("inference throughput (predict_logits, batch 1024)")
    r = run_child([PY, str(BENCH / "worker.py"), "inference", json.dumps({"checkpoint": str(checkpoint)})], env)
    row = summarise(
        "seed-mlp inference, `predict_logits`, batch 1,024",
        [r],
        f">= {GOAL_IMAGES_PER_SECOND:,} images/s",
        key="inference",
    )
    row["images_per_second"] = r.get("images_per_second")
    row["bf16_autocast_images_per_second"] = r.get("bf16_autocast_images_per_second")
    row["met"] = (row["images_per_second"] or 0) >= GOAL_IMAGES_PER_SECOND
    return row


# ----------------------------------------------------------------------------- report


def markdown(rows: list[dict], meta: dict) -> str:
    head = (
        "| configuration | runs | test accuracy % (mean ± sd) | train s (mean) | ratio | peak RSS MB "
        "| goal | met |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | - | skipped: {r['skipped']} | | | | {r.get('goal', '')} | |")
            continue
        acc = f"{r['accuracy_mean']:.2f} ± {r['accuracy_sd']:.2f}" if r.get("accuracy_mean") is not None else "-"
        if r.get("images_per_second"):
            acc = f"{r['images_per_second']:,} images/s"
            if r.get("bf16_autocast_images_per_second"):
                acc += f" (bf16 autocast: {r['bf16_autocast_images_per_second']:,})"
        secs = f"{r['train_seconds_mean']:.2f}" if r.get("train_seconds_mean") is not None else "-"
        rat = f"{r['ratio']:.3f}x" if r.get("ratio") is not None else ""
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
        met = "" if "met" not in r else ("yes" if r["met"] else "no")
        if r.get("errors"):
            met += f" ({len(r['errors'])} failed)"
        lines.append(f"| {r['name']} | {r['seeds']} | {acc} | {secs} | {rat} | {rss} | {r.get('goal', '')} | {met} |")
    note = (
        f"\n{meta['host']}, {meta['cpu']} ({meta['cpu_count']} cores, torch threads: {meta['threads']}), "
        f"torch {meta['torch']}, {meta['date']}; load average {meta['load_before'][0]:.1f} before, "
        f"{meta['load_after'][0]:.1f} after; {'quick' if meta['quick'] else 'full'} run "
        f"({meta['epochs']} epochs for the tutorial rows). Ratios are train seconds against the row above, "
        f"measured in the same run."
    )
    return "\n".join(lines) + "\n" + note


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a subset under 3 minutes (default: the full run)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each child; 0 = torch's default")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated row keys to run: tutorial,fast,best-mlp,cnn,logreg,inference (default: all)",
    )
    p.add_argument("--seeds", type=int, default=0, help="runs per row, overriding the plan (default: 0 = plan's)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    args = p.parse_args(argv)

    import torch

    from mnistkit.data import dataset_info

    info = dataset_info("mnist")
    if not info["found"]:
        print("MNIST not found: set MNISTKIT_DATA or run `mnistkit data fetch mnist` first", file=sys.stderr)
        return 2
    data_dir = Path(info["location"])
    # Seeds per row (the table's "runs" column says how many ran); quick: fewer seeds, 2-epoch tutorial rows.
    plan = (
        {
            "epochs": 2,
            "tutorial_seeds": 1,
            "seed_pipeline_seeds": 1,
            "fast_seeds": 2,
            "preset_seeds": 1,
            "logreg_repeats": 1,
            "presets": ["fast"],
        }
        if args.quick
        else {
            "epochs": 10,
            "tutorial_seeds": 3,
            "seed_pipeline_seeds": 2,
            "fast_seeds": 5,
            "preset_seeds": 3,
            "logreg_repeats": 3,
            "presets": ["fast", "best-mlp", "cnn"],
        }
    )
    if args.seeds:
        plan.update(
            dict.fromkeys(
                ("tutorial_seeds", "seed_pipeline_seeds", "fast_seeds", "preset_seeds", "logreg_repeats"), args.seeds
            )
        )
    only = {k for k in args.only.split(",") if k}

    def want(k):
        return not only or k in only

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH.parent / "src"), env.get("PYTHONPATH")]))
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    meta = {
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
        "epochs": plan["epochs"],
        "plan": plan,
    }

    rows: list[dict] = []
    out_root = Path(tempfile.mkdtemp(prefix="mnistkit-bench-"))
    try:
        tutorial = None
        if want("tutorial") or want("inference"):
            ref, tutorial = bench_tutorial(plan, out_root, env, data_dir, log)
            rows += [ref, tutorial]
        for name in plan["presets"]:
            if not want(name):
                continue
            seeds = plan["fast_seeds"] if name == "fast" else plan["preset_seeds"]
            goal_acc, goal_s = {
                "fast": (GOAL_FAST_ACCURACY, GOAL_FAST_SECONDS),
                "best-mlp": (GOAL_BEST_MLP_ACCURACY, None),
                "cnn": (GOAL_CNN_ACCURACY, GOAL_CNN_SECONDS),
            }[name]
            rows.append(bench_preset(name, seeds, out_root, env, log, goal_acc, goal_s))
        if want("logreg"):
            rows += list(bench_logreg(plan, out_root, env, log))
        if want("inference") and tutorial is not None:
            ckpt = out_root / "tutorial-s0" / "model.safetensors"
            if ckpt.exists():
                rows.append(bench_inference(ckpt, env, log))
        if torch.cuda.is_available():
            log("GPU rows: tutorial recipe and fast preset on CUDA")
            g = [run_train(["--device", "cuda", "--epochs", str(plan["epochs"])], 0, out_root, "gpu-tutorial", env)]
            rows.append(summarise(f"`mnistkit train` on {meta['device']} (tutorial recipe)", g, "", key="gpu-tutorial"))
            g = [run_train(["--preset", "fast", "--device", "cuda"], 0, out_root, "gpu-fast", env)]
            rows.append(summarise(f"`--preset fast` on {meta['device']}", g, "", key="gpu-fast"))
        else:
            rows.append(
                {"name": "GPU rows (tutorial recipe, fast preset on CUDA)", "key": "gpu", "skipped": "no CUDA device"}
            )
    finally:
        shutil.rmtree(out_root, ignore_errors=True)

    meta["load_after"] = list(os.getloadavg())
    meta["total_seconds"] = round(time.perf_counter() - start, 1)
    table = markdown(rows, meta)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{meta['host']}-{stamp}.json"
    path.write_text(json.dumps({**meta, "rows": rows, "table": table}, indent=2) + "\n")
    print(f"\nwrote {path} ({meta['total_seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
