"""``mnistkit report``: self-contained HTML for one run or a comparison, checked as text and in Chromium."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import run_cli

from mnistkit.errors import ConfigError
from mnistkit.report import load_run, write_report

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
DIGITS = [str(i) for i in range(10)]
#: Viewport widths for screenshots: a laptop and an iPhone-sized phone.
DESKTOP, PHONE = 1280, 390


def write_fake_run(
    run_dir: Path,
    *,
    epochs: int = 3,
    accuracy: float = 91.5,
    with_plots: bool = True,
    model: str = "logreg",
    class_names=DIGITS,
) -> Path:
    """A run directory with every file the trainer writes (per the run-dir contract)."""
    from mnistkit.plots import save_run_plots

    run_dir.mkdir(parents=True)
    config = {
        "dataset": "mnist",
        "model": model,
        "model_options": {"num_classes": 10},
        "epochs": epochs,
        "batch_size": 64,
        "lr": 0.1,
        "optimizer": "sgd",
        "schedule": "constant",
        "seed": 0,
    }
    metrics = [
        {
            "epoch": e,
            "train_loss": 0.9 / e,
            "train_accuracy": accuracy - 6 + e,
            "val_loss": 1.0 / e,
            "val_accuracy": accuracy - 5 + e,
            "lr": 0.1,
            "seconds": 2.0,
            "elapsed": 2.0 * e,
        }
        for e in range(1, epochs + 1)
    ]
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(metrics[0]))
        writer.writeheader()
        writer.writerows(metrics)
    log = [
        f"Epoch [{e}/{epochs}], Step [{s}/938], Loss: {0.9 / e / s * 100:.4f}"
        for e in range(1, epochs + 1)
        for s in (100, 200, 300)
    ]
    log.append(f"Accuracy of the model on the 10000 test images: {accuracy:.2f} %")
    (run_dir / "log.txt").write_text("\n".join(log) + "\n")
    confusion = np.full((10, 10), 3)
    np.fill_diagonal(confusion, 970)
    per_class = [
        {"class": name, "precision": 0.95, "recall": 0.94, "f1": 0.945, "support": 1000} for name in class_names
    ]
    (run_dir / "eval.json").write_text(
        json.dumps(
            {
                "split": "test",
                "n": 10000,
                "accuracy": accuracy,
                "loss": 0.31,
                "per_class": per_class,
                "confusion": confusion.tolist(),
            }
        )
    )
    (run_dir / "summary.json").write_text(
        json.dumps(
            {
                "dataset": "mnist",
                "model": model,
                "epochs": epochs,
                "test_accuracy": accuracy,
                "train_seconds": 2.0 * epochs,
                "checkpoint": str(run_dir / "model.safetensors"),
            }
        )
    )
    (run_dir / "model.safetensors").write_bytes(b"\0" * 16)
    if with_plots:
        rng = np.random.default_rng(0)
        images = np.zeros((8, 28, 28), np.uint8)
        images[:, 5:23, 11:17] = 255
        mistakes = {
            "images": images,
            "true": np.arange(8),
            "pred": (np.arange(8) + 1) % 10,
            "prob": rng.uniform(0.5, 1, 8),
        }
        save_run_plots(
            run_dir,
            metrics=metrics,
            confusion=confusion,
            class_names=list(class_names),
            mistakes=mistakes,
            weights=rng.normal(size=(10, 784)) if model == "logreg" else None,
        )
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two fake runs (made once per module: plotting is the slow part)."""
    root = tmp_path_factory.mktemp("runs")
    return (
        write_fake_run(root / "logreg-3ep", epochs=3, accuracy=91.5),
        write_fake_run(root / "cnn-1ep", epochs=1, accuracy=97.9, model="cnn"),
    )


# --------------------------------------------------------------------------- HTML as text


def test_single_run_report_is_self_contained(runs, tmp_path, capsys):
    out = tmp_path / "r.html"
    code, stdout, err = run_cli(["report", runs[0], "--out", out], capsys)
    assert code == 0, err
    assert stdout.strip() == f"wrote report: {out}"
    page = out.read_text()
    assert '<meta name="viewport"' in page and "<script" not in page
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 4  # curves, confusion, mistakes, weights
    assert 'id="metrics"' in page and 'id="per-class"' in page
    assert "Accuracy of the model on the 10000 test images: 91.50 %" in page
    assert "Epoch [3/3], Step [300/938]" in page


