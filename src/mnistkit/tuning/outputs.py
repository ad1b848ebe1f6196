"""What a finished (or interrupted) study leaves in its output folder.

``trials.csv`` (one row per trial), ``best.json`` (the best trial's complete training config:
``mnistkit train --config best.json`` reproduces it), ``best-run/`` (the best trial's run
directory, the only one scored on the test set), ``plots/`` (Optuna's standard plots as PNG),
``report.html`` (in the style of ``mnistkit report``) and ``summary.json``.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from mnistkit.fileio import atomic_write_bytes
from mnistkit.runs import RunDir

TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best.json"
BEST_RUN = "best-run"
SUMMARY = "summary.json"
REPORT = "report.html"
PLOTS_DIR = "plots"
#: Optuna's standard plots: file name -> (optuna.visualization.matplotlib function, caption)
STUDY_PLOTS = {
    "history.png": ("plot_optimization_history", "Validation accuracy of each trial and the best so far"),
    "importances.png": ("plot_param_importances", "Which hyperparameters mattered (fANOVA importance)"),
    "parallel.png": ("plot_parallel_coordinate", "Parallel coordinates: each line is a trial"),
    "slice.png": ("plot_slice", "Validation accuracy against each hyperparameter"),
}


def complete_trials(study) -> list:
    import optuna

    return [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.value is not None
    ]


def best_trial(study):
    """The complete trial with the highest validation accuracy (lowest number on ties), or None."""
    trials = complete_trials(study)
    return max(trials, key=lambda t: (t.value, -t.number)) if trials else None


def write_trials_csv(study, out: Path) -> Path:
    """One row per trial: number, state, value (validation accuracy), times, parameters, worker."""
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "datetime_start", "datetime_complete", "duration", "params", "user_attrs")
    )
    frame = frame.drop(columns=[c for c in frame.columns if c == "user_attrs_config"])
    frame = frame.rename(columns={"value": "val_accuracy"})
    return atomic_write_bytes(out / TRIALS_CSV, frame.to_csv(index=False).encode())


def write_best_config(trial, out: Path) -> Path:
    return atomic_write_bytes(out / BEST_CONFIG, json.dumps(trial.user_attrs["config"], indent=2).encode())


def finish_best_run(trial, out: Path, log) -> Path:
    """Score the best trial on the test set, once, and keep its run directory as ``best-run/``.

    The trial stopped before its test evaluation with its state saved; resuming it runs no
    more epochs and does exactly the test evaluation, checkpoint and plots of ``mnistkit train``.
    When the state is not on this machine (the trial ran elsewhere) the config is trained again:
    the same weights with ``--deterministic`` on CPU.
    """
    from mnistkit.config import TrainConfig
    from mnistkit.runs import STATE_FILE
    from mnistkit.training import fit
    from mnistkit.tuning.study import trial_dir

    dest = out / BEST_RUN
    marker = dest / "trial.json"
    if RunDir(dest).is_finished() and marker.exists() and json.loads(marker.read_text()).get("number") == trial.number:
        return dest  # already scored: the test set is used once per best trial
    src = trial_dir(out, trial.number)
    tmp = out / f".{BEST_RUN}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    if RunDir(src).is_interrupted():
        log(f"Scoring the best trial ({trial.number}) on the test set")
        fit(resume=src, echo=False, progress=False)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(STATE_FILE))
    else:
        log(f"Training the best trial ({trial.number}) again here (its files are on {trial.user_attrs.get('worker')})")
        cfg = TrainConfig.from_dict({**trial.user_attrs["config"], "out": str(tmp)})
        fit(cfg, echo=False, progress=False)
        RunDir(tmp).state.unlink(missing_ok=True)
    atomic_write_bytes(
        tmp / "trial.json",
        json.dumps({"number": trial.number, "val_accuracy": trial.value, "params": trial.params}, indent=2).encode(),
    )
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def save_study_plots(study, out: Path) -> dict[str, str]:
    """Optuna's standard plots as PNG under ``plots/``; returns {file: reason} for plots skipped
    (matplotlib missing, too few complete trials, a parameter that never varied...)."""
    skipped: dict[str, str] = {}
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm
    except ImportError:
        return dict.fromkeys(STUDY_PLOTS, "matplotlib is not installed (pip install 'mnistkit[plots]')")
    import warnings

    from mnistkit.plots import DPI, STYLE

    folder = out / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n_complete = len(complete_trials(study))
    for name, (function, _) in STUDY_PLOTS.items():
        if n_complete < (2 if name == "importances.png" else 1):
            skipped[name] = f"needs more complete trials (has {n_complete})"
            continue
        try:
            with matplotlib.rc_context(STYLE), warnings.catch_warnings():  # type: ignore[arg-type]
                warnings.simplefilter("ignore")  # importance estimates on few trials warn; the plot says enough
                result = getattr(ovm, function)(study)
                axes = result.flatten()[0] if hasattr(result, "flatten") else result
                fig = axes.figure
                fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
                fig.savefig(folder / name, dpi=DPI, facecolor="white", bbox_inches="tight")
                plt.close(fig)
        except Exception as exc:  # Optuna refuses some plots on degenerate studies; say why, keep going
            skipped[name] = " ".join(str(exc).split())[:200] or type(exc).__name__
            plt.close("all")
    return skipped


def write_report(study, out: Path, summary: dict, skipped: dict[str, str]) -> Path:
    """``report.html``: results, plots, every trial, the best config; self-contained like ``mnistkit report``."""
    from mnistkit.report.markup import figure_html, page, table

    best = summary.get("best") or {}
    results = [
        ("study", summary["study"]),
        ("storage", summary["storage"]),
        *((f"trials {k.lower()}", v) for k, v in summary["counts"].items()),
        ("best trial", best.get("number")),
        ("best validation accuracy (%)", best.get("val_accuracy")),
        ("its test accuracy (%)", best.get("test_accuracy")),
        ("validation images", summary.get("val_size")),
    ]
    figures = []
    for name, (_, caption) in STUDY_PLOTS.items():
        path = out / PLOTS_DIR / name
        if name in skipped or not path.exists():
            figures.append(
                f'<p class="note">{html.escape(name)} skipped: {html.escape(skipped.get(name, "missing"))}</p>'
            )
        else:
            figures.append(figure_html(path.read_bytes(), "image/png", caption))
    rows, headers = _trial_rows(study)
    numbers = [r[0] for r in rows]
    highlight = numbers.index(best["number"]) if best.get("number") in numbers else None
    config = best.get("config") or {}
    run_link = (
        f'<p>The best trial\'s run: <a href="{BEST_RUN}/report.html">{BEST_RUN}/report.html</a>; '
        f"reproduce it with <code>mnistkit train --config {BEST_CONFIG} --deterministic</code>.</p>"
        if best
        else ""
    )
    body = f"""<h1>mnistkit tune: {html.escape(summary["study"])}</h1>
