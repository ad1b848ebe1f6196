"""bench/run.py's figures and bench/readme_table.py's choice of results file (no training here)."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def _runs(*pairs):
    return [{"accuracy": a, "train_seconds": s, "wall_seconds": s + 5, "peak_rss_mb": 600.0} for a, s in pairs]


def test_a_row_reports_median_min_max_and_how_many_runs_met_the_goal():
    run, results_table = _load("run"), _load("results_table")
    row = run.summarise("`--preset fast`", _runs((98.1, 0.9), (98.0, 1.4), (98.2, 0.95)), "goal", key="fast")
    assert row["train_seconds"] == {"median": 0.95, "min": 0.9, "max": 1.4}
    assert row["wall_seconds"] == {"median": 5.95, "min": 5.9, "max": 6.4}
    run.count_met(row, lambda r: r["train_seconds"] <= 1.0)
    assert row["met_runs"] == "2/3"
    row["met"] = True
    line = results_table.markdown([row], _meta(run)).splitlines()[2]
    assert "| 0.95 (0.90-1.40) |" in line and "| 5.95 (5.90-6.40) |" in line
    assert "98.10 ± 0.10 (98.00-98.20)" in line and line.endswith("| yes, 2/3 runs |")


def test_the_tutorial_ratio_is_whole_process_against_whole_process():
    run = _load("run")
    ref = run.summarise("ref", _runs((94.0, 60.0), (94.2, 64.0)))  # walls 65, 69: median 67
    mk = run.summarise("mk", _runs((97.5, 12.0), (97.6, 13.0), (97.4, 14.0)))  # walls 17, 18, 19
    assert run.ratio(mk, ref, "wall_seconds") == round(18 / 67, 4)
    assert run.ratio(mk, ref) == round(13 / 62, 4)


def _meta(run, **kw):
    meta = dict(host="h", cpu="c", cpu_count=2, threads=1, torch="t", date="d", quick=False, epochs=10)
    return {**meta, "load_before": [0.1, 0, 0], "load_after": [0.2, 0, 0], **kw}


def test_a_busy_machine_is_refused_unless_forced(monkeypatch):
    run, results_table = _load("run"), _load("results_table")
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores * 2.0, 1.0, 1.0))
    ok, why = run.check_load(force=False)
    assert not ok and "--force" in why
    ok, why = run.check_load(force=True)
    assert ok and why.startswith("warning:")
    assert "Started with --force" in results_table.markdown([], _meta(run, forced=True))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert run.check_load(force=False) == (True, "")


def test_readme_table_takes_the_newest_benchmark_result_not_other_json(tmp_path):
    table = _load("readme_table")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"table": "| a |", "rows": []}))
    os.utime(bench, (1, 1))
    (tmp_path / "presets-search-x.json").write_text(json.dumps({"trials": []}))  # newer, not a benchmark
    (tmp_path / "broken.json").write_text("{")
    assert table.newest_result(tmp_path) == bench
    bench.unlink()
    assert table.newest_result(tmp_path) is None


@pytest.mark.parametrize("rates, shown", [((210_000, 190_000, 230_000), "210,000 images/s (190,000-230,000)")])
def test_the_inference_row_shows_the_median_pass_and_the_spread(rates, shown):
    run, results_table = _load("run"), _load("results_table")
    row = run.summarise("inference", [{"wall_seconds": 3.0}], "goal", key="inference")
    row.update(images_per_second=rates[0], images_per_second_min=rates[1], images_per_second_max=rates[2])
    assert shown in results_table.markdown([row], _meta(run))