def test_default_out_is_inside_the_run(runs):
    path = write_report([runs[1]])
    assert path == runs[1] / "report.html" and path.stat().st_size > 1000


def test_text_is_escaped(tmp_path):
    run = write_fake_run(tmp_path / "evil", with_plots=False, class_names=["<b>zero</b>"] + DIGITS[1:])
    config = json.loads((run / "config.json").read_text())
    config["note"] = "<script>alert(1)</script>"
    (run / "config.json").write_text(json.dumps(config))
    page = write_report([run]).read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>zero" not in page and "&lt;b&gt;zero&lt;/b&gt;" in page
    assert "No plots in this run" in page  # a run without plots still reports


def test_missing_required_files_named_in_one_line(tmp_path, capsys):
    run = tmp_path / "half"
    run.mkdir()
    (run / "log.txt").write_text("Epoch [1/1]\n")
    with pytest.raises(ConfigError, match=r"half is not a complete run directory: missing config.json, metrics.jsonl"):
        load_run(run)
    code, _, err = run_cli(["report", run], capsys)
    assert code == 2 and err.count("\n") == 1 and "missing config.json, metrics.jsonl" in err
    code, _, err = run_cli(["report", tmp_path / "nope"], capsys)
    assert code == 2 and "run directory" in err and "does not exist" in err


def test_optional_files_may_be_missing(tmp_path):
    run = write_fake_run(tmp_path / "partial", with_plots=False)
    for name in ("eval.json", "summary.json", "log.txt", "metrics.jsonl"):
        (run / name).unlink()  # metrics then come from metrics.csv
    record = load_run(run)
    assert record.missing == ["summary.json", "eval.json", "log.txt"]
    assert record.metrics[-1]["val_accuracy"] == pytest.approx(89.5)
    page = write_report([run]).read_text()
    assert "Not found in" in page and "No per-class metrics" in page and "No log.txt" in page


def test_comparison_defaults_to_cwd(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(["report", *runs], capsys)
    assert code == 0, err
    assert stdout.strip() == f"wrote comparison of 2 runs: {tmp_path / 'report.html'}"
    page = (tmp_path / "report.html").read_text()
    assert "logreg-3ep" in page and "cnn-1ep" in page
    assert page.count('src="data:image/png;base64,') == 2  # overlaid accuracy and loss curves
    assert '<tr class="best"><td>cnn-1ep</td>' in page  # the higher test accuracy
    assert 'id="config-diff"' in page and "<th>model</th>" in page


# --------------------------------------------------------------------------- in a browser


def _chromium_path() -> str | None:
    for candidate in (
        os.environ.get("MNISTKIT_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (browsers cannot be downloaded here)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = _chromium_path()
    if path is None:
        pytest.skip("chromium not found (set MNISTKIT_CHROMIUM to its path)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=path,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def check_in_browser(browser, html_path: Path, shot_name: str) -> None:
    """Render at desktop and phone width: metrics table present, all images loaded, no sideways page scroll."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (DESKTOP, PHONE):
        page = browser.new_page(viewport={"width": width, "height": 900})
        try:
            page.goto(html_path.as_uri(), wait_until="load")
            assert page.locator("table#metrics").count() == 1
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert images and all(done and w > 0 for done, w in images), images
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"page is {overflow}px wider than a {width}px screen"
            page.screenshot(path=str(ARTIFACTS / f"{shot_name}-{width}.png"), full_page=True)
        finally:
            page.close()


@pytest.mark.browser
def test_run_report_renders_in_chromium(browser, runs, tmp_path):
    check_in_browser(browser, write_report([runs[0]], tmp_path / "run.html"), "report-run")


@pytest.mark.browser
def test_comparison_renders_in_chromium(browser, runs, tmp_path):
    check_in_browser(browser, write_report(list(runs), tmp_path / "cmp.html"), "report-compare")


@pytest.mark.parametrize("val_size, caption", [(0, "(training)"), (100, "(training and validation)")])
def test_curves_caption_names_validation_only_when_there_was_one(synthetic_dataset, tmp_path, val_size, caption):
    from mnistkit import fit

    run = tmp_path / "run"
    fit(
        dataset=str(synthetic_dataset),
        model="logreg",
        epochs=2,
        dry_run=True,
        val_size=val_size,
        out=str(run),
        echo=False,
    )
    assert (run / "plots" / "curves.png").is_file()
    page = write_report([run]).read_text(encoding="utf-8")
    assert f"<figcaption>Loss and accuracy per epoch {caption}</figcaption>" in page