<p class="sub">model: {html.escape(str(summary.get("model")))} \u00b7 objective: validation accuracy</p>
<h2>Results</h2>
{table(("", "value"), results, "metrics")}
{run_link}
<h2>Plots</h2>
{"".join(figures)}
<h2>Trials</h2>
{table(headers, rows, "trials", highlight=highlight)}
<h2>Best config</h2>
{table(("option", "value"), list(config.items()), "config")}"""
    path = out / REPORT
    atomic_write_bytes(path, page(f"mnistkit tune {summary['study']}", body).encode())
    return path


def _trial_rows(study) -> tuple[list[list], list[str]]:
    trials = study.get_trials(deepcopy=False)
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    headers = ["trial", "state", "val acc (%)", "epochs run", "seconds"] + names
    rows = []
    for t in trials:
        seconds = round(t.duration.total_seconds(), 1) if t.duration is not None else None
        epochs = max(t.intermediate_values) if t.intermediate_values else None
        rows.append([t.number, t.state.name.lower(), t.value, epochs, seconds] + [t.params.get(k) for k in names])
    return rows, headers


def write_outputs(study, out: Path, settings, storage: str, log, score_best: bool = True, plots: bool = True) -> dict:
    """Everything above, from the study as it is now; returns the summary (also ``summary.json``).

    ``plots=False`` skips Optuna's plots (seconds each on a big study); ``mnistkit tune`` can draw
    them later from the same storage by running again.
    """
    from mnistkit.tuning.storage import mask_url
    from mnistkit.tuning.study import counts

    out.mkdir(parents=True, exist_ok=True)
    write_trials_csv(study, out)
    trial = best_trial(study)
    best = None
    if trial is not None:
        write_best_config(trial, out)
        best = {
            "number": trial.number,
            "val_accuracy": trial.value,
            "params": trial.params,
            "config": trial.user_attrs["config"],
            "test_accuracy": None,
            "run_dir": None,
        }
        if score_best:
            run_dir = finish_best_run(trial, out, log)
            run_summary = RunDir(run_dir).read_summary()
            best.update(test_accuracy=run_summary["test_accuracy"], run_dir=str(run_dir))
            _best_run_report(run_dir)
    skipped = save_study_plots(study, out) if plots else dict.fromkeys(STUDY_PLOTS, "not drawn (--no-plots)")
    summary = {
        "study": study.study_name,
        "storage": mask_url(storage),
        "model": settings.base.model,
        "val_size": settings.base.val_size,
        "trials_requested": settings.trials,
        "counts": dict(sorted(counts(study).items())),
        "best": best,
        "best_config": str(out / BEST_CONFIG) if best else None,
        "out": str(out),
    }
    write_report(study, out, summary, skipped)
    atomic_write_bytes(out / SUMMARY, json.dumps(summary, indent=2, default=str).encode())
    return summary


def _best_run_report(run_dir: Path) -> None:
    from mnistkit.report import write_report as write_run_report

    write_run_report([run_dir])
